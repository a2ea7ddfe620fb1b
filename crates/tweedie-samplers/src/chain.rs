//! Pieces shared by every sampler: options, the unguided reverse step, observation hooks.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tweedie_core::diffusion::{self, StepVariance};
use tweedie_core::{EpsModel, NoiseSource, Schedule, Transition};

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
    #[error("invalid {name} = {value}: {reason}")]
    Invalid {
        /// Parameter name.
        name: &'static str,
        /// Value.
        value: String,
        /// Valid range.
        reason: String,
    },
}

impl SampleError {
    pub(crate) fn invalid(
        name: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        SampleError::Invalid {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<tweedie_core::CoreError> for SampleError {
    fn from(e: tweedie_core::CoreError) -> Self {
        match e {
            tweedie_core::CoreError::InvalidParameter {
                name,
                value,
                reason,
            } => SampleError::Invalid {
                name,
                value,
                reason,
            },
            other => SampleError::Invalid {
                name: "input",
                value: String::new(),
                reason: other.to_string(),
            },
        }
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

/// Hooks called after every step: progress reporting (the CLI draws a bar with it).
#[derive(Default)]
pub struct Observer<'a> {
    progress: Option<Box<dyn FnMut(StepInfo) + 'a>>,
}

impl<'a> Observer<'a> {
    /// An observer that calls `f` after each step.
    pub fn with_progress(f: impl FnMut(StepInfo) + 'a) -> Self {
        Self {
            progress: Some(Box::new(f)),
        }
    }

    pub(crate) fn report(&mut self, info: StepInfo) {
        if let Some(f) = self.progress.as_mut() {
            f(info);
        }
    }
}

/// A state with any |x| above this has blown up: images lie in [−1, 1] and
/// x_t = √ᾱ_t x0 + √(1 − ᾱ_t) z stays within a few units (|z| > 10 has probability < 1e-22 per
/// value), so 1000 leaves room for any guidance that still converges.
pub const DIVERGENCE_BOUND: f64 = 1e3;

/// Bookkeeping of a running chain: divergence check, progress, snapshots.
pub(crate) struct Run<'o, 'a> {
    pub total: usize,
    step: usize,
    every: usize,
    pub snapshots: Vec<Snapshot>,
    observer: &'o mut Observer<'a>,
}

impl<'o, 'a> Run<'o, 'a> {
    pub fn new(total: usize, opts: &ChainOptions, observer: &'o mut Observer<'a>) -> Self {
        Self {
            total,
            step: 0,
            every: opts.snapshot_every,
            snapshots: Vec::new(),
            observer,
        }
    }

    /// Records a finished step; errors if `x` is not finite.
    pub fn after_step(
        &mut self,
        tr: &Transition,
        x: &Tensor<4>,
        x0_hat: &Tensor<4>,
    ) -> Result<(), SampleError> {
        self.step += 1;
        let max = tweedie_core::tensor::max_abs(x);
        if max > DIVERGENCE_BOUND {
            return Err(SampleError::Diverged {
                step: self.step,
                total: self.total,
                t: tr.t,
                what: if max.is_finite() {
                    format!(
                        "max |x| = {max:.3e} exceeds {DIVERGENCE_BOUND:e} (images lie in [−1, 1]; x_t = √ᾱ x0 + √(1 − ᾱ) z stays within a few units)"
                    )
                } else {
                    "the state contains NaN or Inf".into()
                },
            });
        }
        if self.every > 0 && (self.step.is_multiple_of(self.every) || self.step == self.total) {
            self.snapshots.push(Snapshot {
                t: tr.t,
                x0_hat: x0_hat.clone(),
            });
        }
        self.observer.report(StepInfo {
            step: self.step,
            total: self.total,
            t: tr.t,
        });
        Ok(())
    }

    pub fn finish(self, x0: Tensor<4>) -> SampleOutput {
        SampleOutput {
            x0,
            snapshots: self.snapshots,
        }
    }
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

/// Runs the unguided reverse chain from `x` = x_{t_start} down to x_0 (`opts.steps` steps at
/// most). `generate` and `sdedit` are this chain from x_T ~ N(0, I) and from a noised image.
pub fn reverse_chain(
    model: &dyn EpsModel,
    schedule: &Schedule,
    mut x: Tensor<4>,
    t_start: usize,
    opts: &ChainOptions,
    noise: &mut NoiseSource,
    observer: &mut Observer,
) -> Result<SampleOutput, SampleError> {
    check_eta(opts)?;
    let chain = schedule.chain(t_start, opts.steps.min(t_start))?;
    let mut run = Run::new(chain.len(), opts, observer);
    for tr in &chain {
        let (x_s, x0_hat) = ancestral_step(model, schedule, x, tr, opts, noise);
        x = x_s;
        run.after_step(tr, &x, &x0_hat)?;
    }
    Ok(run.finish(x))
}
