//! Task 6: Diffusion Posterior Sampling — the gradient of ‖A(x̂0(x_t)) − y‖² flows through
//! the model into x_t (burn-autodiff).

use crate::chain::check_eta;
use crate::solver::non_negative;
use crate::{
    ChainOptions, Denoiser, Knobs, Observer, Preset, Problem, SampleError, Solution, Solver,
    Step, StepRule, solve_from_noise, reverse_step,
};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tweedie_core::diffusion::StepVariance;
use tweedie_core::{NoiseSource, Transition};
use tweedie_operators::{Operator, OperatorSpec};

/// How the DPS gradient step is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DpsStep {
    /// The sheet's default: ζ_t = ζ/‖∇_{x_t}‖A(x̂0) − y‖²‖ (per batch item), i.e. a step of
    /// length ζ along the gradient of the squared residual.
    Normalized {
        /// ζ.
        zeta: f64,
    },
    /// The DPS reference code (`condition_methods.py`, `PosteriorSampling`):
    /// x_{t−1} = x' − ζ ∇_{x_t}‖y − A(x̂0)‖ (unsquared Euclidean norm per item, fixed ζ; the
    /// DPS configs use `scale` ζ = 0.5 for inpainting and 0.3 for Gaussian blur, motion blur
    /// and ×4 super-resolution, and apply it unchanged to whatever number of steps is run).
    Residual {
        /// ζ.
        zeta: f64,
    },
}

/// The DPS step rule without its ζ (a command-line knob).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DpsRule {
    /// x −= ζ ∇‖A(x̂0) − y‖ (the DPS code).
    Residual,
    /// x −= ζ ∇‖A(x̂0) − y‖² / ‖∇‖A(x̂0) − y‖²‖ (the sheet).
    Normalized,
}

impl DpsStep {
    /// ζ.
    pub fn zeta(&self) -> f64 {
        match *self {
            DpsStep::Normalized { zeta } | DpsStep::Residual { zeta } => zeta,
        }
    }

    /// The same rule with another ζ.
    pub fn with_zeta(self, zeta: f64) -> Self {
        match self {
            DpsStep::Normalized { .. } => DpsStep::Normalized { zeta },
            DpsStep::Residual { .. } => DpsStep::Residual { zeta },
        }
    }

    /// The rule of `rule` with ζ.
    pub fn new(rule: DpsRule, zeta: f64) -> Self {
        match rule {
            DpsRule::Residual => DpsStep::Residual { zeta },
            DpsRule::Normalized => DpsStep::Normalized { zeta },
        }
    }
}

/// The DPS configs' `scale` for an operator: 0.5 for inpainting (boxes, random pixels, masks),
/// 0.3 for Gaussian blur, motion blur and super-resolution (and anything else).
pub fn dps_config_scale(op: &OperatorSpec) -> f64 {
    if op.is_mask() { 0.5 } else { 0.3 }
}

/// Diffusion Posterior Sampling (Chung et al., ICLR 2023; Task 6): x_T ~ N(0, I), then
/// [`dps_step`] at every transition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Dps {
    /// The guidance step.
    pub step: DpsStep,
}

impl Solver for Dps {
    const TITLE: &'static str = "DPS";

    /// Preset `dps`: the residual rule with the configs' ζ (0.5 inpainting, 0.3 otherwise);
    /// preset `sheet`: the normalised rule with ζ = 1. `zeta` and `dps_rule` override;
    /// `scale_zeta_with_stride` multiplies ζ by T/steps (with a note).
    fn configure(knobs: &Knobs, notes: &mut Vec<String>) -> Result<Self, SampleError> {
        let (rule, zeta) = match knobs.preset {
            Preset::Sheet => (DpsRule::Normalized, 1.0),
            Preset::Dps => (DpsRule::Residual, dps_config_scale(&knobs.op)),
        };
        let mut zeta = non_negative("zeta", knobs.zeta.unwrap_or(zeta))?;
        if knobs.scale_zeta_with_stride && knobs.steps > 0 && knobs.steps < knobs.timesteps {
            let scaled = zeta * knobs.timesteps as f64 / knobs.steps as f64;
            notes.push(format!(
                "DPS ζ = {zeta} × {}/{} = {scaled} (scaled with the stride)",
                knobs.timesteps, knobs.steps
            ));
            zeta = scaled;
        }
        Ok(Dps {
            step: DpsStep::new(knobs.dps_rule.unwrap_or(rule), zeta),
        })
    }

