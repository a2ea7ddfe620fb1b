//! `tweedie-operators`: linear measurement operators `y = A(x) + σ n` for inverse problems,
//! the same operators as the official DPS code (`guided_diffusion/measurements.py`).
//!
//! Operators know nothing of priors or samplers (deepinv's split). Each is a burn
//! computation, so DPS and Score-ALD differentiate through it with burn-autodiff; each
//! exposes its adjoint Aᵀ (tested by ⟨Ax, y⟩ = ⟨x, Aᵀy⟩), an optional cheap pseudo-inverse
//! (used to initialise SDEdit), a `describe()` for figure captions, and `save_params` to write
//! what a run used (kernel, mask) beside its results.
//!
//! | operator | A(x) | DPS counterpart |
//! |---|---|---|
//! | [`Identity`] | x | `noise` |
//! | [`Mask`] | m ⊙ x (m ∈ {0,1}, shared by the channels) | `inpainting` with `mask_generator` (box: `random_sq_bbox`; random: exactly ⌊N·p⌋ pixels, p ~ U(0.3, 0.7)) |
//! | [`Blur`] | per-channel cross-correlation with K after reflect padding by k/2 | `gaussian_blur` (K = `gaussian_filter` of a delta), `motion_blur` (K from `motionblur.Kernel`) |
//! | [`Resizer`] | M_h X M_wᵀ per channel (antialiased cubic) | `super_resolution` (`util/resizer.py`) |
//! | [`Downsample`] | mean of f × f blocks | – (box-filter SR, kept as `sr4-box`) |
//!
//! Exact agreement with DPS is checked against recorded DPS outputs in
//! `tests/fixtures/dps` (`tests/dps_fixtures.rs`). DPS's random choices (motion-kernel path,
//! mask positions) use NumPy's global stream, which is not reproduced: ours are seeded by
//! [`NoiseSource`], and a DPS kernel or mask is reused exactly by loading its file
//! ([`Blur::load`], [`Mask::load`]).
//!
//! Images are `[B, 3, H, W]` in [−1, 1]; the measurement noise σ is in that scale (DPS: 0.05).

mod blur;
mod error;
mod kernel_io;
mod mask;
mod motion;
mod resize;
mod spec;
mod sr;

pub use blur::{
    Blur, gaussian_delta_response_1d, gaussian_kernel, gaussian_weights_1d, motion_kernel,
};
pub use error::OperatorError;
pub use mask::Mask;
pub use resize::{Resizer, resizer_cubic, resizer_matrix};
pub use spec::{DPS_OPERATOR_NAMES, OperatorSpec, build};
pub use sr::Downsample;

use burn::tensor::Tensor;
use std::path::{Path, PathBuf};
use tweedie_core::NoiseSource;

/// A linear measurement operator A.
pub trait Operator: Send + Sync {
    /// A(x) for a batch `[B, C, H, W]`.
    fn forward(&self, x: Tensor<4>) -> Tensor<4>;
    /// The adjoint Aᵀ(y), mapping a measurement back to image space.
    fn adjoint(&self, y: Tensor<4>) -> Tensor<4>;
    /// A cheap pseudo-inverse A⁺(y) where one exists (masks, downsampling); `None` otherwise.
    fn pseudo_inverse(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        let _ = y;
        None
    }
    /// A short human description for captions, e.g. `"gaussian blur 61×61 σ=3"`.
    fn describe(&self) -> String;
    /// A sensible image-space starting point from a measurement: the pseudo-inverse when
    /// there is one, else the measurement itself when it already has image shape.
    fn initialise(&self, y: Tensor<4>) -> Tensor<4> {
        self.pseudo_inverse(y.clone()).unwrap_or(y)
    }
    /// Writes the operator's drawn parameters into `dir` as files named from `stem` and returns
    /// their paths: a blur writes `{stem}_kernel.npy` (exact; loadable as a kernel file) and
    /// `{stem}_kernel.png` (for viewing), a mask `{stem}_mask.png` (loadable by
    /// [`Mask::load`]). Operators fully described by their spec write nothing (the default).
    fn save_params(&self, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, OperatorError> {
        let _ = (dir, stem);
        Ok(Vec::new())
    }
}

/// The identity operator (pure denoising).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl Operator for Identity {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x
    }
    fn adjoint(&self, y: Tensor<4>) -> Tensor<4> {
        y
    }
    fn pseudo_inverse(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        Some(y)
    }
    fn describe(&self) -> String {
        "identity".into()
    }
}

