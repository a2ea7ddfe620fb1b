//! Arguments shared by several commands: the model and output (`Common`), the samplers'
//! settings (`SolverArgs`), and the checks they share.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use tweedie::tasks::{Knobs, Method, Preset, RestoreSettings};
use tweedie_core::Schedule;
use tweedie_core::diffusion::StepVariance;
use tweedie_samplers::{AldRule, DpsRule};

/// Options shared by every sampling command.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// `embedded` (the default face model, built into the binary from assets/; with
    /// `$TWEEDIE_ASSETS` set, the model.safetensors and model.json there), a guided-diffusion
    /// .pt/.safetensors checkpoint, or a diffusers UNet2DModel folder (config.json,
    /// scheduler_config.json and diffusion_pytorch_model.safetensors/.bin, or model_index.json
    /// with unet/ and scheduler/).
    #[arg(long, default_value = "embedded")]
    pub model: String,
    /// The guided-diffusion checkpoint's JSON config (default: beside the weights, same stem;
    /// a diffusers folder carries its own).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `cpu` (burn flex) or `wgpu` (needs a build with `--features wgpu`).
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: crate::args::BackendArg,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Noise of the reverse steps: `beta` (σ² = β_t, the problem sheet), `posterior`
    /// (σ² = β̃_t, less noise; better with few strided steps) or `learned` (the network's
    /// learned range, guided-diffusion `learned_range`; σ² = β on a model without one).
    /// Default: `beta`, or the preset's for restore, eval and report.
    #[arg(long, value_enum)]
    pub variance: Option<VarianceArg>,
}

/// `--variance`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarianceArg {
    /// σ² = β_t.
    Beta,
    /// σ² = β̃_t.
    Posterior,
    /// The network's learned range.
    Learned,
}

impl From<VarianceArg> for StepVariance {
    fn from(v: VarianceArg) -> Self {
        match v {
            VarianceArg::Beta => StepVariance::Beta,
            VarianceArg::Posterior => StepVariance::Posterior,
            VarianceArg::Learned => StepVariance::Learned,
        }
    }
}

impl Common {
    /// The `--variance` given, or σ² = β.
    pub fn variance_or_beta(&self) -> StepVariance {
        self.variance.map_or(StepVariance::Beta, Into::into)
    }
}

/// Settings of the restoration samplers, shared by `restore`, `eval` and `report`: turned
/// into the methods' [`Knobs`], from which each method configures itself.
#[derive(Args, Debug, Clone)]
pub struct SolverArgs {
    /// Sampler settings to start from: `dps` (the official DPS code: learned variance, the
    /// residual rule with ζ = 0.5 for inpainting and 0.3 otherwise, x̂0 clipped; DiffPIR and
    /// DDNM with their papers' defaults) or `sheet` (the problem sheet: σ² = β,
    /// ζ_t = ζ/‖∇‖A(x̂0) − y‖²‖ with ζ = 1). `--variance`, `--zeta`, `--lambda` and `--dps-step`
    /// override single settings.
    #[arg(long, value_enum, default_value_t = Preset::Dps)]
    pub preset: Preset,
    /// Measurement noise σ in the [−1, 1] scale.
    #[arg(long, default_value_t = 0.05)]
    pub sigma: f64,
    /// Reverse steps (1000 = the sheet's full chain; fewer = strided).
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// SDEdit starting timestep (default 500).
    #[arg(long)]
    pub t0: Option<usize>,
    /// ζ: DPS's step size (default: the preset's), DiffPIR's noise mix (default: its paper's).
    #[arg(long)]
    pub zeta: Option<f64>,
    /// λ: DiffPIR's regularisation weight (default: its paper's).
    #[arg(long)]
    pub lambda: Option<f64>,
    /// DPS step rule (default: the preset's): `residual` (DPS code, ζ∇‖A x̂0 − y‖) or
    /// `normalized` (the sheet's ζ/‖∇‖A x̂0 − y‖²‖).
    #[arg(long, value_enum)]
    pub dps_step: Option<DpsRule>,
    /// Scale DPS's ζ by 1000/steps, so that a strided chain's total guidance matches the
    /// 1000-step chain the ζ was set for (the DPS code applies its scale per step unchanged).
    #[arg(long)]
    pub scale_zeta_with_stride: bool,
    /// Score-ALD step multiplier λ (default 1).
    #[arg(long)]
    pub ald_scale: Option<f64>,
    /// Score-ALD update: `stabilised` (ours, weighted by β_t/√α_t; the default) or `sheet` (the
    /// sheet's literal 1/(2(σ² + γ_t²)) step, which diverges for σ = 0.05).
    #[arg(long, value_enum)]
    pub ald_rule: Option<AldRule>,
    /// Use DDIM steps with this η ∈ [0, 1] (0: deterministic) instead of ancestral steps
    /// (the reverse chain of every method; `--variance` then does not apply; DDNM's η).
    #[arg(long)]
    pub eta: Option<f64>,
}

