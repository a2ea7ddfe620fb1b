//! The DDPM forward process, the ε ⇔ score ⇔ x̂0 conversions, and the reverse step in the
//! three equivalent forms of the problem sheet (Task 1). Derivations: `docs/derivations.md`.
//!
//! All functions are plain tensor arithmetic, so they work on any device and are
//! differentiable on autodiff devices.

use crate::schedule::Transition;
use burn::tensor::Tensor;

/// Closed-form forward noising q(x_t | x_0): `x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) z`.
///
/// ```
/// use tweedie_core::diffusion::q_sample;
/// use tweedie_core::{Device, Schedule, Tensor, tensor};
///
/// let device = Device::flex();
/// let ab = Schedule::linear_default().alpha_bar[100];
/// let x0: Tensor<4> = Tensor::ones([1, 3, 2, 2], &device);
/// let z: Tensor<4> = Tensor::ones([1, 3, 2, 2], &device).mul_scalar(-1.0);
/// let x_t = q_sample(x0, z, ab);
/// // Every value is √ᾱ_t · 1 + √(1 − ᾱ_t) · (−1).
/// let expected = ab.sqrt() - (1.0 - ab).sqrt();
/// assert!(tensor::to_vec(&x_t).iter().all(|v| (*v as f64 - expected).abs() < 1e-6));
/// ```
pub fn q_sample<const D: usize>(x0: Tensor<D>, z: Tensor<D>, alpha_bar: f64) -> Tensor<D> {
    x0.mul_scalar(alpha_bar.sqrt()) + z.mul_scalar((1.0 - alpha_bar).sqrt())
}

/// One forward step q(x_t | x_{t−1}): `x_t = √(1 − β_t) x_{t−1} + √β_t z`.
pub fn q_step<const D: usize>(x_prev: Tensor<D>, z: Tensor<D>, beta: f64) -> Tensor<D> {
    x_prev.mul_scalar((1.0 - beta).sqrt()) + z.mul_scalar(beta.sqrt())
}

/// Score from predicted noise: `s = −ε/√(1 − ᾱ_t)`.
pub fn eps_to_score<const D: usize>(eps: Tensor<D>, alpha_bar: f64) -> Tensor<D> {
    eps.mul_scalar(-1.0 / (1.0 - alpha_bar).sqrt())
}

/// Predicted noise from the score: `ε = −√(1 − ᾱ_t) s`.
pub fn score_to_eps<const D: usize>(score: Tensor<D>, alpha_bar: f64) -> Tensor<D> {
    score.mul_scalar(-(1.0 - alpha_bar).sqrt())
}

/// Tweedie's formula: `x̂0 = (x_t + (1 − ᾱ_t) s)/√ᾱ_t`.
pub fn x0_from_score<const D: usize>(
    x_t: Tensor<D>,
    score: Tensor<D>,
    alpha_bar: f64,
) -> Tensor<D> {
    (x_t + score.mul_scalar(1.0 - alpha_bar)).mul_scalar(1.0 / alpha_bar.sqrt())
}

/// Tweedie in ε form: `x̂0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t`.
///
/// Given the true noise it inverts [`q_sample`] exactly; given a network's ε̂(x_t, t) it is
/// the one-step denoiser E[x_0 | x_t] (problem sheet, Task 2).
///
/// ```
/// use tweedie_core::diffusion::{q_sample, x0_from_eps};
/// use tweedie_core::{Device, NoiseSource, Schedule, tensor};
///
/// let device = Device::flex();
/// let ab = Schedule::linear_default().alpha_bar[300];
/// let mut noise = NoiseSource::new(0);
/// let x0 = noise.normal([2, 3, 4, 4], &device).clamp(-1.0, 1.0);
/// let eps = noise.normal([2, 3, 4, 4], &device);
/// let x_t = q_sample(x0.clone(), eps.clone(), ab);
/// let x0_hat = x0_from_eps(x_t, eps, ab);
/// assert!(tensor::max_abs(&(x0_hat - x0)) < 1e-5);
/// ```
pub fn x0_from_eps<const D: usize>(x_t: Tensor<D>, eps: Tensor<D>, alpha_bar: f64) -> Tensor<D> {
    (x_t - eps.mul_scalar((1.0 - alpha_bar).sqrt())).mul_scalar(1.0 / alpha_bar.sqrt())
}

/// The noise implied by x_t and a clean estimate: `ε = (x_t − √ᾱ_t x̂0)/√(1 − ᾱ_t)`.
pub fn eps_from_x0<const D: usize>(x_t: Tensor<D>, x0: Tensor<D>, alpha_bar: f64) -> Tensor<D> {
    (x_t - x0.mul_scalar(alpha_bar.sqrt())).mul_scalar(1.0 / (1.0 - alpha_bar).sqrt())
}

/// The mean of the x̂0-form ancestral step, i.e. of q(x_s | x_t, x̂0) (Task 1.2, right):
/// `μ = √α(1 − ᾱ_s)/(1 − ᾱ_t) x_t + √ᾱ_s β/(1 − ᾱ_t) x̂0`.
pub fn posterior_mean<const D: usize>(
    x_t: Tensor<D>,
    x0_hat: Tensor<D>,
    tr: &Transition,
) -> Tensor<D> {
    x_t.mul_scalar(tr.coef_xt()) + x0_hat.mul_scalar(tr.coef_x0())
}

