//! The one driver every sampler runs on: a sampler is a [`StepRule`] (one transition
//! x_t → x_s), and [`drive`] owns the chain, the divergence check, the snapshots and the
//! observer (candle's scheduler/step split; k-diffusion's callback with x and x̂0).

use crate::chain::{
    ChainOptions, Prediction, SampleError, SampleOutput, Snapshot, StepInfo, predict,
};
use crate::solver::Solution;
use burn::tensor::Tensor;
use tweedie_core::{EpsModel, NoiseSource, Schedule, Transition};
use tweedie_operators::Operator;

/// The prior every sampler evaluates: the ε-network and its noise schedule.
#[derive(Clone, Copy)]
pub struct Denoiser<'a> {
    /// ε_θ(x_t, t).
    pub model: &'a dyn EpsModel,
    /// The forward process the model was trained on.
    pub schedule: &'a Schedule,
}

impl<'a> Denoiser<'a> {
    /// Pairs a model with its schedule.
    pub fn new(model: &'a dyn EpsModel, schedule: &'a Schedule) -> Self {
        Self { model, schedule }
    }

    /// One model evaluation at `tr.t`: Tweedie's x̂0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t (clamped to
    /// [−1, 1] if `clip`) and, with `want_variance`, the variance output (see [`predict`]).
    pub fn predict(
        &self,
        x_t: Tensor<4>,
        tr: &Transition,
        clip: bool,
        want_variance: bool,
    ) -> Prediction {
        predict(self.model, self.schedule, x_t, tr, clip, want_variance)
    }
}

/// An inverse problem y = A(x) + σ n: the operator, the measurement and its noise level
/// (σ in the [−1, 1] image scale), which travel together.
#[derive(Clone)]
pub struct Problem<'a> {
    /// The measurement operator A.
    pub op: &'a dyn Operator,
    /// The measurement y `[B, C, h, w]` (the operator's output size).
    pub y: Tensor<4>,
    /// The noise level σ of y.
    pub sigma: f64,
}

impl<'a> Problem<'a> {
    /// y = A(x) + σ n, measured with `op`.
    pub fn new(op: &'a dyn Operator, y: Tensor<4>, sigma: f64) -> Self {
        Self { op, y, sigma }
    }

    /// Checks σ (finite, ≥ 0).
    pub fn check(&self) -> Result<(), SampleError> {
        if !(self.sigma >= 0.0 && self.sigma.is_finite()) {
            return Err(SampleError::invalid(
                "sigma",
                self.sigma,
                "must be finite and ≥ 0",
            ));
        }
        Ok(())
    }
}

/// What one transition returns: the new state and the x̂0 it was computed from.
#[derive(Debug, Clone)]
pub struct Step {
    /// x_s, the state after the transition.
    pub x: Tensor<4>,
    /// The x̂0 estimate of the step (after any data consistency), for snapshots and observers.
    pub x0_hat: Tensor<4>,
}

/// A sampler as a step object: the transition x_t → x_s of one link of the chain. The
/// caller ([`drive`]) owns the loop.
pub trait StepRule {
    /// Runs the transition `tr` (from `tr.t` to `tr.s`) on `x_t`, drawing from `noise`.
    fn step(
        &mut self,
        den: &Denoiser,
        x_t: Tensor<4>,
        tr: &Transition,
        noise: &mut NoiseSource,
    ) -> Step;
}

/// What an observer sees after each step (k-diffusion's callback `{x, i, sigma, denoised}`).
pub struct StepView<'t> {
    /// Step number, total and timestep.
    pub info: StepInfo,
    /// The state x_s after the step.
    pub x: &'t Tensor<4>,
    /// The step's x̂0.
    pub x0_hat: &'t Tensor<4>,
}

/// A callback that sees each step's state and x̂0.
type ViewFn<'a> = Box<dyn FnMut(&StepView) + 'a>;

/// Hooks called after every step: progress (the CLI draws a bar with it) and, for figures or
/// diagnostics, the state and x̂0 themselves.
#[derive(Default)]
pub struct Observer<'a> {
    progress: Option<Box<dyn FnMut(StepInfo) + 'a>>,
    view: Option<ViewFn<'a>>,
}