/// `--backend`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendArg {
    /// burn's `flex` CPU backend (the default; no dependencies).
    #[default]
    Cpu,
    /// A GPU through wgpu (needs a build with `--features wgpu`).
    Wgpu,
    /// PyTorch's kernels through burn-tch (needs a build with `--features libtorch`).
    Libtorch,
}

impl BackendArg {
    /// The name `model::device` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendArg::Cpu => "cpu",
            BackendArg::Wgpu => "wgpu",
            BackendArg::Libtorch => "libtorch",
        }
    }
}

/// `--net`: the LPIPS backbone.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetArg {
    /// AlexNet (weights built into the binary).
    #[default]
    Alex,
    /// VGG-16 (weights from `cargo xtask fetch-weights lpips-vgg`).
    Vgg,
}

/// The command-line name of a clap value (`--preset dps` → `"dps"`).
pub fn value_name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// T of the default schedule (1000).
fn schedule_steps() -> usize {
    Schedule::linear_default().num_steps()
}

impl SolverArgs {
    /// Checks the values (steps, σ, η): call it before loading anything. Each method checks
    /// its own settings when it is configured.
    pub fn validate(&self) -> Result<()> {
        let schedule = Schedule::linear_default();
        if self.steps == 0 || self.steps > schedule.num_steps() {
            bail!("--steps must lie in 1..={}", schedule.num_steps());
        }
        if !(self.sigma >= 0.0 && self.sigma.is_finite()) {
            bail!("--sigma must be finite and ≥ 0, got {}", self.sigma);
        }
        if let Some(t0) = self.t0 {
            schedule
                .check_timestep(t0)
                .map_err(|e| anyhow::anyhow!("--t0: {e}"))?;
        }
        for (flag, value) in [
            ("--zeta", self.zeta),
            ("--lambda", self.lambda),
            ("--ald-scale", self.ald_scale),
        ] {
            if let Some(v) = value
                && !(v >= 0.0 && v.is_finite())
            {
                bail!("{flag} must be finite and ≥ 0, got {v}");
            }
        }
        check_eta(self.eta)
    }

    /// The knobs of the methods for `op`.
    pub fn knobs(&self, op: tweedie_operators::OperatorSpec) -> Knobs {
        Knobs {
            timesteps: schedule_steps(),
            zeta: self.zeta,
            lambda: self.lambda,
            t0: self.t0,
            dps_rule: self.dps_step,
            scale_zeta_with_stride: self.scale_zeta_with_stride,
            ald_rule: self.ald_rule,
            ald_scale: self.ald_scale,
            ..Knobs::new(self.preset, op, self.steps)
        }
    }

    /// Checks the values and builds the settings of one restoration: the preset's, with
    /// every option given on the command line applied (`variance`: `--variance`, if given).
    pub fn settings(
        &self,
        method: Method,
        op: tweedie_operators::OperatorSpec,
        seed: u64,
        variance: Option<VarianceArg>,
    ) -> Result<RestoreSettings> {
        self.validate()?;
        let settings = RestoreSettings::configure(method, &self.knobs(op))
            .with_context(|| format!("the settings of {method}"))?;
        Ok(RestoreSettings {
            sigma: self.sigma,
            seed,
            variance: variance.map_or(self.preset.variance(), Into::into),
            eta: self.eta,
            ..settings
        })
    }
}

/// Checks DDIM's `--eta`: in [0, 1].
pub(crate) fn check_eta(eta: Option<f64>) -> Result<()> {
    match eta {
        Some(eta) if !(0.0..=1.0).contains(&eta) => bail!("--eta must lie in [0, 1], got {eta}"),
        _ => Ok(()),
    }
}

/// Checks `--crop` (of `train` and `evaluate`): the side of a centred square, ≥ 1.
pub(crate) fn check_crop(crop: Option<usize>) -> Result<()> {
    if crop == Some(0) {
        bail!("--crop must be ≥ 1 (the side of the centred square, in pixels), got 0");
    }
    Ok(())
}

/// Refuses a list flag that names one value twice (`--methods sdedit,sdedit`): each value runs
/// once, so a repeat would only be counted twice in the results.
pub(crate) fn refuse_repeats<T: PartialEq>(
    flag: &str,
    values: &[T],
    name: impl Fn(&T) -> String,
) -> Result<()> {
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            bail!("{flag} lists {} twice; give each value once", name(v));
        }
    }
    Ok(())
}

/// Checks a number of reverse steps given as `flag` (`generate --steps`, `evaluate
/// --sample-steps`): 1..=T, with `restore`'s message.
pub(crate) fn check_steps(flag: &str, steps: usize) -> Result<()> {
    let t = Schedule::linear_default().num_steps();
    if steps == 0 || steps > t {
        bail!("{flag} must lie in 1..={t}, got {steps}");
    }
    Ok(())
}
