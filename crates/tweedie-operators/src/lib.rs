//! `tweedie-operators`: linear measurement operators `y = A(x) + σ n` for inverse problems,
//! the same operators as the official DPS code (`guided_diffusion/measurements.py`).
//!
//! Operators know nothing of priors or samplers (deepinv's split). Each is a burn
//! computation, so DPS and Score-ALD differentiate through it with burn-autodiff. Like deepinv's
//! `LinearPhysics`, each [`Operator`] has
//! - `forward` A and `adjoint` Aᵀ (exact; checked by [`adjointness_error`],
//!   ⟨Ax, y⟩ = ⟨x, Aᵀy⟩),
//! - `pseudo_inverse` A⁺ (deepinv's `A_dagger`): the minimum-norm least-squares solution,
//! - `prox_l2(z, y, γ) = argmin_x ½‖Ax − y‖² + 1/(2γ)‖x − z‖² = (I + γAᵀA)⁻¹(z + γAᵀy)`
//!   (deepinv's `prox_l2`), the data step of DiffPIR and of half-quadratic splitting,
//!
//! with closed forms where the structure allows and conjugate gradients ([`conjugate_gradient`],
//! [`CG_TOLERANCE`], [`CG_MAX_ITERATIONS`]) otherwise; plus `initialise` (an image-space start,
//! used by SDEdit), `describe()` for figure captions, and `save_params` to write what a run used
//! (kernel, mask) beside its results.
//!
//! | operator | A(x) | A⁺(y) | prox_l2(z, y, γ) | DPS counterpart |
//! |---|---|---|---|---|
//! | [`Identity`] | x | y | (z + γy)/(1 + γ) | `noise` |
//! | [`Mask`] | m ⊙ x (m ∈ {0,1}, shared by the channels) | m ⊙ y | (z + γ m y)/(1 + γ m) | `inpainting` with `mask_generator` (box: `random_sq_bbox`; random: exactly ⌊N·p⌋ pixels, p ~ U(0.3, 0.7)) |
//! | [`Blur`] | per-channel cross-correlation with K after reflect padding by k/2 | CG | CG | `gaussian_blur` (K = `gaussian_filter` of a delta), `motion_blur` (K from `motionblur.Kernel`) |
//! | [`Blur`] + [`Padding::Circular`] | the same, wrapping around (= F⁻¹ K̂ F) | F⁻¹(ŷ/K̂ where \|K̂\| > ε, else 0) | F⁻¹((ẑ + γ conj(K̂) ŷ)/(1 + γ\|K̂\|²)) | – (DiffPIR's / DDNM's FFT deblurring) |
//! | [`Resizer`] | M_h X M_wᵀ per channel (antialiased cubic) | M_h⁺ Y M_w⁺ᵀ, M⁺ = Mᵀ(MMᵀ)⁻¹ | CG | `super_resolution` (`util/resizer.py`) |
//! | [`Downsample`] | mean of f × f blocks | f² Aᵀy (nearest upsampling) | u − γ/(1 + γ/f²) AᵀA u, u = z + γAᵀy | – (box-filter SR, kept as `sr4-box`) |
//!
//! "CG": [`least_squares_cg`] (normal equations from 0) and [`prox_l2_cg`] (warm start at z),
//! the trait's defaults, which a new operator inherits.
//!
//! Exact agreement with DPS is checked against recorded DPS outputs in
//! `tests/fixtures/dps` (`tests/dps_fixtures.rs`). DPS's random choices (motion-kernel path,
//! mask positions) use NumPy's global stream, which is not reproduced: ours are seeded by
//! [`NoiseSource`], and a DPS kernel or mask is reused exactly by loading its file
//! ([`Blur::load`], [`Mask::load`]).
//!
//! # Mask and kernel files
//!
//! Both are read through `tweedie-io`'s loader, so a file may also be a pipe (`/dev/stdin`)
//! or a named FIFO (read into memory once; a FIFO nobody writes to is an error after a few
//! seconds), and image files get their EXIF orientation applied.
//!
//! - **Masks** ([`Mask::load`]): where the image has transparency, alpha 0 = missing (the
//!   colour is then ignored); else a file whose largest value is 1 is a 0/1 mask (NumPy
//!   `uint8` 0s and 1s), 1 = observed; else brighter than mid-grey = observed (white =
//!   observed, black = missing). A mask that observes nothing is refused, as are boxes that
//!   cover the whole image. The rule used and the observed fraction are in `describe()`.
//! - **Kernels** ([`Blur::load`]: `.npy`, safetensors, PNG/JPEG grey levels, our JSON): one
//!   rule for every format: square, odd side, finite, with a positive sum that is at least
//!   10⁻³ of the sum of the values' magnitudes, then divided by its sum (kept bit for bit
//!   when that is 1 within 10⁻⁵); a rescaled kernel says so in `describe()`. [`Blur::new`]
//!   takes a kernel as given.
//!
//! Images are `[B, 3, H, W]` in [−1, 1]; the measurement noise σ is in that scale (DPS: 0.05).

