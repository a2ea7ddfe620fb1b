//! DiffPIR (Zhu et al., "Denoising Diffusion Models for Plug-and-Play Image Restoration",
//! CVPR 2023 workshops): half-quadratic splitting inside the reverse chain. The network
//! denoises x_t into x̂0, a proximal data step pulls x̂0 towards the measurement, and the
//! chain re-noises the result with a mix of the implied noise ε̂ and fresh noise.

use crate::chain::check_eta;
use crate::{
    ChainOptions, Denoiser, Knobs, Observer, Problem, SampleError, Solution, Solver, Step,
    StepRule, solve_from_noise,
};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tweedie_core::diffusion::eps_from_x0;
use tweedie_core::{NoiseSource, Transition};
use tweedie_operators::OperatorSpec;

/// The smallest measurement noise DiffPIR's data weight uses, in our [−1, 1] scale: the
/// official code clamps `sigma = max(0.001, noise_level_img)` with σ in [0, 1] units, i.e.
/// 0.002 here. It keeps ρ_t > 0 (and γ = 1/ρ_t finite) for noise-free measurements.
const MIN_SIGMA: f64 = 0.002;

/// DiffPIR (Zhu et al., CVPR 2023 workshops), as in the official code
/// (`yuanzhi-zhu/DiffPIR`, `main_ddpir*.py`, `model_out_type = 'pred_xstart'`). From
/// x_T ~ N(0, I), each transition t → s of the chain:
///
/// 1. x̂0 = Tweedie(x_t) (clamped when the chain clips);
/// 2. data step: x̂0' = argmin_x ‖y − A x‖² + ρ_t ‖x − x̂0‖² = `prox_l2(x̂0, y, γ = 1/ρ_t)`,
///    ρ_t = λ σ_n²/σ̄_t², σ̄_t² = (1 − ᾱ_t)/ᾱ_t, where σ_n = max(σ, 0.002)/2 is the problem's
///    noise level in [0, 1] units, as the official code has it (its data step is solved in
///    [0, 1] for blur and SR and in [−1, 1] for inpainting, with σ in [0, 1] units both
///    times; ‖·‖ ratios are scale-invariant, σ_n is not). Skipped on the last transition, as
///    the official code skips it at its last timestep;
/// 3. ε̂ = (x_t − √ᾱ_t x̂0')/√(1 − ᾱ_t) and
///    x_s = √ᾱ_s x̂0' + √(1 − ζ) (√(1 − ᾱ_s − σ_η²) ε̂ + σ_η z) + √ζ √(1 − ᾱ_s) z',
///    σ_η = η √β̃ the DDIM noise of the chain's `eta` (η = 0, σ_η = 0 unless set, as in
///    the official code); on the last transition (ᾱ_s = 1) x_0 = x̂0.
///
/// The chain's `variance` is not used (ζ sets the noise). Snapshots and observers see x̂0'.
/// The official code runs a quadratic timestep sequence (`skip_type = 'quad'`) and starts
/// from a q-sample of the measurement at t = T (√ᾱ_T ≈ 0.006); here the chain is
/// [`ChainOptions::steps`] evenly strided steps from x_T ~ N(0, I).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiffPir {
    /// λ, the weight of the prior in ρ_t = λ σ_n²/σ̄_t² (> 0).
    pub lambda: f64,
    /// ζ ∈ [0, 1], the share of fresh noise in the re-noising (1: x_s = q-sample of x̂0').
    pub zeta: f64,
}

impl DiffPir {
    /// The official code's (λ, ζ) for an operator: inpainting λ = 1, ζ = 1
    /// (`main_ddpir_inpainting.py`, `configs/inpaint.yaml`); deblurring λ = 7, ζ = 0.3
    /// (`main_ddpir_deblur.py` and `main_ddpir.py` run `lambda_ · 7` and `zeta · 3` with
    /// λ = 1, ζ = 0.1); super-resolution ζ = 0.25 with λ swept over 2…12
    /// (`main_ddpir_sisr.py`), of which we take λ = 7, the middle of the sweep (the value
    /// deblurring uses). Anything else (identity) takes the deblurring values.
    pub fn defaults_for(op: &OperatorSpec) -> Self {
        let (lambda, zeta) = match op {
            OperatorSpec::InpaintBox { .. }
            | OperatorSpec::InpaintRandom { .. }
            | OperatorSpec::InpaintRandomBox { .. }
            | OperatorSpec::InpaintRandomRange { .. }
            | OperatorSpec::InpaintMask { .. } => (1.0, 1.0),
            OperatorSpec::SuperResolution { .. }
            | OperatorSpec::SuperResolutionScale { .. }
            | OperatorSpec::SuperResolutionBox { .. } => (7.0, 0.25),
            _ => (7.0, 0.3),
        };
        Self { lambda, zeta }
    }

