//! The trait a denoising model implements, and the Tweedie helpers built on it.

use crate::diffusion;
use burn::tensor::Tensor;

/// What a model needs to know about the noise level of its input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    /// Timestep in `1..=T` (problem-sheet indexing).
    pub t: usize,
    /// ᾱ_t at that timestep.
    pub alpha_bar: f64,
}

impl NoiseLevel {
    /// The 0-based timestep a guided-diffusion network was trained with (`t − 1`).
    pub fn network_timestep(&self) -> usize {
        self.t - 1
    }
}

/// A model that predicts the noise ε in `x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε`.
///
/// Networks (the ADM UNet), analytic priors and test doubles all implement this. The input
/// is a batch `[B, C, H, W]` at a single noise level. Implementations must be differentiable
/// in `x_t` when `x_t` lives on an autodiff device (DPS needs ∂x̂0/∂x_t).
pub trait EpsModel {
    /// Predicted ε(x_t, t), same shape as `x_t`.
    fn predict_eps(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4>;

    /// (ε, v) from one evaluation, where v is the network's variance output when it has one
    /// (guided-diffusion `learn_sigma`: v ∈ [−1, 1] interpolates log β̃ and log β, see
    /// [`diffusion::learned_sigma`]) and `None` otherwise (the default).
    fn predict_eps_and_variance(
        &self,
        x_t: Tensor<4>,
        level: NoiseLevel,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        (self.predict_eps(x_t, level), None)
    }

    /// True when [`EpsModel::predict_eps_and_variance`] returns a variance output.
    fn has_learned_variance(&self) -> bool {
        false
    }

    /// The score ∇ log p_t(x_t) = −ε/√(1 − ᾱ_t).
    fn score(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4> {
        diffusion::eps_to_score(self.predict_eps(x_t, level), level.alpha_bar)
    }

    /// Tweedie's denoiser x̂0 = E[x_0 | x_t] = (x_t + (1 − ᾱ_t) s)/√ᾱ_t.
    fn denoise(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4> {
        let eps = self.predict_eps(x_t.clone(), level);
        diffusion::x0_from_eps(x_t, eps, level.alpha_bar)
    }
}

/// A reference or box to a model is the model: every method forwards, so overriding ones
/// (the variance channels) are not lost behind the pointer.
macro_rules! forward_eps_model {
    ($($pointer:ty),*) => {$(
        impl<M: EpsModel + ?Sized> EpsModel for $pointer {
            fn predict_eps(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4> {
                (**self).predict_eps(x_t, level)
            }
            fn predict_eps_and_variance(
                &self,
                x_t: Tensor<4>,
                level: NoiseLevel,
            ) -> (Tensor<4>, Option<Tensor<4>>) {
                (**self).predict_eps_and_variance(x_t, level)
            }
            fn has_learned_variance(&self) -> bool {
                (**self).has_learned_variance()
            }
        }
    )*};
}

forward_eps_model!(&M, Box<M>);