mod blur;
mod cg;
mod error;
mod fft;
mod kernel_io;
pub mod kron;
mod mask;
mod motion;
mod resize;
mod spec;
mod sr;

pub use blur::{
    Blur, CIRCULAR_PINV_RCOND, Padding, gaussian_delta_response_1d, gaussian_kernel,
    gaussian_weights_1d, motion_kernel,
};
pub use cg::{
    CG_MAX_ITERATIONS, CG_TOLERANCE, CgResult, conjugate_gradient, least_squares_cg, prox_l2_cg,
};
pub use error::OperatorError;
pub use mask::Mask;
pub use resize::{Resizer, resizer_cubic, resizer_matrix};
pub use spec::{DPS_OPERATOR_NAMES, OperatorSpec, build};
pub use sr::Downsample;

use burn::tensor::{Device, Tensor};
use std::path::{Path, PathBuf};
use tweedie_core::NoiseSource;

/// A linear measurement operator A.
pub trait Operator: Send + Sync {
    /// A(x) for a batch `[B, C, H, W]`.
    fn forward(&self, x: Tensor<4>) -> Tensor<4>;
    /// The adjoint Aᵀ(y), mapping a measurement back to image space.
    fn adjoint(&self, y: Tensor<4>) -> Tensor<4>;
    /// The pseudo-inverse `A⁺y`: the minimum-norm solution of `min_x ‖Ax − y‖²` (deepinv's
    /// `A_dagger`). Default: [`least_squares_cg`], conjugate gradients on `AᵀA x = Aᵀy` from
    /// `x₀ = 0`, to [`CG_TOLERANCE`] or [`CG_MAX_ITERATIONS`] (an ill-conditioned `A` stops
    /// early, a regularised answer). Operators with structure override it with a closed form.
    fn pseudo_inverse(&self, y: Tensor<4>) -> Tensor<4> {
        least_squares_cg(self, y, CG_TOLERANCE, CG_MAX_ITERATIONS).x
    }
    /// The proximal operator of the data term (deepinv's `prox_l2(z, y, gamma)`):
    /// `argmin_x ½‖Ax − y‖² + 1/(2γ)‖x − z‖² = (I + γAᵀA)⁻¹(z + γAᵀy)`, one scalar `γ ≥ 0`
    /// for the whole batch (γ = 0 gives `z`; γ → ∞ tends to the solution of `Ax ≈ y` nearest
    /// `z`, `z + A⁺(y − Az)`). Default: [`prox_l2_cg`], conjugate gradients on that SPD system
    /// warm-started at `z`, to [`CG_TOLERANCE`] or [`CG_MAX_ITERATIONS`]. Panics unless γ is
    /// finite and ≥ 0.
    fn prox_l2(&self, z: Tensor<4>, y: Tensor<4>, gamma: f64) -> Tensor<4> {
        prox_l2_cg(self, z, y, gamma, CG_TOLERANCE, CG_MAX_ITERATIONS).x
    }
    /// A short human description for captions, e.g. `"gaussian blur 61×61 σ=3"`.
    fn describe(&self) -> String;
    /// A sensible image-space starting point from a measurement. Default: `A⁺y`; blurs return
    /// `y` itself (already an image, and without the noise `A⁺` amplifies).
    fn initialise(&self, y: Tensor<4>) -> Tensor<4> {
        self.pseudo_inverse(y)
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
    /// `A⁺y = y`.
    fn pseudo_inverse(&self, y: Tensor<4>) -> Tensor<4> {
        y
    }
    /// `x = (z + γy)/(1 + γ)`.
    fn prox_l2(&self, z: Tensor<4>, y: Tensor<4>, gamma: f64) -> Tensor<4> {
        cg::check_gamma(gamma);
        (z + y.mul_scalar(gamma)).div_scalar(1.0 + gamma)
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
/// assert_eq!(mask.pseudo_inverse(y.clone()).dims(), [1, 3, 8, 8]);
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

/// A measurement together with the noise level it was taken at: `y = A(x) + σ n`, `n ~ N(0, I)`,
/// σ in the [−1, 1] image scale. Solvers that weigh the data term by the noise (DiffPIR's
/// proximal step size, `γ ∝ 1/σ²`; DDNM⁺) read `sigma` from here rather than from a separate
/// setting that could disagree.
#[derive(Debug, Clone)]
pub struct NoisyMeasurement {
    /// The measurement `A(x) + σ n`.
    pub y: Tensor<4>,
    /// The standard deviation σ of the added Gaussian noise (0: noise-free).
    pub sigma: f64,
}

/// [`measure`], keeping σ with the result: `y = A(x) + σ n` as a [`NoisyMeasurement`].
///
/// ```
/// use tweedie_core::{Device, NoiseSource, Tensor};
/// use tweedie_operators::{Identity, measure_with_noise};
///
/// let x: Tensor<4> = Tensor::zeros([1, 3, 4, 4], &Device::flex());
/// let m = measure_with_noise(&Identity, x, 0.05, &mut NoiseSource::new(0)).unwrap();
/// assert_eq!((m.sigma, m.y.dims()), (0.05, [1, 3, 4, 4]));
/// ```
pub fn measure_with_noise(
    op: &dyn Operator,
    x: Tensor<4>,
    sigma: f64,
    noise: &mut NoiseSource,
) -> Result<NoisyMeasurement, OperatorError> {
    let y = measure(op, x, sigma, noise)?;
    Ok(NoisyMeasurement { y, sigma })
}

/// deepinv's `adjointness_test`: draws `x ~ N(0, I)` of `shape` and `y ~ N(0, I)` of A's
/// output shape (seeded) on `device` and returns the relative gap
/// `|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / max(|⟨Ax, y⟩|, |⟨x, Aᵀy⟩|)` (inner products in `f64`). An exact
/// adjoint gives ~1e-7 (`f32` round-off); a wrong one gives O(1). Panics if `Aᵀy` does not
/// have `shape`.
///
/// ```
/// use tweedie_core::Device;
/// use tweedie_operators::{Blur, Padding, adjointness_error};
///
/// let blur = Blur::gaussian(5, 1.0).unwrap().with_padding(Padding::Circular);
/// assert!(adjointness_error(&blur, [1, 3, 8, 8], 0, &Device::flex()) < 1e-5);
/// ```
pub fn adjointness_error(op: &dyn Operator, shape: [usize; 4], seed: u64, device: &Device) -> f64 {
    let mut noise = NoiseSource::new(seed);
    let x = noise.normal(shape, device);
    let ax = op.forward(x.clone());
    let y = noise.normal(ax.dims(), device);
    let aty = op.adjoint(y.clone());
    assert_eq!(aty.dims(), shape, "Aᵀy does not have the image shape");
    let dot = |a: &Tensor<4>, b: &Tensor<4>| -> f64 {
        tweedie_core::tensor::to_vec(a)
            .iter()
            .zip(tweedie_core::tensor::to_vec(b))
            .map(|(a, b)| *a as f64 * b as f64)
            .sum()
    };
    let (lhs, rhs) = (dot(&ax, &y), dot(&x, &aty));
    (lhs - rhs).abs() / lhs.abs().max(rhs.abs()).max(1e-12)
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// [`adjointness_error`] on the flex device.
    pub fn adjoint_error(op: &dyn Operator, shape: [usize; 4], seed: u64) -> f64 {
        adjointness_error(op, shape, seed, &Device::flex())
    }

    #[test]
    fn identity_is_self_adjoint() {
        assert!(adjoint_error(&Identity, [2, 3, 8, 8], 1) < 1e-6);
    }
}
