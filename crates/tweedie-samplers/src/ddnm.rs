//! DDNM / DDNM+ (Wang et al., "Zero-Shot Image Restoration Using Denoising Diffusion
//! Null-Space Model", ICLR 2023): the range–null-space decomposition x = A⁺A x + (I − A⁺A) x.
//! The measurement fixes the range-space part, the network fills in the null space, and a
//! DDIM-like step re-noises the result.

use crate::chain::check_eta;
use crate::{
    ChainOptions, Denoiser, Knobs, Observer, Problem, SampleError, Solution, Solver, Step,
    StepRule, solve_from_noise,
};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tweedie_core::diffusion::eps_from_x0;
use tweedie_core::{NoiseSource, Transition};

/// DDNM's η in the official code: `--eta` defaults to 0.85 (`main.py`), the value the
/// simplified sampler first hard-coded (`eta = 0.85`).
const DEFAULT_ETA: f64 = 0.85;

/// DDNM (Wang et al., ICLR 2023), which becomes DDNM+ by itself when the problem's σ > 0.
/// It follows the official code (`wyhuai/DDNM`, `functions/svd_ddnm.py`:
/// `ddnm_diffusion`, and `ddnm_plus_diffusion` with `Lambda`/`Lambda_noise` of
/// `functions/svd_operators.py`) with every singular value of A taken as 1, which is exact
/// for masks (the official simplified, SVD-free sampler assumes the same). From
/// x_T ~ N(0, I), each transition t → s, with a = √ᾱ_s, σ_t = √(1 − ᾱ_s):
///
/// 1. x̂0 = Tweedie(x_t) (clamped when the chain clips), ε̂ = (x_t − √ᾱ_t x̂0)/√(1 − ᾱ_t)
///    (the network's ε when nothing is clamped);
/// 2. range–null correction x̂0' = x̂0 − λ_t A⁺(A x̂0 − y) (A⁺ = the operator's
///    `pseudo_inverse`);
/// 3. x_s = a x̂0' + n, where n = σ_t (η z + √(1 − η²) ε̂) is DDIM-like noise, z ~ N(0, I).
///
/// σ = 0 (DDNM): λ_t = 1, so A x̂0' = A A⁺ y (= y for a mask, whose observed pixels are then
/// y exactly), and n as above everywhere.
///
/// σ > 0 (DDNM+): with κ = a σ (the noise y leaves in a x̂0'; σ in the [−1, 1] scale, the
/// official code's `2 * sigma_y`), in the range space of Aᵀ (P = A⁺A):
/// - σ_t ≥ κ: λ_t = 1 and the range part of n is √(σ_t² − κ²) z (y's noise makes up the rest);
/// - σ_t < κ: λ_t = σ_t √(1 − η²)/κ and the range part of n is σ_t η z;
///
/// the null-space part of n stays σ_t (η z + √(1 − η²) ε̂). So x_s = a x̂0' + n + P(n_range − n).
/// On the last transition (σ_t = 0) that leaves x̂0' = x̂0 (λ_t = 0), as in the official code.
///
/// Taking the singular values as 1 needs A⁺ to be well conditioned (masks and box SR here;
/// the official simplified sampler offers only such operators). For a blur, A⁺ divides y's
/// noise by the small singular values, which the SVD sampler tempers per singular value and
/// this one cannot (the operators offer no SVD): on an 8×8 Gaussian blur (5×5, 1 px) with
/// σ = 0.05 the squared error of its batch mean is ~6000 times the Monte-Carlo error, DiffPIR's
/// about 1. Use DiffPIR or DPS for noisy deblurring.
///
/// η is this struct's `eta` unless the chain's `eta` is set (`ChainOptions::eta`, the
/// command line's `--eta`), which then overrides it: DDNM's step is always this DDIM-like one,
/// and its η is the share η σ_t of fresh noise (not DDIM's σ = η √β̃). The chain's
/// `variance` is not used. Snapshots and observers see x̂0'. The official configs' time-travel
/// (`travel_length = 1`, `travel_repeat = 1`) is off, and is left out here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ddnm {
    /// η ∈ [0, 1]: fresh noise η σ_t z plus √(1 − η²) σ_t ε̂ in the re-noising.
    pub eta: f64,
}

