//! Numerical checks of the problem sheet's Task 1 derivations (docs/derivations.md).

use burn::tensor::{Device, Tensor};
use tweedie_core::diffusion::{self, StepVariance};
use tweedie_core::tensor::to_vec;
use tweedie_core::{NoiseSource, Schedule};

fn max_abs_diff(a: &Tensor<4>, b: &Tensor<4>) -> f32 {
    to_vec(&(a.clone() - b.clone()).abs().max())[0]
}

/// Task 1.1: iterating x_t = √(1−β_t) x_{t−1} + √β_t z for t steps gives, in distribution,
/// x_t = √ᾱ_t x_0 + √(1−ᾱ_t) z. We run 20,000 independent chains from the same x_0 and
/// compare the empirical mean and variance at several t with the closed form, within 4
/// standard errors.
#[test]
fn task1_1_iterated_forward_matches_closed_form() {
    let device = Device::flex();
    let s = Schedule::linear_default();
    let n = 20_000usize;
    let x0_value = 0.8f64;
    let mut noise = NoiseSource::new(11);
    let mut x = Tensor::<4>::ones([n, 1, 1, 1], &device).mul_scalar(x0_value);
    let checkpoints = [10usize, 100, 300, 1000];
    for t in 1..=1000 {
        let z = noise.normal([n, 1, 1, 1], &device);
        x = diffusion::q_step(x, z, s.beta[t]);
        if checkpoints.contains(&t) {
            let v: Vec<f64> = to_vec(&x).iter().map(|a| *a as f64).collect();
            let mean = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let want_mean = s.sqrt_alpha_bar[t] * x0_value;
            let want_var = 1.0 - s.alpha_bar[t];
            let se_mean = (want_var / n as f64).sqrt();
            let se_var = want_var * (2.0 / (n - 1) as f64).sqrt();
            assert!(
                (mean - want_mean).abs() < 4.0 * se_mean,
                "t={t}: mean {mean} vs {want_mean}"
            );
            assert!(
                (var - want_var).abs() < 4.0 * se_var,
                "t={t}: var {var} vs {want_var}"
            );
        }
    }
}

/// The closed form itself: q_sample uses exactly √ᾱ and √(1−ᾱ).
#[test]
fn q_sample_uses_closed_form_coefficients() {
    let device = Device::flex();
    let s = Schedule::linear_default();
    let mut noise = NoiseSource::new(12);
    let x0 = noise.normal([1, 3, 4, 4], &device);
    let z = noise.normal([1, 3, 4, 4], &device);
    for t in [1usize, 30, 100, 300, 1000] {
        let xt = diffusion::q_sample(x0.clone(), z.clone(), s.alpha_bar[t]);
        let want = x0.clone().mul_scalar(s.sqrt_alpha_bar[t])
            + z.clone().mul_scalar(s.sqrt_one_minus_alpha_bar[t]);
        assert!(max_abs_diff(&xt, &want) < 1e-6);
        // Tweedie with the true noise recovers x0 exactly.
        let x0_back = diffusion::x0_from_eps(xt.clone(), z.clone(), s.alpha_bar[t]);
        assert!(max_abs_diff(&x0_back, &x0) < 2e-3, "t={t}");
    }
}

/// Task 1.2: the score-form step and the x̂0-form step give the same x_{t−1} for the same z,
/// for every t = 1..T (x̂0 from Tweedie's formula).
#[test]
fn task1_2_score_form_equals_x0_form_for_all_t() {
    let device = Device::flex();
    let s = Schedule::linear_default();
    let mut noise = NoiseSource::new(13);
    let mut worst = 0f32;
    for t in 1..=1000 {
        let tr = s.transition(t, t - 1);
        let x_t = noise.normal([2, 3, 4, 4], &device);
        let score = noise.normal([2, 3, 4, 4], &device);
        let z = noise.normal([2, 3, 4, 4], &device);
        let sigma = diffusion::step_sigma(&tr, StepVariance::Beta);
        let a = diffusion::step_score_form(x_t.clone(), score.clone(), z.clone(), &tr, sigma);
        let x0_hat = diffusion::x0_from_score(x_t.clone(), score, tr.alpha_bar_t);
        let b = diffusion::step_x0_form(x_t, x0_hat, z, &tr, sigma);
        // Relative to the magnitude of x: for tiny t, x̂0 = x/√ᾱ amplification is mild.
        let err = max_abs_diff(&a, &b);
        worst = worst.max(err);
        assert!(
            err < 1e-5 * (1.0 + to_vec(&a.abs().max())[0]),
            "t={t}: {err}"
        );
    }
    eprintln!("task 1.2 worst |Δ| over t=1..1000: {worst:e}");
}

