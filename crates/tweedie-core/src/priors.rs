//! Analytic priors with exact scores: the test oracles of every sampler.
//!
//! Under the forward process x_t = √ᾱ x_0 + √(1 − ᾱ) z, a Gaussian prior stays Gaussian and a
//! Gaussian mixture stays a mixture, so the noisy score ∇ log p_t, the optimal ε-predictor and
//! the posterior mean E[x_0 | x_t] are all known in closed form.

use crate::{CoreError, EpsModel, NoiseLevel, NoiseSource, tensor};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

/// A Gaussian prior N(μ, diag(s²)) over images `[C, H, W]` (per-pixel mean and variance).
#[derive(Debug, Clone)]
pub struct GaussianPrior {
    /// Mean, shape `[1, C, H, W]`.
    pub mean: Tensor<4>,
    /// Variance s², shape `[1, C, H, W]`, all entries ≥ 0.
    pub var: Tensor<4>,
}

impl GaussianPrior {
    /// N(μ, s² I) with the mean image `mean` (`[1, C, H, W]`).
    pub fn isotropic(mean: Tensor<4>, variance: f64) -> Result<Self, CoreError> {
        if !(variance >= 0.0 && variance.is_finite()) {
            return Err(CoreError::invalid(
                "variance",
                variance,
                "must be finite and ≥ 0",
            ));
        }
        let var = mean.ones_like().mul_scalar(variance);
        Ok(Self { mean, var })
    }

    /// N(μ, diag(var)).
    pub fn diagonal(mean: Tensor<4>, var: Tensor<4>) -> Result<Self, CoreError> {
        if mean.dims() != var.dims() || mean.dims()[0] != 1 {
            return Err(CoreError::Shape(format!(
                "mean {:?} and variance {:?} must both be [1, C, H, W]",
                mean.dims(),
                var.dims()
            )));
        }
        if tensor::to_vec(&var)
            .iter()
            .any(|v| !(*v >= 0.0 && v.is_finite()))
        {
            return Err(CoreError::invalid(
                "var",
                "…",
                "every variance must be finite and ≥ 0",
            ));
        }
        Ok(Self { mean, var })
    }

    /// Marginal variance of x_t per pixel: ᾱ s² + 1 − ᾱ.
    fn marginal_var(&self, alpha_bar: f64) -> Tensor<4> {
        self.var
            .clone()
            .mul_scalar(alpha_bar)
            .add_scalar(1.0 - alpha_bar)
    }

    /// Exact posterior mean E[x_0 | x_t] = μ + √ᾱ s²/(ᾱ s² + 1 − ᾱ) (x_t − √ᾱ μ).
    pub fn posterior_mean(&self, x_t: Tensor<4>, alpha_bar: f64) -> Tensor<4> {
        let resid = x_t - self.mean.clone().mul_scalar(alpha_bar.sqrt());
        let gain = self.var.clone().mul_scalar(alpha_bar.sqrt()) / self.marginal_var(alpha_bar);
        self.mean.clone() + resid * gain
    }

    /// Exact posterior variance Var[x_0 | x_t] = s²(1 − ᾱ)/(ᾱ s² + 1 − ᾱ), per pixel.
    pub fn posterior_var(&self, alpha_bar: f64) -> Tensor<4> {
        self.var.clone().mul_scalar(1.0 - alpha_bar) / self.marginal_var(alpha_bar)
    }

    /// log p_t(x) of the noisy marginal N(√ᾱ μ, ᾱ s² + 1 − ᾱ) per batch item (ᾱ = 1: the prior).
    pub fn marginal_log_density(&self, x: &Tensor<4>, alpha_bar: f64) -> Vec<f64> {
        let v = self.marginal_var(alpha_bar);
        let resid = x.clone() - self.mean.clone().mul_scalar(alpha_bar.sqrt());
        let quad = tensor::sq_norm_per_item(&(resid / v.clone().sqrt()));
        let logdet: f64 = tensor::to_vec(&v).iter().map(|a| (*a as f64).ln()).sum();
        let d = v.dims().iter().product::<usize>() as f64;
        quad.iter()
            .map(|q| -0.5 * (q + logdet + d * (2.0 * std::f64::consts::PI).ln()))
            .collect()
    }

    /// `n` exact samples from the prior.
    pub fn sample(&self, n: usize, noise: &mut NoiseSource) -> Tensor<4> {
        let [_, c, h, w] = self.mean.dims();
        let z = noise.normal([n, c, h, w], &self.mean.device());
        self.mean.clone() + z * self.var.clone().sqrt()
    }
}