impl<'a> Observer<'a> {
    /// An observer that calls `f` with the progress after each step.
    pub fn with_progress(f: impl FnMut(StepInfo) + 'a) -> Self {
        Self {
            progress: Some(Box::new(f)),
            view: None,
        }
    }

    /// An observer that calls `f` with x_s and x̂0 after each step.
    pub fn with_view(f: impl FnMut(&StepView) + 'a) -> Self {
        Self {
            progress: None,
            view: Some(Box::new(f)),
        }
    }

    pub(crate) fn report(&mut self, view: &StepView) {
        if let Some(f) = self.progress.as_mut() {
            f(view.info);
        }
        if let Some(f) = self.view.as_mut() {
            f(view);
        }
    }
}

/// A state with any |x| above this has blown up: images lie in [−1, 1] and
/// x_t = √ᾱ_t x0 + √(1 − ᾱ_t) z stays within a few units (|z| > 10 has probability < 1e-22 per
/// value), so 1000 leaves room for any guidance that still converges.
pub const DIVERGENCE_BOUND: f64 = 1e3;

/// Runs `rule` over every transition of `chain`, starting from `x` = `x_{chain[0].t}`: after each
/// step the state is checked (NaN/Inf or |x| > [`DIVERGENCE_BOUND`] stops the chain with
/// [`SampleError::Diverged`] naming the step), x̂0 is kept every `snapshot_every` steps (0 =
/// never; the last step is always kept when > 0), and the observer is told.
pub fn drive(
    rule: &mut dyn StepRule,
    den: &Denoiser,
    mut x: Tensor<4>,
    chain: &[Transition],
    snapshot_every: usize,
    noise: &mut NoiseSource,
    observer: &mut Observer,
) -> Result<SampleOutput, SampleError> {
    let total = chain.len();
    let mut snapshots = Vec::new();
    for (i, tr) in chain.iter().enumerate() {
        let step = rule.step(den, x, tr, noise);
        x = step.x;
        let number = i + 1;
        check_bounded(&x, number, total, tr.t)?;
        if snapshot_every > 0 && (number.is_multiple_of(snapshot_every) || number == total) {
            snapshots.push(Snapshot {
                t: tr.t,
                x0_hat: step.x0_hat.clone(),
            });
        }
        observer.report(&StepView {
            info: StepInfo {
                step: number,
                total,
                t: tr.t,
            },
            x: &x,
            x0_hat: &step.x0_hat,
        });
    }
    Ok(SampleOutput { x0: x, snapshots })
}

/// Runs `rule` over the whole (strided) chain from x_T ~ N(0, I) of `shape`, drawn from
/// `noise`, and returns the output with the initialisation shown for `problem`
/// ([`Operator::initialise`]: A⁺y, or y for blurs). DPS, Score-ALD, DiffPIR and DDNM are this
/// with their own step; a new method's `Solver::solve` checks its settings and calls it.
pub fn solve_from_noise(
    rule: &mut dyn StepRule,
    den: &Denoiser,
    problem: &Problem,
    shape: [usize; 4],
    chain: &ChainOptions,
    noise: &mut NoiseSource,
    observer: &mut Observer,
) -> Result<Solution, SampleError> {
    let transitions = den.schedule.chain(den.schedule.num_steps(), chain.steps)?;
    let x_t = noise.normal(shape, &problem.y.device());
    let output = drive(
        rule,
        den,
        x_t,
        &transitions,
        chain.snapshot_every,
        noise,
        observer,
    )?;
    Ok(Solution {
        output,
        initialisation: problem.op.initialise(problem.y.clone()),
    })
}

pub(crate) fn check_bounded(
    x: &Tensor<4>,
    step: usize,
    total: usize,
    t: usize,
) -> Result<(), SampleError> {
    let max = tweedie_core::tensor::max_abs(x);
    if max > DIVERGENCE_BOUND {
        return Err(SampleError::Diverged {
            step,
            total,
            t,
            what: if max.is_finite() {
                format!(
                    "max |x| = {max:.3e} exceeds {DIVERGENCE_BOUND:e} (images lie in [−1, 1]; x_t = √ᾱ x0 + √(1 − ᾱ) z stays within a few units)"
                )
            } else {
                "the state contains NaN or Inf".into()
            },
        });
    }
    Ok(())
}
