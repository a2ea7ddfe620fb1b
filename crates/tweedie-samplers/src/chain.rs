//! Pieces shared by every sampler: options, the unguided reverse step, observation hooks.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tweedie_core::diffusion::{self, StepVariance};
use tweedie_core::{EpsModel, InvalidParameter, NoiseSource, Schedule, Transition};

use crate::driver::{Denoiser, Observer, Step, StepRule, drive};

/// Options of a reverse chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainOptions {
    /// Number of reverse steps (strided evenly when fewer than the starting timestep).
    pub steps: usize,
    /// Injected variance of the ancestral step (the sheet uses β_t).
    pub variance: StepVariance,
    /// `Some(η)`: use the DDIM step with stochasticity η instead of the ancestral step.
    pub eta: Option<f64>,
    /// Clamp x̂0 to [−1, 1] before the step (the data range).
    pub clip_x0: bool,
    /// Keep an x̂0 snapshot every this many steps (0 = none); the last step is always kept.
    pub snapshot_every: usize,
}

impl Default for ChainOptions {
    fn default() -> Self {
        Self {
            steps: 1000,
            variance: StepVariance::Beta,
            eta: None,
            clip_x0: true,
            snapshot_every: 0,
        }
    }
}

/// Errors of a sampler.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The state became NaN/Inf, or left every range a reverse chain can produce.
    #[error(
        "sampler diverged at step {step} of {total} (t = {t}): {what}; lower the guidance scale or check the model"
    )]
    Diverged {
        /// 1-based step number.
        step: usize,
        /// Total steps.
        total: usize,
        /// Timestep of that step.
        t: usize,
        /// What was seen.
        what: String,
    },
    /// A parameter was out of range.
    #[error(transparent)]
    Invalid(#[from] InvalidParameter),
    /// A schedule or shape error from the core crate (e.g. a timestep past T).
    #[error(transparent)]
    Core(#[from] tweedie_core::CoreError),
}

impl SampleError {
    pub(crate) fn invalid(
        name: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        InvalidParameter::new(name, value, reason).into()
    }
}

/// Progress of one completed step.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    /// 1-based step number.
    pub step: usize,
    /// Total number of steps.
    pub total: usize,
    /// The timestep just processed.
    pub t: usize,
}

/// An x̂0 estimate kept for figures.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Timestep at which x̂0 was predicted.
    pub t: usize,
    /// The estimate `[B, C, H, W]`.
    pub x0_hat: Tensor<4>,
}

/// What a sampler returns.
#[derive(Debug, Clone)]
pub struct SampleOutput {
    /// The final sample x_0.
    pub x0: Tensor<4>,
    /// x̂0 snapshots (see [`ChainOptions::snapshot_every`]).
    pub snapshots: Vec<Snapshot>,
}

/// Tweedie's estimate x̂0 at a transition's timestep (clamped to [−1, 1] if `clip`).
pub fn predict_x0(
    model: &dyn EpsModel,
    schedule: &Schedule,
    x_t: Tensor<4>,
    tr: &Transition,
    clip: bool,
) -> Tensor<4> {
    predict(model, schedule, x_t, tr, clip, false).x0_hat
}

/// What one network evaluation gives a reverse step.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Tweedie's x̂0 (clamped to [−1, 1] when the chain clips).
    pub x0_hat: Tensor<4>,
    /// The network's variance output v (see [`diffusion::learned_sigma`]), when asked for and
    /// the model has one.
    pub variance: Option<Tensor<4>>,
}

/// One model evaluation at `tr.t`: x̂0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t (clamped if `clip`) and,
/// with `want_variance`, the model's variance output.
pub fn predict(
    model: &dyn EpsModel,
    schedule: &Schedule,
    x_t: Tensor<4>,
    tr: &Transition,
    clip: bool,
    want_variance: bool,
) -> Prediction {
    let level = schedule.level(tr.t);
    let (eps, variance) = if want_variance {
        model.predict_eps_and_variance(x_t.clone(), level)
    } else {
        (model.predict_eps(x_t.clone(), level), None)
    };
    let x0 = diffusion::x0_from_eps(x_t, eps, level.alpha_bar);
    Prediction {
        x0_hat: if clip { x0.clamp(-1.0, 1.0) } else { x0 },
        variance,
    }
}