/// The x̂0-form ancestral step (Task 1.2, right; the form every sampler uses):
/// `x_s = √α(1 − ᾱ_s)/(1 − ᾱ_t) x_t + √ᾱ_s β/(1 − ᾱ_t) x̂0 + σ z`.
///
/// `sigma` is the noise scale: the sheet's √(1 − α_t) = √β (see [`step_sigma`]).
pub fn step_x0_form<const D: usize>(
    x_t: Tensor<D>,
    x0_hat: Tensor<D>,
    z: Tensor<D>,
    tr: &Transition,
    sigma: f64,
) -> Tensor<D> {
    posterior_mean(x_t, x0_hat, tr) + z.mul_scalar(sigma)
}

/// The score-form ancestral step (Task 1.2, left): `x_s = (x_t + β s)/√α + σ z`.
pub fn step_score_form<const D: usize>(
    x_t: Tensor<D>,
    score: Tensor<D>,
    z: Tensor<D>,
    tr: &Transition,
    sigma: f64,
) -> Tensor<D> {
    (x_t + score.mul_scalar(tr.beta())).mul_scalar(1.0 / tr.alpha().sqrt()) + z.mul_scalar(sigma)
}

/// The original DDPM ε-form step (Task 1.3): `x_s = (x_t − β/√(1 − ᾱ_t) ε)/√α + σ z`.
///
/// The problem sheet prints a `+` before the ε term; with s = −ε/√(1 − ᾱ_t) the sign must be
/// `−` (see `docs/derivations.md`, 1.3), which is what Ho et al. (2020) write.
pub fn step_eps_form<const D: usize>(
    x_t: Tensor<D>,
    eps: Tensor<D>,
    z: Tensor<D>,
    tr: &Transition,
    sigma: f64,
) -> Tensor<D> {
    (x_t - eps.mul_scalar(tr.beta() / (1.0 - tr.alpha_bar_t).sqrt()))
        .mul_scalar(1.0 / tr.alpha().sqrt())
        + z.mul_scalar(sigma)
}

/// Which variance the ancestral step injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepVariance {
    /// σ² = β_t = 1 − α_t, as on the problem sheet (DDPM's and guided-diffusion's
    /// "fixed large").
    #[default]
    Beta,
    /// σ² = β̃_t, the true posterior variance (DDPM's "fixed small").
    Posterior,
    /// guided-diffusion's `learned_range` (Improved DDPM): the network's variance output v
    /// interpolates log σ² = frac·log β + (1 − frac)·log β̃, frac = (v + 1)/2 (see
    /// [`learned_sigma`]). A model without a variance output falls back to `Beta`, which is
    /// what guided-diffusion calls `fixed_large`.
    Learned,
}

/// The noise scale σ of a transition (0 on the last step, where the sheet sets z = 0).
/// [`StepVariance::Learned`] needs the network's output and is computed by
/// [`learned_sigma`]; here, without it, it means σ² = β (`fixed_large`).
pub fn step_sigma(tr: &Transition, variance: StepVariance) -> f64 {
    if tr.is_last() {
        return 0.0;
    }
    match variance {
        StepVariance::Beta | StepVariance::Learned => tr.beta().sqrt(),
        StepVariance::Posterior => tr.posterior_variance().sqrt(),
    }
}

/// guided-diffusion's `learned_range` noise scale from the network's variance output `v`:
/// frac = (v + 1)/2, log σ² = frac·log β + (1 − frac)·log β̃, with β = 1 − ᾱ_t/ᾱ_s and
/// β̃ = (1 − ᾱ_s)/(1 − ᾱ_t)·β of the transition itself, so strided (respaced) chains use their
/// own β as guided-diffusion's `SpacedDiffusion` does. σ = exp(½ log σ²); 0 on the last step
/// (no noise is added there; guided-diffusion's clipped log β̃ at that step never reaches the
/// sample).
pub fn learned_sigma<const D: usize>(tr: &Transition, v: Tensor<D>) -> Tensor<D> {
    if tr.is_last() {
        return v.zeros_like();
    }
    let max_log = tr.beta().ln();
    let min_log = tr.posterior_variance().ln();
    // log σ² = min + frac·(max − min), frac = (v + 1)/2
    let frac = v.add_scalar(1.0).mul_scalar(0.5);
    frac.mul_scalar(max_log - min_log)
        .add_scalar(min_log)
        .mul_scalar(0.5)
        .exp()
}

/// The DDIM step (Song et al. 2021) with stochasticity η ∈ [0, 1]:
/// `x_s = √ᾱ_s x̂0 + √(1 − ᾱ_s − σ²) ε̂ + σ z`, `σ = η √β̃`. η = 1 equals the x̂0-form step
/// with [`StepVariance::Posterior`]; η = 0 is deterministic.
pub fn step_ddim<const D: usize>(
    x_t: Tensor<D>,
    x0_hat: Tensor<D>,
    z: Tensor<D>,
    tr: &Transition,
    eta: f64,
) -> Tensor<D> {
    let sigma = if tr.is_last() {
        0.0
    } else {
        eta * tr.posterior_variance().sqrt()
    };
    let eps = eps_from_x0(x_t, x0_hat.clone(), tr.alpha_bar_t);
    let dir = (1.0 - tr.alpha_bar_s - sigma * sigma).max(0.0).sqrt();
    x0_hat.mul_scalar(tr.alpha_bar_s.sqrt()) + eps.mul_scalar(dir) + z.mul_scalar(sigma)
}