impl Default for Ddnm {
    fn default() -> Self {
        Self { eta: DEFAULT_ETA }
    }
}

impl Ddnm {
    fn unit_interval(name: &'static str, eta: f64) -> Result<f64, SampleError> {
        if (0.0..=1.0).contains(&eta) {
            Ok(eta)
        } else {
            Err(SampleError::invalid(name, eta, "must lie in [0, 1]"))
        }
    }
}

impl Solver for Ddnm {
    const TITLE: &'static str = "DDNM";
    const ALIASES: &'static [&'static str] = &["ddnm+", "ddnm-plus"];

    /// η = 0.85 (the official `--eta` default); no knob sets it here: the chain's `eta`
    /// overrides it when the chain runs (see [`Ddnm`]).
    fn configure(_knobs: &Knobs, _notes: &mut Vec<String>) -> Result<Self, SampleError> {
        Ok(Ddnm::default())
    }

    fn summary(&self) -> String {
        format!("η={}", self.eta)
    }

    fn solve(
        &self,
        den: &Denoiser,
        problem: &Problem,
        shape: [usize; 4],
        chain: &ChainOptions,
        noise: &mut NoiseSource,
        observer: &mut Observer,
    ) -> Result<Solution, SampleError> {
        check_eta(chain)?;
        problem.check()?;
        let eta = Ddnm::unit_interval("eta", chain.eta.unwrap_or(self.eta))?;
        let mut rule = DdnmRule {
            eta,
            problem,
            clip: chain.clip_x0,
        };
        solve_from_noise(&mut rule, den, problem, shape, chain, noise, observer)
    }
}

/// DDNM / DDNM+ as a step object.
struct DdnmRule<'p> {
    eta: f64,
    problem: &'p Problem<'p>,
    clip: bool,
}

impl StepRule for DdnmRule<'_> {
    fn step(
        &mut self,
        den: &Denoiser,
        x_t: Tensor<4>,
        tr: &Transition,
        noise: &mut NoiseSource,
    ) -> Step {
        let (op, y, sigma, eta) = (self.problem.op, &self.problem.y, self.problem.sigma, self.eta);
        let x0_hat = den.predict(x_t.clone(), tr, self.clip, false).x0_hat;
        let eps_hat = eps_from_x0(x_t, x0_hat.clone(), tr.alpha_bar_t);
        let a = tr.alpha_bar_s.sqrt();
        let sigma_t = (1.0 - tr.alpha_bar_s).sqrt();
        let kappa = a * sigma;
        let plus = sigma > 0.0;
        let lambda_t = if !plus || sigma_t >= kappa {
            1.0
        } else {
            sigma_t * (1.0 - eta * eta).sqrt() / kappa
        };
        let residual = op.forward(x0_hat.clone()) - y.clone();
        let x0_hat = x0_hat.clone() - op.pseudo_inverse(residual).mul_scalar(lambda_t);
        if sigma_t == 0.0 {
            // The last transition: x_0 = x̂0'.
            return Step {
                x: x0_hat.clone(),
                x0_hat,
            };
        }
        let z = noise.normal_like(&x0_hat);
        let n = z.clone().mul_scalar(eta * sigma_t) + eps_hat.mul_scalar((1.0 - eta * eta).sqrt() * sigma_t);
        let mut x = x0_hat.clone().mul_scalar(a) + n.clone();
        if plus {
            let range_scale = if sigma_t >= kappa {
                (sigma_t * sigma_t - kappa * kappa).sqrt()
            } else {
                eta * sigma_t
            };
            let diff = z.mul_scalar(range_scale) - n;
            x = x + op.pseudo_inverse(op.forward(diff));
        }
        Step { x, x0_hat }
    }
}