/// The unguided reverse step x_t → x_s given x̂0: the sheet's x̂0-form ancestral step with
/// σ from `opts.variance` (the learned σ of [`diffusion::learned_sigma`] when `variance` holds
/// the network's output and `opts.variance` is `Learned`), or DDIM when `opts.eta` is set.
/// z = 0 on the last step (no noise is drawn there).
pub fn reverse_step(
    x_t: Tensor<4>,
    x0_hat: Tensor<4>,
    variance: Option<Tensor<4>>,
    tr: &Transition,
    opts: &ChainOptions,
    noise: &mut NoiseSource,
) -> Tensor<4> {
    let z = if tr.is_last() {
        x_t.zeros_like()
    } else {
        noise.normal_like(&x_t)
    };
    match (opts.eta, opts.variance, variance) {
        (Some(eta), ..) => diffusion::step_ddim(x_t, x0_hat, z, tr, eta),
        (None, StepVariance::Learned, Some(v)) => {
            diffusion::posterior_mean(x_t, x0_hat, tr) + z * diffusion::learned_sigma(tr, v)
        }
        (None, variance, _) => {
            diffusion::step_x0_form(x_t, x0_hat, z, tr, diffusion::step_sigma(tr, variance))
        }
    }
}

/// One unguided ancestral step x_t → x_s (guided-diffusion's `p_sample`): evaluates the
/// model, then [`reverse_step`]. Returns (x_s, x̂0).
pub fn ancestral_step(
    model: &dyn EpsModel,
    schedule: &Schedule,
    x_t: Tensor<4>,
    tr: &Transition,
    opts: &ChainOptions,
    noise: &mut NoiseSource,
) -> (Tensor<4>, Tensor<4>) {
    let learned = opts.eta.is_none() && opts.variance == StepVariance::Learned;
    let p = predict(model, schedule, x_t.clone(), tr, opts.clip_x0, learned);
    let x_s = reverse_step(x_t, p.x0_hat.clone(), p.variance, tr, opts, noise);
    (x_s, p.x0_hat)
}

pub(crate) fn check_eta(opts: &ChainOptions) -> Result<(), SampleError> {
    if let Some(eta) = opts.eta
        && !(0.0..=1.0).contains(&eta)
    {
        return Err(SampleError::invalid("eta", eta, "must lie in [0, 1]"));
    }
    Ok(())
}

/// The unguided ancestral chain as a step object: [`ancestral_step`] at every transition.
#[derive(Debug, Clone)]
pub struct Ancestral {
    /// The chain's settings.
    pub opts: ChainOptions,
}

impl StepRule for Ancestral {
    fn step(
        &mut self,
        den: &Denoiser,
        x_t: Tensor<4>,
        tr: &Transition,
        noise: &mut NoiseSource,
    ) -> Step {
        let (x, x0_hat) = ancestral_step(den.model, den.schedule, x_t, tr, &self.opts, noise);
        Step { x, x0_hat }
    }
}

/// Runs the unguided reverse chain from `x` = x_{t_start} down to x_0 (`opts.steps` steps at
/// most). `generate` and `sdedit` are this chain from x_T ~ N(0, I) and from a noised image.
pub fn reverse_chain(
    den: &Denoiser,
    x: Tensor<4>,
    t_start: usize,
    opts: &ChainOptions,
    noise: &mut NoiseSource,
    observer: &mut Observer,
) -> Result<SampleOutput, SampleError> {
    check_eta(opts)?;
    let chain = den.schedule.chain(t_start, opts.steps.min(t_start))?;
    let mut rule = Ancestral { opts: opts.clone() };
    drive(
        &mut rule,
        den,
        x,
        &chain,
        opts.snapshot_every,
        noise,
        observer,
    )
}