    /// Checks λ (finite, > 0) and ζ (in [0, 1]).
    pub fn check(&self) -> Result<(), SampleError> {
        if !(self.lambda > 0.0 && self.lambda.is_finite()) {
            return Err(SampleError::invalid(
                "lambda",
                self.lambda,
                "must be finite and > 0 (ρ_t = λσ²/σ̄_t² weighs the prior in the data step)",
            ));
        }
        if !(0.0..=1.0).contains(&self.zeta) {
            return Err(SampleError::invalid("zeta", self.zeta, "must lie in [0, 1]"));
        }
        Ok(())
    }

    /// ρ_t = λ σ_n²/σ̄_t² at a transition, for the problem's noise level `sigma` ([−1, 1]
    /// scale; σ_n = max(σ, 0.002)/2).
    pub fn rho(&self, sigma: f64, tr: &Transition) -> f64 {
        let sigma_n = sigma.max(MIN_SIGMA) / 2.0;
        let sigma_bar_sq = (1.0 - tr.alpha_bar_t) / tr.alpha_bar_t;
        self.lambda * sigma_n * sigma_n / sigma_bar_sq
    }
}

impl Solver for DiffPir {
    const TITLE: &'static str = "DiffPIR";

    /// The official code's (λ, ζ) for the operator ([`DiffPir::defaults_for`]); `lambda` and
    /// `zeta` override.
    fn configure(knobs: &Knobs, _notes: &mut Vec<String>) -> Result<Self, SampleError> {
        let defaults = DiffPir::defaults_for(&knobs.op);
        let settings = DiffPir {
            lambda: knobs.lambda.unwrap_or(defaults.lambda),
            zeta: knobs.zeta.unwrap_or(defaults.zeta),
        };
        settings.check()?;
        Ok(settings)
    }

    fn summary(&self) -> String {
        format!("λ={}, ζ={}", self.lambda, self.zeta)
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
        self.check()?;
        let mut rule = DiffPirRule {
            settings: *self,
            problem,
            chain,
        };
        solve_from_noise(&mut rule, den, problem, shape, chain, noise, observer)
    }
}

/// DiffPIR as a step object.
struct DiffPirRule<'p> {
    settings: DiffPir,
    problem: &'p Problem<'p>,
    chain: &'p ChainOptions,
}

impl StepRule for DiffPirRule<'_> {
    fn step(
        &mut self,
        den: &Denoiser,
        x_t: Tensor<4>,
        tr: &Transition,
        noise: &mut NoiseSource,
    ) -> Step {
        let x0_hat = den.predict(x_t.clone(), tr, self.chain.clip_x0, false).x0_hat;
        if tr.is_last() {
            // x_0 = √ᾱ_0 x̂0 = x̂0; the official code skips the data step here.
            return Step {
                x: x0_hat.clone(),
                x0_hat,
            };
        }
        let gamma = 1.0 / self.settings.rho(self.problem.sigma, tr);
        let x0_hat = self
            .problem
            .op
            .prox_l2(x0_hat, self.problem.y.clone(), gamma);
        let eps_hat = eps_from_x0(x_t, x0_hat.clone(), tr.alpha_bar_t);
        let zeta = self.settings.zeta;
        let one_minus_s = 1.0 - tr.alpha_bar_s;
        let sigma_eta = self.chain.eta.unwrap_or(0.0) * tr.posterior_variance().sqrt();
        let dir = (one_minus_s - sigma_eta * sigma_eta).max(0.0).sqrt();
        let mut x = x0_hat.clone().mul_scalar(tr.alpha_bar_s.sqrt())
            + eps_hat.mul_scalar((1.0 - zeta).sqrt() * dir);
        if sigma_eta > 0.0 && zeta < 1.0 {
            x = x + noise
                .normal_like(&x0_hat)
                .mul_scalar((1.0 - zeta).sqrt() * sigma_eta);
        }
        if zeta > 0.0 {
            x = x + noise
                .normal_like(&x0_hat)
                .mul_scalar((zeta * one_minus_s).sqrt());
        }
        Step { x, x0_hat }
    }
}