    fn summary(&self) -> String {
        match self.step {
            DpsStep::Residual { zeta } => format!("residual ζ={zeta}"),
            DpsStep::Normalized { zeta } => format!("normalized ζ={zeta}"),
        }
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
        non_negative("zeta", self.step.zeta())?;
        let mut rule = DpsSampler {
            problem,
            step: self.step,
            chain,
        };
        solve_from_noise(&mut rule, den, problem, shape, chain, noise, observer)
    }
}

/// DPS as a step object: [`dps_step`] at every transition.
pub struct DpsSampler<'p> {
    /// The inverse problem.
    pub problem: &'p Problem<'p>,
    /// The guidance step.
    pub step: DpsStep,
    /// The chain's settings.
    pub chain: &'p ChainOptions,
}

impl StepRule for DpsSampler<'_> {
    fn step(
        &mut self,
        den: &Denoiser,
        x_t: Tensor<4>,
        tr: &Transition,
        noise: &mut NoiseSource,
    ) -> Step {
        let (x, x0_hat) = dps_step(den, self.problem, x_t, tr, self.step, self.chain, noise);
        Step { x, x0_hat }
    }
}

/// ∇_x ‖A(x) − y‖² (summed over the batch, so each item gets its own gradient), by autodiff.
pub fn measurement_gradient(op: &dyn Operator, x: Tensor<4>, y: Tensor<4>) -> Tensor<4> {
    let x = x.without_autodiff().autodiff().require_grad();
    let loss = (op.forward(x.clone()) - y).powf_scalar(2.0).sum();
    let grads = loss.backward();
    x.grad(&grads).expect("x requires grad")
}

/// Per-item squared residual ‖A(x̂0) − y‖², `[B]`.
fn residual_sq(op: &dyn Operator, x0_hat: Tensor<4>, y: Tensor<4>) -> Tensor<1> {
    let [b, ..] = x0_hat.dims();
    (op.forward(x0_hat) - y)
        .powf_scalar(2.0)
        .reshape([b as i32, -1])
        .sum_dim(1)
        .reshape([b])
}

/// One DPS transition x_t → x_s: x̂0 = Tweedie(x_t) with the model tracked by autodiff,
/// x' = the ancestral step ([`reverse_step`], learned σ when the chain asks for it),
/// x_s = x' − ζ_t ∇_{x_t}‖A(x̂0) − y‖^p (see [`DpsStep`]). Returns (x_s, x̂0).
///
/// This is the official DPS code's `p_sample` followed by `PosteriorSampling.conditioning`
/// when `step` is [`DpsStep::Residual`] and the chain uses learned variance.
pub fn dps_step(
    den: &Denoiser,
    problem: &Problem,
    x_t: Tensor<4>,
    tr: &Transition,
    step: DpsStep,
    chain: &ChainOptions,
    noise: &mut NoiseSource,
) -> (Tensor<4>, Tensor<4>) {
    let b = x_t.dims()[0];
    let learned = chain.eta.is_none() && chain.variance == StepVariance::Learned;
    let x_track = x_t.clone().autodiff().require_grad();
    let pred = den.predict(x_track.clone(), tr, chain.clip_x0, learned);
    let sq = residual_sq(problem.op, pred.x0_hat.clone(), problem.y.clone());
    let x0_hat = pred.x0_hat.without_autodiff();
    let variance = pred.variance.map(|v| v.without_autodiff());
    let x_prime = reverse_step(x_t, x0_hat.clone(), variance, tr, chain, noise);
    let (loss, normalise, zeta) = match step {
        DpsStep::Normalized { zeta } => (sq.sum(), true, zeta),
        DpsStep::Residual { zeta } => (sq.sqrt().sum(), false, zeta),
    };
    let grad = x_track.grad(&loss.backward()).expect("x_t requires grad");
    let step = if normalise {
        let norms = grad
            .clone()
            .powf_scalar(2.0)
            .reshape([b as i32, -1])
            .sum_dim(1)
            .sqrt()
            .add_scalar(1e-12);
        grad / norms.reshape([b, 1, 1, 1])
    } else {
        grad
    };
    (x_prime - step.mul_scalar(zeta), x0_hat)
}