/// Simulates a measurement `y = A(x) + σ n` with seeded Gaussian noise (σ in the [−1, 1] scale).
///
/// ```
/// use tweedie_core::{Device, NoiseSource, Tensor, tensor};
/// use tweedie_operators::{Mask, Operator, measure};
///
/// let device = Device::flex();
/// let mask = Mask::center_box(8, 8, 4, &device).unwrap();
/// let x: Tensor<4> = Tensor::ones([1, 3, 8, 8], &device);
///
/// // σ = 0: y = A(x) exactly, the 4×4 hole zeroed.
/// let clean = measure(&mask, x.clone(), 0.0, &mut NoiseSource::new(0)).unwrap();
/// assert_eq!(clean.clone().sum().into_scalar::<f32>(), 3.0 * (64.0 - 16.0));
///
/// // σ = 0.05: y = A(x) + 0.05 n, with the noise drawn from the seeded source.
/// let y = measure(&mask, x.clone(), 0.05, &mut NoiseSource::new(0)).unwrap();
/// let n = tensor::to_vec(&(y.clone() - clean).div_scalar(0.05));
/// let std = (n.iter().map(|v| v * v).sum::<f32>() / n.len() as f32).sqrt();
/// assert!((0.8..1.2).contains(&std), "noise std {std}");
/// // Same seed, same measurement.
/// let again = measure(&mask, x.clone(), 0.05, &mut NoiseSource::new(0)).unwrap();
/// assert_eq!(tensor::to_vec(&y), tensor::to_vec(&again));
/// // A mask is its own pseudo-inverse: A⁺y puts the observed pixels back in image space.
/// assert_eq!(mask.pseudo_inverse(y.clone()).unwrap().dims(), [1, 3, 8, 8]);
///
/// assert!(measure(&mask, x, -1.0, &mut NoiseSource::new(0)).is_err());
/// ```
pub fn measure(
    op: &dyn Operator,
    x: Tensor<4>,
    sigma: f64,
    noise: &mut NoiseSource,
) -> Result<Tensor<4>, OperatorError> {
    if !(sigma >= 0.0 && sigma.is_finite()) {
        return Err(OperatorError::invalid(
            "sigma",
            sigma,
            "must be finite and ≥ 0",
        ));
    }
    let y = op.forward(x);
    if sigma == 0.0 {
        return Ok(y);
    }
    let n = noise.normal_like(&y);
    Ok(y + n.mul_scalar(sigma))
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use burn::tensor::Device;

    /// ⟨Ax, y⟩ vs ⟨x, Aᵀy⟩ on random tensors: returns the relative error.
    pub fn adjoint_error(op: &dyn Operator, shape: [usize; 4], seed: u64) -> f64 {
        let device = Device::flex();
        let mut noise = NoiseSource::new(seed);
        let x = noise.normal(shape, &device);
        let ax = op.forward(x.clone());
        let y = noise.normal(ax.dims(), &device);
        let aty = op.adjoint(y.clone());
        assert_eq!(aty.dims(), shape);
        let lhs: f64 = tweedie_core::tensor::to_vec(&ax)
            .iter()
            .zip(tweedie_core::tensor::to_vec(&y))
            .map(|(a, b)| *a as f64 * b as f64)
            .sum();
        let rhs: f64 = tweedie_core::tensor::to_vec(&x)
            .iter()
            .zip(tweedie_core::tensor::to_vec(&aty))
            .map(|(a, b)| *a as f64 * b as f64)
            .sum();
        (lhs - rhs).abs() / lhs.abs().max(rhs.abs()).max(1e-12)
    }

    #[test]
    fn identity_is_self_adjoint() {
        assert!(adjoint_error(&Identity, [2, 3, 8, 8], 1) < 1e-6);
    }
}