/// Task 1.3: the original DDPM ε-form step equals the score-form step with s = −ε/√(1−ᾱ_t).
#[test]
fn task1_3_eps_form_equals_score_form_for_all_t() {
    let device = Device::flex();
    let s = Schedule::linear_default();
    let mut noise = NoiseSource::new(14);
    for t in 1..=1000 {
        let tr = s.transition(t, t - 1);
        let x_t = noise.normal([2, 3, 4, 4], &device);
        let eps = noise.normal([2, 3, 4, 4], &device);
        let z = noise.normal([2, 3, 4, 4], &device);
        let sigma = diffusion::step_sigma(&tr, StepVariance::Beta);
        let a = diffusion::step_eps_form(x_t.clone(), eps.clone(), z.clone(), &tr, sigma);
        let score = diffusion::eps_to_score(eps, tr.alpha_bar_t);
        let b = diffusion::step_score_form(x_t, score, z, &tr, sigma);
        let err = max_abs_diff(&a, &b);
        assert!(
            err < 1e-5 * (1.0 + to_vec(&a.abs().max())[0]),
            "t={t}: {err}"
        );
    }
}

/// The ancestral step's mean is the true posterior mean E[x_{t−1} | x_t, x_0] (x̂0 = x_0):
/// checked against the Gaussian conditioning formula of the joint (x_{t−1}, x_t) given x_0.
#[test]
fn x0_form_mean_is_gaussian_posterior_mean() {
    let s = Schedule::linear_default();
    for t in [2usize, 50, 500, 1000] {
        let (ab, abp, a) = (s.alpha_bar[t], s.alpha_bar[t - 1], s.alpha[t]);
        // Given x0: x_{t-1} ~ N(√abp x0, 1-abp), x_t = √a x_{t-1} + √(1-a) z.
        // Cov(x_{t-1}, x_t) = √a (1-abp), Var x_t = 1-ab.
        let gain = a.sqrt() * (1.0 - abp) / (1.0 - ab);
        let x0_coef = abp.sqrt() - gain * ab.sqrt();
        let var = (1.0 - abp) - gain * a.sqrt() * (1.0 - abp);
        assert!((gain - s.posterior_coef_xt[t]).abs() < 1e-12);
        assert!((x0_coef - s.posterior_coef_x0[t]).abs() < 1e-9, "t={t}");
        assert!((var - s.posterior_variance[t]).abs() < 1e-9, "t={t}");
    }
}

/// DDIM with η = 1 is the ancestral step with the posterior variance; strided chains too.
#[test]
fn ddim_eta_one_equals_ancestral_posterior_step() {
    let device = Device::flex();
    let s = Schedule::linear_default();
    let mut noise = NoiseSource::new(15);
    for tr in s.chain(1000, 20).unwrap() {
        let x_t = noise.normal([1, 3, 4, 4], &device);
        let x0 = noise.normal([1, 3, 4, 4], &device);
        let z = noise.normal([1, 3, 4, 4], &device);
        let a = diffusion::step_ddim(x_t.clone(), x0.clone(), z.clone(), &tr, 1.0);
        let sigma = diffusion::step_sigma(&tr, StepVariance::Posterior);
        let b = diffusion::step_x0_form(x_t, x0, z, &tr, sigma);
        assert!(max_abs_diff(&a, &b) < 1e-4, "{tr:?}");
    }
}