impl EpsModel for GaussianPrior {
    /// ε*(x_t) = √(1 − ᾱ)(x_t − √ᾱ μ)/(ᾱ s² + 1 − ᾱ) (the MMSE noise predictor).
    fn predict_eps(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4> {
        let ab = level.alpha_bar;
        let resid = x_t - self.mean.clone().mul_scalar(ab.sqrt());
        (resid / self.marginal_var(ab)).mul_scalar((1.0 - ab).sqrt())
    }
}

/// A finite mixture Σ_k w_k N(μ_k, s_k² I) over images `[C, H, W]`.
///
/// With all s_k = 0 this is the empirical distribution of a set of images, whose optimal
/// denoiser is the softmax-weighted average of the images.
#[derive(Debug, Clone)]
pub struct GaussianMixturePrior {
    /// Component means, `[K, C·H·W]`.
    means: Tensor<2>,
    /// Component variances s_k².
    vars: Vec<f64>,
    /// log w_k (normalised).
    log_weights: Vec<f64>,
    /// Image shape `[C, H, W]`.
    shape: [usize; 3],
}

impl GaussianMixturePrior {
    /// A mixture with component means `[K, C, H, W]`, isotropic variances s_k² and weights w_k
    /// (normalised here).
    pub fn new(means: Tensor<4>, vars: Vec<f64>, weights: Vec<f64>) -> Result<Self, CoreError> {
        let [k, c, h, w] = means.dims();
        if vars.len() != k || weights.len() != k {
            return Err(CoreError::Shape(format!(
                "{k} components but {} variances and {} weights",
                vars.len(),
                weights.len()
            )));
        }
        if vars.iter().any(|v| !(*v >= 0.0 && v.is_finite())) {
            return Err(CoreError::invalid(
                "vars",
                format!("{vars:?}"),
                "must be finite and ≥ 0",
            ));
        }
        let total: f64 = weights.iter().sum();
        if weights.iter().any(|w| !(*w > 0.0 && w.is_finite())) || total <= 0.0 {
            return Err(CoreError::invalid(
                "weights",
                format!("{weights:?}"),
                "must be positive",
            ));
        }
        let log_weights = weights.iter().map(|w| (w / total).ln()).collect();
        Ok(Self {
            means: means.reshape([k, c * h * w]),
            vars,
            log_weights,
            shape: [c, h, w],
        })
    }

    /// The empirical distribution of `images` (`[K, C, H, W]`), uniform weights, zero variance.
    pub fn empirical(images: Tensor<4>) -> Result<Self, CoreError> {
        let k = images.dims()[0];
        Self::new(images, vec![0.0; k], vec![1.0; k])
    }

    /// Number of components K.
    pub fn num_components(&self) -> usize {
        self.vars.len()
    }

    /// Posterior responsibilities p(k | x_t), `[B, K]`.
    pub fn responsibilities(&self, x_t: &Tensor<4>, alpha_bar: f64) -> Tensor<2> {
        let device = x_t.device();
        let [b, ..] = x_t.dims();
        let d = self.shape.iter().product::<usize>();
        let x = x_t.clone().reshape([b, d]);
        let mu = self.means.clone().mul_scalar(alpha_bar.sqrt());
        // ‖x − √ᾱ μ_k‖² = ‖x‖² − 2 x·√ᾱμ_k + ‖√ᾱμ_k‖²
        let xx = x.clone().powf_scalar(2.0).sum_dim(1); // [B,1]
        let mm = mu
            .clone()
            .powf_scalar(2.0)
            .sum_dim(1)
            .reshape([1, self.vars.len()]); // [1,K]
        let xm = x.matmul(mu.transpose()); // [B,K]
        let d2 = xx - xm.mul_scalar(2.0) + mm;
        let marginal = self.marginal_vars(alpha_bar);
        let inv_2v = marginal.iter().map(|v| (-0.5 / v) as f32).collect();
        let offsets = marginal
            .iter()
            .zip(&self.log_weights)
            .map(|(v, lw)| (lw - 0.5 * d as f64 * v.ln()) as f32)
            .collect();
        let k = self.vars.len();
        let logits = d2 * tensor::from_vec(inv_2v, [1, k], &device)
            + tensor::from_vec(offsets, [1, k], &device);
        softmax(logits, 1)
    }

    fn marginal_vars(&self, alpha_bar: f64) -> Vec<f64> {
        self.vars
            .iter()
            .map(|s2| alpha_bar * s2 + 1.0 - alpha_bar)
            .collect()
    }

