//! Task 2: forward noising x0 → x_t and one-shot Tweedie denoising x_t → x̂0.

use crate::SampleError;
use burn::tensor::Tensor;
use tweedie_core::diffusion::q_sample;
use tweedie_core::{EpsModel, NoiseSource, Schedule};

/// The noisy input and the denoised estimate of [`denoise`].
#[derive(Debug, Clone)]
pub struct Denoised {
    /// x_t = √ᾱ_t x0 + √(1 − ᾱ_t) z.
    pub x_t: Tensor<4>,
    /// x̂0 = (x_t + (1 − ᾱ_t) s_θ(x_t, t))/√ᾱ_t.
    pub x0_hat: Tensor<4>,
}

/// Noises `x0` to timestep `t` and denoises it back in one Tweedie step.
pub fn denoise(
    model: &dyn EpsModel,
    schedule: &Schedule,
    x0: Tensor<4>,
    t: usize,
    noise: &mut NoiseSource,
) -> Result<Denoised, SampleError> {
    schedule.check_timestep(t)?;
    let level = schedule.level(t);
    let z = noise.normal_like(&x0);
    let x_t = q_sample(x0, z, level.alpha_bar);
    let x0_hat = model.denoise(x_t.clone(), level);
    Ok(Denoised { x_t, x0_hat })
}
