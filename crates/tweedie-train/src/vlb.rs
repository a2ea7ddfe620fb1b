//! The variational-bound term of Improved DDPM's hybrid objective (guided-diffusion's
//! `_vb_terms_bpd` with `learned_range` variances), which trains the variance channels.

use burn::tensor::Tensor;
use tweedie_core::Schedule;

/// Weight of the per-timestep VLB term in the hybrid loss: guided-diffusion's `RESCALED_MSE`
/// multiplies it by T/1000. This *is* Improved DDPM's λ = 0.001 on the full bound
/// L_vlb = Σ_t L_t ≈ T·E_t(L_t): λ·T·E_t(L_t) = (T/1000)·E_t(L_t) (1 for T = 1000), so no
/// further 0.001 applies.
pub fn vlb_weight(schedule: &Schedule) -> f64 {
    schedule.num_steps() as f64 / 1000.0
}

/// log β̃_t with guided-diffusion's clipping: at t = 1, where β̃₁ = 0, log β̃₂ instead
/// (`posterior_log_variance_clipped`).
pub fn posterior_log_variance_clipped(schedule: &Schedule, t: usize) -> f64 {
    let t = if t == 1 && schedule.num_steps() > 1 {
        2
    } else {
        t
    };
    schedule.posterior_variance[t].ln()
}

/// The per-item VLB term L_{t−1} in bits per dimension (guided-diffusion's `_vb_terms_bpd`
/// with `clip_denoised = False`), for images `x0`, their noised `x_t` at timesteps `ts`
/// (`1..=T`, one per item), the network's ε (**detached here**: the bound trains only the
/// variance, Improved DDPM's stop-gradient on the mean) and variance output `v`:
///
/// - x̂0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t, model mean μ_θ = c₀ x̂0 + c_t x_t and true mean
///   μ̃ = c₀ x0 + c_t x_t (c₀ = √ᾱ_{t−1} β_t/(1 − ᾱ_t), c_t = √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t));
/// - `learned_range`: frac = (v + 1)/2, log σ² = frac·log β_t + (1 − frac)·log β̃_t
///   (β̃ clipped as [`posterior_log_variance_clipped`]);
/// - t > 1: KL(q(x_{t−1} | x_t, x0) ‖ p_θ(x_{t−1} | x_t))
///   = ½(−1 + log σ² − log β̃ + β̃/σ² + (μ̃ − μ_θ)²/σ²);
/// - t = 1: the discretised Gaussian decoder NLL −log ∫ N(x; μ_θ, σ²) over x0's 8-bit bin
///   (±1/255, open-ended at ±1; Φ by guided-diffusion's tanh approximation);
///
/// averaged over C·H·W and divided by ln 2. Returns `[B]`.
pub fn vlb_bits_per_dim(
    schedule: &Schedule,
    x0: &Tensor<4>,
    x_t: &Tensor<4>,
    eps: Tensor<4>,
    v: Tensor<4>,
    ts: &[usize],
) -> Tensor<1> {
    let [b, ..] = x0.dims();
    assert_eq!(ts.len(), b, "one timestep per item");
    let device = x0.device();
    let per_item = |f: &dyn Fn(usize) -> f64| {
        tweedie_core::tensor::from_vec(
            ts.iter().map(|&t| f(t) as f32).collect(),
            [b, 1, 1, 1],
            &device,
        )
    };
    let s = schedule;
    let recip = per_item(&|t| 1.0 / s.sqrt_alpha_bar[t]);
    let recipm1 = per_item(&|t| (1.0 / s.alpha_bar[t] - 1.0).sqrt());
    let c0 = per_item(&|t| s.posterior_coef_x0[t]);
    let ct = per_item(&|t| s.posterior_coef_xt[t]);
    let max_log = per_item(&|t| s.beta[t].ln());
    let min_log = per_item(&|t| posterior_log_variance_clipped(s, t));

    let x0_hat = x_t.clone() * recip - eps.detach() * recipm1;
    let model_mean = x0_hat * c0.clone() + x_t.clone() * ct.clone();
    let true_mean = x0.clone() * c0 + x_t.clone() * ct;
    let frac = v.add_scalar(1.0).mul_scalar(0.5);
    let model_log = frac.clone() * max_log + (frac.neg().add_scalar(1.0)) * min_log.clone();

    // KL(N(μ̃, β̃) ‖ N(μ_θ, σ²)), guided-diffusion's `normal_kl`.
    let true_log = min_log;
    let kl = (model_log.clone() - true_log.clone()).add_scalar(-1.0)
        + (true_log - model_log.clone()).exp()
        + (true_mean - model_mean.clone()).powf_scalar(2.0) * model_log.clone().neg().exp();
    let kl = kl.mul_scalar(0.5);

    // −log P(x0's bin) under N(μ_θ, σ²), guided-diffusion's
    // `discretized_gaussian_log_likelihood` (bins of width 2/255 on [−1, 1]).
    let centred = x0.clone() - model_mean;
    let inv_std = model_log.mul_scalar(-0.5).exp();
    let cdf = |z: Tensor<4>| {
        // Φ(z) ≈ ½(1 + tanh(√(2/π)(z + 0.044715 z³)))
        let inner =
            (z.clone() + z.powf_scalar(3.0).mul_scalar(0.044715)).mul_scalar((2.0 / PI).sqrt());
        inner.tanh().add_scalar(1.0).mul_scalar(0.5)
    };
    let cdf_plus = cdf((centred.clone().add_scalar(1.0 / 255.0)) * inv_std.clone());
    let cdf_min = cdf((centred.add_scalar(-1.0 / 255.0)) * inv_std);
    let log_cdf_plus = cdf_plus.clone().clamp_min(1e-12).log();
    let log_one_minus_cdf_min = cdf_min.clone().neg().add_scalar(1.0).clamp_min(1e-12).log();
    let log_delta = (cdf_plus - cdf_min).clamp_min(1e-12).log();
    let log_probs = log_delta
        .mask_where(x0.clone().greater_elem(0.999), log_one_minus_cdf_min)
        .mask_where(x0.clone().lower_elem(-0.999), log_cdf_plus);
    let nll = log_probs.neg();

    let mean_bits = |x: Tensor<4>| {
        x.reshape([b as i32, -1])
            .mean_dim(1)
            .reshape([b])
            .mul_scalar(1.0 / std::f64::consts::LN_2)
    };
    let first = tweedie_core::tensor::from_vec(
        ts.iter().map(|&t| if t == 1 { 1.0 } else { 0.0 }).collect(),
        [b],
        &device,
    );
    mean_bits(nll) * first.clone() + mean_bits(kl) * first.neg().add_scalar(1.0)
}