    /// Exact posterior mean E[x_0 | x_t] = Σ_k r_k (μ_k + √ᾱ s_k²/v_k (x_t − √ᾱ μ_k)).
    pub fn posterior_mean(&self, x_t: Tensor<4>, alpha_bar: f64) -> Tensor<4> {
        let level = NoiseLevel { t: 1, alpha_bar };
        self.denoise(x_t, level)
    }

    /// `n` exact samples from the mixture.
    pub fn sample(&self, n: usize, noise: &mut NoiseSource, device: &Device) -> Tensor<4> {
        let [c, h, w] = self.shape;
        let weights: Vec<f64> = self.log_weights.iter().map(|l| l.exp()).collect();
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let u = noise.uniform();
            let mut acc = 0.0;
            let mut k = weights.len() - 1;
            for (i, wk) in weights.iter().enumerate() {
                acc += wk;
                if u < acc {
                    k = i;
                    break;
                }
            }
            let mu = self
                .means
                .clone()
                .narrow(0, k, 1)
                .reshape([1, c, h, w])
                .to_device(device);
            let z = noise.normal([1, c, h, w], device);
            items.push(mu + z.mul_scalar(self.vars[k].sqrt()));
        }
        Tensor::cat(items, 0)
    }
}

impl EpsModel for GaussianMixturePrior {
    /// ε* = −√(1 − ᾱ) ∇ log p_t with ∇ log p_t(x) = Σ_k r_k (√ᾱ μ_k − x)/v_k.
    fn predict_eps(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4> {
        let ab = level.alpha_bar;
        let device = x_t.device();
        let dims = x_t.dims();
        let [b, ..] = dims;
        let k = self.vars.len();
        let d = self.shape.iter().product::<usize>();
        let r = self.responsibilities(&x_t, ab); // [B,K]
        let inv_v: Vec<f32> = self
            .marginal_vars(ab)
            .iter()
            .map(|v| (1.0 / v) as f32)
            .collect();
        let r_over_v = r * tensor::from_vec(inv_v, [1, k], &device); // [B,K]
        let pull = r_over_v
            .clone()
            .matmul(self.means.clone().to_device(&device).mul_scalar(ab.sqrt())); // [B,D]
        let x = x_t.reshape([b, d]);
        let score = pull - x * r_over_v.sum_dim(1);
        crate::diffusion::score_to_eps(score, ab).reshape(dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{from_vec, to_vec};

    fn dev() -> Device {
        Device::flex()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn gaussian_score_matches_finite_difference_of_log_density() {
        let device = dev();
        let mut noise = NoiseSource::new(1);
        let mean = noise.normal([1, 2, 3, 3], &device).mul_scalar(0.5);
        let var = noise
            .normal([1, 2, 3, 3], &device)
            .powf_scalar(2.0)
            .add_scalar(0.1);
        let prior = GaussianPrior::diagonal(mean, var).unwrap();
        let x = noise.normal([1, 2, 3, 3], &device);
        for ab in [1.0 - 1e-4, 0.5, 0.01] {
            let level = NoiseLevel {
                t: 1,
                alpha_bar: ab,
            };
            let score = to_vec(&prior.score(x.clone(), level));
            let xv = to_vec(&x);
            let h = 1e-2f32;
            for i in 0..xv.len() {
                let (mut xp, mut xm) = (xv.clone(), xv.clone());
                xp[i] += h;
                xm[i] -= h;
                let lp = prior.marginal_log_density(&from_vec(xp, [1, 2, 3, 3], &device), ab)[0];
                let lm = prior.marginal_log_density(&from_vec(xm, [1, 2, 3, 3], &device), ab)[0];
                let fd = (lp - lm) / (2.0 * h as f64);
                // log-density is quadratic, so the central difference is exact up to f32 noise.
                assert!(
                    (fd - score[i] as f64).abs() < 2e-2 * (1.0 + fd.abs()),
                    "i={i} ab={ab}: fd {fd} vs score {}",
                    score[i]
                );
            }
        }
    }

    #[test]
    fn gaussian_tweedie_equals_exact_posterior_mean() {
        let device = dev();
        let mut noise = NoiseSource::new(2);
        let mean = noise.normal([1, 3, 4, 4], &device).mul_scalar(0.3);
        let prior = GaussianPrior::isotropic(mean, 0.25).unwrap();
        let x = noise.normal([2, 3, 4, 4], &device);
        for ab in [0.99, 0.3, 0.001] {
            let level = NoiseLevel {
                t: 1,
                alpha_bar: ab,
            };
            let tweedie = to_vec(&prior.denoise(x.clone(), level));
            let exact = to_vec(&prior.posterior_mean(x.clone(), ab));
            assert!(max_abs_diff(&tweedie, &exact) < 1e-5);
        }
    }

    #[test]
    fn mixture_with_one_component_is_the_gaussian() {
        let device = dev();
        let mut noise = NoiseSource::new(3);
        let mean = noise.normal([1, 1, 4, 4], &device);
        let g = GaussianPrior::isotropic(mean.clone(), 0.3).unwrap();
        let m = GaussianMixturePrior::new(mean, vec![0.3], vec![2.0]).unwrap();
        let x = noise.normal([3, 1, 4, 4], &device);
        let level = NoiseLevel {
            t: 1,
            alpha_bar: 0.4,
        };
        let a = to_vec(&g.predict_eps(x.clone(), level));
        let b = to_vec(&m.predict_eps(x, level));
        assert!(max_abs_diff(&a, &b) < 1e-5);
    }

    #[test]
    fn empirical_denoiser_is_softmax_weighted_average() {
        let device = dev();
        let mut noise = NoiseSource::new(4);
        let images = noise.normal([5, 1, 3, 3], &device);
        let prior = GaussianMixturePrior::empirical(images.clone()).unwrap();
        let x = noise.normal([2, 1, 3, 3], &device);
        let ab = 0.6;
        let got = to_vec(&prior.posterior_mean(x.clone(), ab));
        // Reference computed on the host in f64.
        let imgs = to_vec(&images);
        let xs = to_vec(&x);
        let d = 9;
        let mut want = vec![0f32; 2 * d];
        for b in 0..2 {
            let logits: Vec<f64> = (0..5)
                .map(|k| {
                    -(0..d)
                        .map(|i| {
                            (xs[b * d + i] as f64 - ab.sqrt() * imgs[k * d + i] as f64).powi(2)
                        })
                        .sum::<f64>()
                        / (2.0 * (1.0 - ab))
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let ws: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
            let z: f64 = ws.iter().sum();
            for i in 0..d {
                want[b * d + i] = (0..5)
                    .map(|k| ws[k] / z * imgs[k * d + i] as f64)
                    .sum::<f64>() as f32;
            }
        }
        assert!(max_abs_diff(&got, &want) < 1e-4, "{got:?} vs {want:?}");
    }

    #[test]
    fn mixture_score_matches_finite_difference() {
        let device = dev();
        let mut noise = NoiseSource::new(5);
        let means = noise.normal([3, 1, 2, 2], &device);
        let m = GaussianMixturePrior::new(means.clone(), vec![0.1, 0.2, 0.05], vec![1.0, 2.0, 3.0])
            .unwrap();
        let ab = 0.7;
        let level = NoiseLevel {
            t: 1,
            alpha_bar: ab,
        };
        let x = noise.normal([1, 1, 2, 2], &device);
        let score = to_vec(&m.score(x.clone(), level));
        // log p_t on the host in f64.
        let mu = to_vec(&means);
        let logp = |xv: &[f64]| {
            let terms: Vec<f64> = (0..3)
                .map(|k| {
                    let v = ab * [0.1, 0.2, 0.05][k] + 1.0 - ab;
                    let w = [1.0, 2.0, 3.0][k] / 6.0;
                    let q: f64 = (0..4)
                        .map(|i| (xv[i] - ab.sqrt() * mu[k * 4 + i] as f64).powi(2))
                        .sum();
                    f64::ln(w) - q / (2.0 * v) - 2.0 * (2.0 * std::f64::consts::PI * v).ln()
                })
                .collect();
            let mx = terms.iter().cloned().fold(f64::MIN, f64::max);
            mx + terms.iter().map(|t| (t - mx).exp()).sum::<f64>().ln()
        };
        let xv: Vec<f64> = to_vec(&x).iter().map(|v| *v as f64).collect();
        for i in 0..4 {
            let (mut xp, mut xm) = (xv.clone(), xv.clone());
            xp[i] += 1e-5;
            xm[i] -= 1e-5;
            let fd = (logp(&xp) - logp(&xm)) / 2e-5;
            assert!(
                (fd - score[i] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                "{fd} vs {}",
                score[i]
            );
        }
    }

    #[test]
    fn bad_prior_parameters_are_rejected() {
        let device = dev();
        let mean = Tensor::<4>::zeros([1, 1, 2, 2], &device);
        assert!(GaussianPrior::isotropic(mean.clone(), -1.0).is_err());
        assert!(GaussianMixturePrior::new(mean.clone(), vec![0.1, 0.1], vec![1.0]).is_err());
        assert!(GaussianMixturePrior::new(mean, vec![0.1], vec![0.0]).is_err());
    }
}