use std::f64::consts::PI;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn phi(z: f64) -> f64 {
        0.5 * (1.0 + ((2.0 / PI).sqrt() * (z + 0.044715 * z.powi(3))).tanh())
    }

    /// The same quantity for one item, by hand in f64.
    fn by_hand(s: &Schedule, x0: &[f64], xt: &[f64], eps: &[f64], v: &[f64], t: usize) -> f64 {
        let (ab, abp) = (s.alpha_bar[t], s.alpha_bar[t - 1]);
        let beta = 1.0 - ab / abp;
        let c0 = abp.sqrt() * beta / (1.0 - ab);
        let ct = (1.0 - beta).sqrt() * (1.0 - abp) / (1.0 - ab);
        let tilde = |t: usize| {
            let (ab, abp) = (s.alpha_bar[t], s.alpha_bar[t - 1]);
            (1.0 - abp) / (1.0 - ab) * (1.0 - ab / abp)
        };
        let min_log = if t == 1 { tilde(2).ln() } else { tilde(t).ln() };
        let max_log = beta.ln();
        let mut total = 0.0;
        for i in 0..x0.len() {
            let x0_hat = (xt[i] - (1.0 - ab).sqrt() * eps[i]) / ab.sqrt();
            let mu = c0 * x0_hat + ct * xt[i];
            let mu_true = c0 * x0[i] + ct * xt[i];
            let frac = (v[i] + 1.0) / 2.0;
            let logvar = frac * max_log + (1.0 - frac) * min_log;
            let term = if t == 1 {
                let sd = (0.5 * logvar).exp();
                let up = phi((x0[i] - mu + 1.0 / 255.0) / sd);
                let lo = phi((x0[i] - mu - 1.0 / 255.0) / sd);
                let p = if x0[i] < -0.999 {
                    up
                } else if x0[i] > 0.999 {
                    1.0 - lo
                } else {
                    up - lo
                };
                -p.max(1e-12).ln()
            } else {
                0.5 * (-1.0 + logvar - min_log
                    + (min_log - logvar).exp()
                    + (mu_true - mu).powi(2) * (-logvar).exp())
            };
            total += term;
        }
        total / x0.len() as f64 / std::f64::consts::LN_2
    }

    #[test]
    fn vlb_matches_a_hand_computation_and_trains_only_the_variance() {
        let s = Schedule::linear_default();
        let device = Device::flex().autodiff();
        // Three items of 2 pixels ([3, 1, 1, 2]): the decoder NLL at t = 1 (one pixel at the
        // open-ended edge −1), and KL terms at t = 2 and t = 600.
        let ts = [1usize, 2, 600];
        let x0 = [[-1.0, 0.3], [0.5, -0.2], [0.9, 0.1]];
        let eps_true = [[0.4, -1.2], [1.5, 0.3], [-0.7, 0.8]];
        let eps_model = [[0.35, -1.0], [1.2, 0.5], [-0.2, 0.9]];
        let v = [[-0.5, 0.8], [0.0, -1.0], [1.0, 0.3]];
        let xt: Vec<[f64; 2]> = (0..3)
            .map(|i| {
                let ab = s.alpha_bar[ts[i]];
                [0, 1].map(|j| ab.sqrt() * x0[i][j] + (1.0 - ab).sqrt() * eps_true[i][j])
            })
            .collect();
        let t4 = |m: &[[f64; 2]]| {
            tweedie_core::tensor::from_vec(
                m.iter().flatten().map(|x| *x as f32).collect(),
                [3, 1, 1, 2],
                &device,
            )
        };
        let eps_t = t4(&eps_model).require_grad();
        let v_t = t4(&v).require_grad();
        let got = vlb_bits_per_dim(&s, &t4(&x0), &t4(&xt), eps_t.clone(), v_t.clone(), &ts);
        let vals = tweedie_core::tensor::to_vec(&got);
        for i in 0..3 {
            let want = by_hand(&s, &x0[i], &xt[i], &eps_model[i], &v[i], ts[i]);
            let tol = 2e-3 * want.abs().max(1e-2);
            assert!(
                (vals[i] as f64 - want).abs() < tol,
                "item {i} (t = {}): {} vs {want}",
                ts[i],
                vals[i]
            );
        }
        // The bound is not trivially small: a KL term with a wrong mean is clearly positive.
        assert!(vals[2] > 1e-3, "{vals:?}");
        // Stop-gradient: the bound reaches v, not ε.
        let grads = got.sum().backward();
        let gv = v_t.grad(&grads).map(|g| tweedie_core::tensor::max_abs(&g));
        let ge = eps_t
            .grad(&grads)
            .map(|g| tweedie_core::tensor::max_abs(&g));
        assert!(gv.is_some_and(|g| g > 0.0), "{gv:?}");
        assert!(ge.is_none_or(|g| g == 0.0), "{ge:?}");
    }

    #[test]
    fn learned_range_endpoints_and_exact_variance_give_the_mean_term_only() {
        // With ε̂ = ε (μ_θ = μ̃) and v = −1 (σ² = β̃), the KL is 0; v = 1 (σ² = β) gives
        // ½(−1 + log(β/β̃) + β̃/β) > 0.
        let s = Schedule::linear_default();
        let device = Device::flex();
        let t = 300;
        let x0 = tweedie_core::tensor::from_vec(vec![0.2, -0.4], [1, 1, 1, 2], &device);
        let eps = tweedie_core::tensor::from_vec(vec![0.5, 1.0], [1, 1, 1, 2], &device);
        let xt = tweedie_core::diffusion::q_sample(x0.clone(), eps.clone(), s.alpha_bar[t]);
        let at = |v: f32| {
            let v = tweedie_core::tensor::from_vec(vec![v, v], [1, 1, 1, 2], &device);
            tweedie_core::tensor::to_vec(&vlb_bits_per_dim(&s, &x0, &xt, eps.clone(), v, &[t]))[0]
                as f64
        };
        assert!(at(-1.0).abs() < 1e-5, "{}", at(-1.0));
        let (beta, tilde) = (s.beta[t], s.posterior_variance[t]);
        let want = 0.5 * (-1.0 + (beta / tilde).ln() + tilde / beta) / std::f64::consts::LN_2;
        assert!(
            (at(1.0) - want).abs() < 1e-4 * want.max(1e-3),
            "{} vs {want}",
            at(1.0)
        );
        assert_eq!(vlb_weight(&s), 1.0);
    }
}
