//! Subcommands.

use crate::model;
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use tweedie_core::diffusion::StepVariance;
use tweedie_core::{NoiseSource, Schedule};
use tweedie_samplers::{ChainOptions, Observer, StepInfo};

/// Diffusion models for image restoration: denoise, generate, inpaint, deblur, super-resolve.
#[derive(Parser, Debug)]
#[command(name = "tweedie", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train an ADM denoiser on a folder of images (ε-prediction, Adam, EMA).
    ///
    /// Example: tweedie train --data ../shared/data/celeba/train --out runs/celeba32 --size 32 --crop 140 --steps 20000
    Train(TrainArgs),
    /// Unconditional generation (Task 3).
    ///
    /// Example: tweedie generate --n 16 --steps 100 --seed 1 --out out/gen
    Generate(GenerateArgs),
    /// Forward-noise images to timesteps t and denoise them in one Tweedie step (Task 2).
    ///
    /// Example: tweedie denoise face.png --t 30,100,300 --out out/denoise
    Denoise(DenoiseArgs),
    /// Restore images with SDEdit, Score-ALD or DPS (Tasks 4–6): from a measurement simulated
    /// from clean images, or from an already degraded photo (`--measured`); `--samples K`
    /// draws K posterior samples with their mean and a per-pixel std map.
    ///
    /// Example: tweedie restore faces/ --method dps --op inpaint-box --sigma 0.05 --steps 250 --out out/dps
    Restore(RestoreArgs),
    /// PSNR, SSIM and LPIPS between two images, or two folders matched by file name.
    ///
    /// Example: tweedie metrics reference.png restored.png
    Metrics(MetricsArgs),
    /// Measure a model for its model card: Tweedie denoising PSNR/SSIM/LPIPS on held-out
    /// images vs a Gaussian-prior baseline, and an 8×8 sample grid.
    ///
    /// Example: tweedie evaluate --model assets/model.safetensors --val ../shared/data/celeba/val --train ../shared/data/celeba/train --crop 140 --out docs
    Evaluate(crate::evaluate::EvaluateArgs),
    /// Every method × operator over a folder → metrics table (JSON, CSV, Markdown) and figure
    /// grids; `--shard i/n` splits the folder across jobs (e.g. a Slurm or Kubernetes job array).
    ///
    /// Example: tweedie eval faces/ --methods sdedit,ald,dps --ops inpaint-box,gaussian-blur --shard 0/4 --out eval/
    Eval(crate::eval::EvalArgs),
    /// Combine the shard files of `tweedie eval --shard i/n` into one metrics table.
    ///
    /// Example: tweedie merge eval/ --out eval/
    Merge(crate::eval::MergeArgs),
    /// Run the whole task suite (Tasks 2–6) and write a Markdown report with figures.
    ///
    /// Example: tweedie report --faces assets/faces --crop 140 --out report
    Report(crate::report::ReportArgs),
    /// Time UNet forward passes (batch 1/8/32, small configs; --ffhq adds FFHQ-256), training steps, sampler steps and LPIPS (`--only` picks parts).
    ///
    /// Example: tweedie bench --ffhq
    Bench(crate::bench::BenchArgs),
    /// Check a UNet port against a reference fixture folder (config.json, model.safetensors or
    /// model.pt, io.safetensors): prints the max abs error.
    ///
    /// Example: tweedie parity tests/fixtures/adm
    Parity(ParityArgs),
    /// Replay DPS runs recorded from the official DPS code (`dps_<case>.json` +
    /// `.safetensors` in FIXTURES) with the model in MODEL_DIR (config.json plus
    /// model.safetensors and/or model.pt): prints, per case and weights file, the operator's
    /// error, the worst one-step error (each step started from the reference trajectory with
    /// its recorded noise) and the whole chain's error.
    ///
    /// Example: tweedie parity-dps tests/fixtures/adm tests/fixtures/dps
    ParityDps(ParityDpsArgs),
    /// Choose operator strengths at the model's resolution that make the measurement as hard
    /// (same PSNR of y, or A⁺y for masks and SR) as DPS's settings at 256 px.
    ///
    /// Example: tweedie calibrate --reference ../shared/data/ffhq256 --faces ../shared/data/celeba/val --crop 140 --out docs/calibration_32px.json
    Calibrate(crate::calibrate::CalibrateArgs),
}

/// Options shared by every sampling command.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// `embedded` (the default face model, built into the binary from assets/; with
    /// `$TWEEDIE_ASSETS` set, the model.safetensors and model.json there) or a
    /// .pt/.safetensors checkpoint.
    #[arg(long, default_value = "embedded")]
    pub model: String,
    /// The model's JSON config (default: beside the weights, same stem).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `cpu` (burn flex) or `wgpu` (needs a build with `--features wgpu`).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
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

#[derive(Args, Debug)]
struct TrainArgs {
    /// Folder of training images (searched recursively).
    #[arg(long)]
    data: PathBuf,
    /// Output folder: model.safetensors (EMA), model.json, loss.csv, checkpoint/.
    #[arg(long)]
    pub out: PathBuf,
    /// Model resolution.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Centre-crop side before resizing (≥ 1, at most the smaller image side; default: the
    /// largest centred square).
    #[arg(long)]
    crop: Option<usize>,
    /// Base channel count.
    #[arg(long, default_value_t = 64)]
    channels: usize,
    /// Channel multipliers per level.
    #[arg(long, default_value = "1,2,2", value_delimiter = ',')]
    mult: Vec<f64>,
    /// Resolutions with self-attention.
    #[arg(long, default_value = "16,8", value_delimiter = ',')]
    attention: Vec<usize>,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Total optimizer steps.
    #[arg(long, default_value_t = 10000)]
    steps: usize,
    /// Peak learning rate (Adam).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// EMA decay.
    #[arg(long, default_value_t = 0.999)]
    ema: f64,
    /// Clip the gradient norm to this (a finite value ≥ 0; 0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Checkpoint interval in steps.
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// Continue from OUT/checkpoint exactly (recovering the newest complete checkpoint if a
    /// save was interrupted).
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Start over in an OUT that already holds a run, deleting its checkpoints, loss.csv and
    /// weights (without --resume or --force such an OUT is refused).
    #[arg(long)]
    force: bool,
    /// Without a terminal (output to a file), print a progress line every N steps (0: never).
    #[arg(long, default_value_t = 50)]
    log_every: usize,
    /// Seed of initialisation, batches, timesteps and noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `cpu` or `wgpu`.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    #[command(flatten)]
    common: Common,
    /// Number of images.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Images sampled at once (bounds the memory a large `--n` needs). The samples do not
    /// depend on it: image i's noise comes from its own stream of the seed.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
    /// Reverse steps (1..=1000; fewer than 1000 = strided chain).
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Use DDIM steps with this η instead of ancestral steps.
    #[arg(long)]
    eta: Option<f64>,
}

#[derive(Args, Debug)]
pub struct DenoiseArgs {
    #[command(flatten)]
    pub common: Common,
    /// Images or folders of images (resized to the model resolution).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Timesteps (1..=1000).
    #[arg(long, value_delimiter = ',', default_value = "30,100,300")]
    pub t: Vec<usize>,
    /// Fail on an unreadable image instead of skipping it with a warning.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Simulated (INPUTS): each image is centre-cropped and resized to the model, measured with --op \
and --sigma (seeded), and restored. Writes <name>_measurement.png, <name>_<method>.png, the \
kernel or mask used (<name>_kernel.npy/.png, <name>_mask.png), <method>_grid.png (ground truth \
| measurement | initialisation | restored) and <method>_metrics.json (settings and \
PSNR/SSIM/LPIPS).

Measured (--measured y.png): y is restored as it is; only an image of the size needed is \
accepted (the model's, or the operator's output for sr4/sr4-box), --fit crop|resize fits \
another. Metrics appear only with --reference. Writes <name>_<method>.png, \
<method>_grid.png (measurement | A+y initialisation | restored [| reference]) and \
<method>_metrics.json with the settings.

Examples:
  tweedie restore --measured blurred.png --op gaussian-blur --sigma 0.02 --method dps --steps 250
  tweedie restore --measured y.png --op motion-blur --kernel y_kernel.npy --reference x.png --fit crop
  tweedie restore --measured lowres_8x8.png --op sr4 --method ald --samples 8")]
pub struct RestoreArgs {
    #[command(flatten)]
    pub common: Common,
    /// Images or folders of images (centre-cropped and resized to the model resolution): a
    /// measurement y = A(x) + σn is simulated from each and restored. Not with --measured.
    #[arg(required_unless_present = "measured", conflicts_with = "measured")]
    pub inputs: Vec<PathBuf>,
    /// Restore this measured image y instead (no ground truth needed): a blurred or masked
    /// image of the model's size, or for sr4/sr4-box the low-resolution image itself (8×8 for
    /// a 32 px model). Another size is an error unless --fit is given. --op motion-blur needs
    /// --kernel, masks need --op inpaint-mask --mask (random operators are refused); --sigma
    /// is the noise level assumed for y.
    #[arg(long, value_name = "FILE")]
    pub measured: Option<PathBuf>,
    /// With --measured: the ground truth, for PSNR/SSIM/LPIPS (without it none are computed).
    /// It must have the model's size, or is fitted by --fit like the measurement.
    #[arg(long, value_name = "FILE", requires = "measured")]
    pub reference: Option<PathBuf>,
    /// With --measured: bring an image of another size to the size needed: `crop` (centre
    /// square, then resize) or `resize` (resize directly). Without it nothing is resized.
    #[arg(long, value_enum, requires = "measured")]
    pub fit: Option<crate::restore::FitArg>,
    /// Draw K ≥ 2 posterior samples of each measurement in one batched chain and write their
    /// mean (<name>_<method>_mean.png), per-pixel standard deviation (mean over channels, a
    /// heat map from black = 0 to yellow = its maximum: <name>_<method>_std.png), each sample
    /// (<name>_<method>_sample_<k>.png) and a figure (<name>_<method>_samples.png: mean | std
    /// | up to 4 samples, the std's scale in its caption), instead of <name>_<method>.png.
    #[arg(long, value_name = "K")]
    pub samples: Option<usize>,
    /// Restoration method.
    #[arg(long, value_enum, default_value_t = MethodArg::Dps)]
    pub method: MethodArg,
    /// Measurement operator (DPS's settings scaled to the model's resolution).
    #[arg(long, value_enum, default_value_t = crate::operator_args::OpArg::InpaintBox)]
    pub op: crate::operator_args::OpArg,
    #[command(flatten)]
    pub operator: crate::operator_args::OperatorArgs,
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Fail on an unreadable image instead of skipping it with a warning.
    #[arg(long)]
    pub strict: bool,
    /// Simulated restores: images restored at once, in one batched chain. The results do not
    /// depend on it: each image draws its operator, measurement noise and sampler noise from
    /// its own seed (`--seed` + its index). Not with --samples (which batches its K samples).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

/// Settings of the restoration samplers, shared by `restore`, `eval` and `report`.
#[derive(Args, Debug, Clone)]
pub struct SolverArgs {
    /// Sampler settings to start from: `dps` (the official DPS code: learned variance, the
    /// residual rule with ζ = 0.5 for inpainting and 0.3 otherwise, x̂0 clipped) or `sheet`
    /// (the problem sheet: σ² = β, ζ_t = ζ/‖∇‖A(x̂0) − y‖²‖ with ζ = 1). `--variance`,
    /// `--zeta` and `--dps-step` override single settings.
    #[arg(long, value_enum, default_value_t = PresetArg::Dps)]
    pub preset: PresetArg,
    /// Measurement noise σ in the [−1, 1] scale.
    #[arg(long, default_value_t = 0.05)]
    pub sigma: f64,
    /// Reverse steps (1000 = the sheet's full chain; fewer = strided).
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// SDEdit starting timestep.
    #[arg(long, default_value_t = 500)]
    pub t0: usize,
    /// DPS ζ (default: the preset's).
    #[arg(long)]
    pub zeta: Option<f64>,
    /// DPS step rule (default: the preset's): `residual` (DPS code, ζ∇‖A x̂0 − y‖) or
    /// `normalized` (the sheet's ζ/‖∇‖A x̂0 − y‖²‖).
    #[arg(long, value_enum)]
    pub dps_step: Option<DpsRuleArg>,
    /// Scale DPS's ζ by 1000/steps, so that a strided chain's total guidance matches the
    /// 1000-step chain the ζ was set for (the DPS code applies its scale per step unchanged).
    #[arg(long)]
    pub scale_zeta_with_stride: bool,
    /// Score-ALD step multiplier λ.
    #[arg(long, default_value_t = 1.0)]
    pub ald_scale: f64,
    /// Score-ALD update: `stabilised` (ours, weighted by β_t/√α_t) or `sheet` (the sheet's
    /// literal 1/(2(σ² + γ_t²)) step, which diverges for σ = 0.05).
    #[arg(long, value_enum, default_value_t = AldRuleArg::Stabilised)]
    pub ald_rule: AldRuleArg,
    /// Use DDIM steps with this η ∈ [0, 1] (0: deterministic) instead of ancestral steps
    /// (the reverse chain of every method; `--variance` then does not apply).
    #[arg(long)]
    pub eta: Option<f64>,
}

/// The command-line name of a clap value (`--preset dps` → `"dps"`).
pub fn value_name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// `--method`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodArg {
    /// SDEdit (Task 4).
    Sdedit,
    /// Score-ALD (Task 5).
    #[value(alias = "score-ald")]
    Ald,
    /// DPS (Task 6).
    Dps,
}

impl From<MethodArg> for tweedie::tasks::Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Sdedit => tweedie::tasks::Method::Sdedit,
            MethodArg::Ald => tweedie::tasks::Method::Ald,
            MethodArg::Dps => tweedie::tasks::Method::Dps,
        }
    }
}

/// `--preset`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetArg {
    /// The official DPS code and configs.
    Dps,
    /// The problem sheet's formulas.
    Sheet,
}

impl From<PresetArg> for tweedie::tasks::Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Dps => tweedie::tasks::Preset::Dps,
            PresetArg::Sheet => tweedie::tasks::Preset::Sheet,
        }
    }
}

/// `--dps-step`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpsRuleArg {
    /// x −= ζ ∇‖A(x̂0) − y‖ (the DPS code).
    Residual,
    /// x −= ζ ∇‖A(x̂0) − y‖² / ‖∇‖A(x̂0) − y‖²‖ (the sheet).
    Normalized,
}

/// `--ald-rule`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AldRuleArg {
    /// Ours, stable.
    Stabilised,
    /// The sheet's literal update.
    Sheet,
}

/// T of the default schedule (1000).
fn schedule_steps() -> usize {
    Schedule::linear_default().num_steps()
}

impl SolverArgs {
    /// Checks the values (steps, t0, ζ): call it before loading anything.
    pub fn validate(&self) -> Result<()> {
        let schedule = Schedule::linear_default();
        if self.steps == 0 || self.steps > schedule.num_steps() {
            bail!("--steps must lie in 1..={}", schedule.num_steps());
        }
        schedule
            .check_timestep(self.t0)
            .map_err(|e| anyhow::anyhow!("--t0: {e}"))?;
        if let Some(z) = self.zeta
            && !(z >= 0.0 && z.is_finite())
        {
            bail!("--zeta must be finite and ≥ 0, got {z}");
        }
        check_eta(self.eta)
    }

    /// The DPS step for `op`: the preset's, with `--dps-step` and `--zeta` applied.
    fn dps_step(&self, op: &tweedie_operators::OperatorSpec) -> tweedie_samplers::DpsStep {
        use tweedie_samplers::DpsStep;
        let preset: tweedie::tasks::Preset = self.preset.into();
        let step = preset.dps_step(op, self.zeta);
        let zeta = match step {
            DpsStep::Residual { zeta } | DpsStep::Normalized { zeta } => zeta,
        };
        match self.dps_step {
            None => step,
            Some(DpsRuleArg::Residual) => DpsStep::Residual { zeta },
            Some(DpsRuleArg::Normalized) => DpsStep::Normalized { zeta },
        }
    }

    /// Checks the values and builds the settings of one restoration: the preset's, with
    /// every option given on the command line applied (`variance`: `--variance`, if given).
    pub fn settings(
        &self,
        method: tweedie::tasks::Method,
        op: tweedie_operators::OperatorSpec,
        seed: u64,
        variance: Option<VarianceArg>,
    ) -> Result<tweedie::tasks::RestoreSettings> {
        self.validate()?;
        let preset: tweedie::tasks::Preset = self.preset.into();
        let mut dps_step = self.dps_step(&op);
        let mut notes = Vec::new();
        if self.scale_zeta_with_stride && self.steps < schedule_steps() {
            let factor = schedule_steps() as f64 / self.steps as f64;
            let (tweedie_samplers::DpsStep::Residual { zeta }
            | tweedie_samplers::DpsStep::Normalized { zeta }) = &mut dps_step;
            notes.push(format!(
                "DPS ζ = {} × {}/{} = {} (scaled with the stride)",
                *zeta,
                schedule_steps(),
                self.steps,
                *zeta * factor
            ));
            *zeta *= factor;
        }
        Ok(tweedie::tasks::RestoreSettings {
            dps_step,
            notes,
            sigma: self.sigma,
            steps: self.steps,
            t0: self.t0,
            ald_scale: self.ald_scale,
            ald_rule: match self.ald_rule {
                AldRuleArg::Stabilised => tweedie_samplers::AldRule::Stabilised,
                AldRuleArg::Sheet => tweedie_samplers::AldRule::Sheet,
            },
            seed,
            variance: variance.map_or(preset.variance(), Into::into),
            eta: self.eta,
            ..tweedie::tasks::RestoreSettings::new(method, preset, op)
        })
    }
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Reference image or folder.
    pub reference: PathBuf,
    /// Restored image or folder (matched by file name).
    pub restored: PathBuf,
    /// Write per-image and mean results here as metrics.json and metrics.csv (folders).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// LPIPS backbone: alex (weights built into the binary; `$TWEEDIE_ASSETS` overrides) or
    /// vgg.
    #[arg(long, default_value = "alex")]
    pub net: String,
    /// LPIPS weights file (default for alex: the built-in copy of
    /// assets/lpips_alexnet.safetensors; for vgg the file `cargo xtask fetch-weights
    /// lpips-vgg` prints).
    #[arg(long)]
    pub lpips_weights: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ParityArgs {
    /// Fixture folder.
    dir: PathBuf,
    /// `cpu` or `wgpu`.
    #[arg(long, default_value = "cpu")]
    backend: String,
}

#[derive(Args, Debug)]
struct ParityDpsArgs {
    /// Model folder: config.json with model.safetensors and/or model.pt.
    model_dir: PathBuf,
    /// Folder of DPS fixtures (dps_<case>.json + dps_<case>.safetensors).
    fixtures: PathBuf,
    /// `cpu` or `wgpu`.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Exit non-zero when any one-step error exceeds this (the whole chain is only reported:
    /// chaotic cases such as box inpainting amplify float rounding).
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => train(a),
        Command::Generate(a) => generate(a),
        Command::Parity(a) => parity(a),
        Command::ParityDps(a) => parity_dps(a),
        Command::Calibrate(a) => crate::calibrate::calibrate(a),
        Command::Eval(a) => crate::eval::eval(a),
        Command::Merge(a) => crate::eval::merge(a),
        Command::Report(a) => crate::report::report(a),
        Command::Bench(a) => crate::bench::bench(a),
        Command::Evaluate(a) => crate::evaluate::evaluate(a),
        Command::Denoise(a) => crate::restore::denoise(a),
        Command::Restore(a) => crate::restore::restore(a),
        Command::Metrics(a) => crate::restore::metrics(a),
    }
}

/// An error and its causes on one line, each cause once: a cause whose text the message
/// already holds (errors that format their source into their own message and also return
/// it as `source()`) is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !c.is_empty() && !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// Makes sure the output folder `dir` can take the outputs before any work is done: creates
/// it, and writes and removes a probe file in it.
pub(crate) fn check_out(dir: &Path) -> Result<()> {
    let fail = |e: std::io::Error| {
        anyhow::anyhow!("cannot write to the output folder {}: {e}", dir.display())
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    // Say when the folder already holds an earlier run's results: files this run writes are
    // replaced, the others stay (nothing is deleted), so a shorter rerun can leave old
    // outputs beside the new ones.
    let earlier = std::fs::read_dir(dir)
        .map_err(fail)?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    if earlier > 0 {
        eprintln!(
            "note: {} already holds {earlier} entries from an earlier run; files this run writes are replaced, the others are left as they are",
            dir.display()
        );
    }
    let probe = dir.join(format!(".tweedie-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    // Temp files of an earlier run that was killed mid-write (`.NAME.PID.tmp`, PID gone).
    let removed = tweedie_io::clean_stale_temps(dir).map_err(fail)?;
    if removed > 0 {
        eprintln!(
            "removed {removed} stale temporary file(s) of an interrupted run from {}",
            dir.display()
        );
    }
    Ok(())
}

/// [`check_out`] for the folder of the output file `path`.
pub(crate) fn check_out_file(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => check_out(dir),
        None => check_out(Path::new(".")),
    }
}

pub(crate) fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Progress of a long command counted in units of work (images, batches): a bar on a
/// terminal; without one (a job logging to a file, a pipe) a plain line per update with the
/// elapsed time and an ETA, e.g. `eval: 3/12 (25%) DPS inpaint-box face  elapsed 9 s  ETA 27 s`.
pub(crate) struct Progress {
    pb: ProgressBar,
    plain: bool,
    what: String,
    total: usize,
    done: usize,
    started: std::time::Instant,
}

impl Progress {
    /// `total` units of work, named `what` (`"eval"`, `"generate"`).
    pub(crate) fn new(total: usize, what: &str) -> Self {
        Self::with_bar(bar(total, what), total, what)
    }

    fn with_bar(pb: ProgressBar, total: usize, what: &str) -> Self {
        let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
        Self {
            pb,
            plain,
            what: what.to_string(),
            total,
            done: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Plain lines only, without a terminal; no bar on one (where another bar shows the
    /// progress within each unit).
    pub(crate) fn lines(total: usize, what: &str) -> Self {
        Self::with_bar(ProgressBar::hidden(), total, what)
    }

    /// `n` more units done (`note` says which, for the plain line).
    pub(crate) fn inc(&mut self, n: usize, note: &str) {
        self.advance(n);
        self.say(note);
    }

    /// `n` more units done, without a plain line.
    pub(crate) fn advance(&mut self, n: usize) {
        self.done += n;
        self.pb.inc(n as u64);
    }

    /// The plain line now (nothing on a terminal).
    pub(crate) fn say(&self, note: &str) {
        if self.plain {
            eprintln!("{}", self.line(note));
        }
    }

    /// The plain progress line.
    fn line(&self, note: &str) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = self.total.saturating_sub(self.done);
        let eta = if self.done > 0 {
            format!("{:.0} s", elapsed / self.done as f64 * left as f64)
        } else {
            "?".into()
        };
        let pct = 100.0 * self.done as f64 / self.total.max(1) as f64;
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" {note}")
        };
        format!(
            "{}: {}/{} ({pct:.0}%){note}  elapsed {elapsed:.0} s  ETA {eta}",
            self.what, self.done, self.total
        )
    }

    /// Clears the bar.
    pub(crate) fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

fn train(a: TrainArgs) -> Result<()> {
    crate::evaluate::check_crop(a.crop)?;
    if !(a.grad_clip.is_finite() && a.grad_clip >= 0.0) {
        bail!(
            "--grad-clip must be finite and ≥ 0 (0: no clipping), got {}",
            a.grad_clip
        );
    }
    let unet = tweedie_unet::UNetConfig::small(a.size, a.channels, &a.mult, &a.attention);
    unet.validate()?;
    check_out(&a.out)?;
    let device = model::device(&a.backend)?;
    let opts = tweedie_train::TrainOptions {
        data: a.data,
        out: a.out.clone(),
        unet,
        crop: a.crop,
        batch_size: a.batch,
        steps: a.steps,
        lr: a.lr,
        warmup: a.warmup,
        ema_decay: a.ema,
        grad_clip: (a.grad_clip > 0.0).then_some(a.grad_clip),
        checkpoint_every: a.checkpoint_every,
        seed: a.seed,
    };
    let pb = bar(a.steps, "train");
    // Without a terminal (a job in the background, logs to a file) the bar is hidden: print
    // a plain line every `--log-every` steps instead.
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (mut window, started) = (Vec::new(), std::time::Instant::now());
    let start = if a.resume {
        // Say what was recovered before the (long) run starts.
        if let Some(note) = tweedie_train::recover_checkpoint(&a.out)? {
            eprintln!("{note}");
        }
        tweedie_train::Start::Resume
    } else if a.force {
        tweedie_train::Start::Overwrite
    } else {
        tweedie_train::Start::New
    };
    let summary = tweedie_train::train(&opts, start, &device, &mut |r| {
        pb.set_position(r.step as u64);
        pb.set_message(format!(
            "train loss {:.4} {:.1} img/s",
            r.loss, r.images_per_sec
        ));
        window.push(r.loss);
        if plain && a.log_every > 0 && (r.step % a.log_every == 0 || r.step == r.total) {
            let left = (r.total - r.step) as f64 * a.batch as f64 / r.images_per_sec.max(1e-9);
            eprintln!(
                "step {}/{}  loss {:.4} (mean of last {})  {:.1} img/s  elapsed {:.0} s  ETA {:.0} s",
                r.step,
                r.total,
                window.iter().sum::<f64>() / window.len() as f64,
                window.len(),
                r.images_per_sec,
                started.elapsed().as_secs_f64(),
                left
            );
            window.clear();
        }
    })?;
    pb.finish();
    std::fs::write(
        a.out.join("train_summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!(
        "trained {} steps ({} this run, {} images seen) in {:.0} s ({:.1} img/s); final loss {:.4}; {} images used, {} skipped; weights in {}",
        summary.steps,
        summary.steps_this_run,
        summary.images_seen,
        summary.wall_seconds,
        summary.images_per_sec,
        summary.final_loss,
        summary.images,
        summary.skipped,
        a.out.join("model.safetensors").display()
    );
    Ok(())
}

/// Images per batch of `generate` (default of `--batch`), `evaluate` and `report`.
pub(crate) const DEFAULT_BATCH: usize = 16;

/// `generate`'s grid.png shows at most this many samples.
const GRID_MAX: usize = 256;

fn generate(a: GenerateArgs) -> Result<()> {
    let c = &a.common;
    if a.n == 0 {
        bail!("--n must be ≥ 1");
    }
    if a.batch == 0 {
        bail!("--batch must be ≥ 1");
    }
    crate::evaluate::check_steps("--steps", a.steps)?;
    check_eta(a.eta)?;
    check_out(&c.out)?;
    let device = model::device(&c.backend)?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let opts = ChainOptions {
        steps: a.steps,
        eta: a.eta,
        variance: c.variance_or_beta(),
        ..Default::default()
    };
    // Written batch by batch; only the grid's samples are kept.
    let digits = (a.n - 1).to_string().len().max(3);
    let mut shown = Vec::new();
    sample_batches(
        &net,
        a.n,
        a.batch,
        &opts,
        c.seed,
        &device,
        "generate",
        &mut |first, images| {
            for (k, img) in images.iter().enumerate() {
                let name = format!("sample_{:0digits$}.png", first + k);
                tweedie_io::save_png(img, c.out.join(name))?;
            }
            let room = GRID_MAX.saturating_sub(shown.len());
            shown.extend(images.into_iter().take(room));
            Ok(())
        },
    )?;
    let cols = (shown.len() as f64).sqrt().ceil() as usize;
    let grid = tweedie_io::Grid::from_images(&shown, cols, 0);
    grid.save(c.out.join("grid.png"))?;
    if shown.len() < a.n {
        println!(
            "wrote {} samples and grid.png (the first {}) to {}",
            a.n,
            shown.len(),
            c.out.display()
        );
    } else {
        println!("wrote {} samples and grid.png to {}", a.n, c.out.display());
    }
    Ok(())
}

/// Checks DDIM's `--eta`: in [0, 1].
pub(crate) fn check_eta(eta: Option<f64>) -> Result<()> {
    match eta {
        Some(eta) if !(0.0..=1.0).contains(&eta) => bail!("--eta must lie in [0, 1], got {eta}"),
        _ => Ok(()),
    }
}

/// Generates `n` samples with a progress bar, [`DEFAULT_BATCH`] at a time; returns them and
/// the seconds taken.
pub(crate) fn sample_images(
    net: &tweedie_unet::UNetEps,
    n: usize,
    opts: &ChainOptions,
    seed: u64,
    device: &burn::tensor::Device,
    what: &str,
) -> Result<(Vec<tweedie_io::Image>, f64)> {
    let mut all = Vec::with_capacity(n);
    let secs = sample_batches(
        net,
        n,
        DEFAULT_BATCH,
        opts,
        seed,
        device,
        what,
        &mut |_, images| {
            all.extend(images);
            Ok(())
        },
    )?;
    Ok((all, secs))
}

/// Generates `n` samples, `batch` at a time (the unguided reverse chain of
/// `tweedie_samplers::generate`, from x_T ~ N(0, I)), and hands each batch to `each` with the
/// index of its first image. Image i draws all its noise (x_T and every step's z) from its
/// own stream, the i-th fork of `NoiseSource::new(seed)`, so a sample depends on the seed and
/// its index, not on how the images are batched. Returns the seconds taken.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample_batches(
    net: &tweedie_unet::UNetEps,
    n: usize,
    batch: usize,
    opts: &ChainOptions,
    seed: u64,
    device: &burn::tensor::Device,
    what: &str,
    each: &mut dyn FnMut(usize, Vec<tweedie_io::Image>) -> Result<()>,
) -> Result<f64> {
    check_eta(opts.eta)?;
    let schedule = Schedule::linear_default();
    let t_max = schedule.num_steps();
    let chain = schedule.chain(t_max, opts.steps.min(t_max))?;
    let size = net.net.config().image_size;
    let batch = batch.max(1);
    // Steps of all batches; without a terminal, a line per batch.
    let mut progress = Progress::new(n.div_ceil(batch) * chain.len(), what);
    let started = std::time::Instant::now();
    let mut streams = NoiseSource::new(seed);
    for first in (0..n).step_by(batch) {
        let b = batch.min(n - first);
        // Each image draws x_T and every step's z from its own stream, so a sample does not
        // depend on the batch it falls in.
        let mut noise = NoiseSource::per_item((0..b).map(|_| streams.fork()).collect());
        let out = tweedie_samplers::generate(
            net,
            &schedule,
            [b, 3, size, size],
            opts,
            &mut noise,
            device,
            &mut Observer::with_progress(|_: StepInfo| progress.advance(1)),
        )
        .with_context(|| format!("images {first}..{} of {n}", first + b - 1))?;
        progress.say(&format!(
            "steps; batch {}/{} done (images {first}..{} of {n})",
            first / batch + 1,
            n.div_ceil(batch),
            first + b - 1
        ));
        each(first, tweedie_io::from_tensor(&out.x0)?)?;
    }
    progress.finish();
    Ok(started.elapsed().as_secs_f64())
}

fn parity(a: ParityArgs) -> Result<()> {
    let device = crate::model::device(&a.backend)?;
    let cfg = tweedie_unet::UNetConfig::from_json_file(a.dir.join("config.json"))?;
    let io_path = a.dir.join("io.safetensors");
    let bytes =
        std::fs::read(&io_path).with_context(|| format!("reading {}", io_path.display()))?;
    let st = safetensors_view(&bytes, &io_path, &device)?;
    for weights in ["model.safetensors", "model.pt"] {
        let p = a.dir.join(weights);
        if !p.exists() {
            continue;
        }
        let net = tweedie_unet::UNet::load(&cfg, &p, &device)?;
        let got = tweedie_core::tensor::to_vec(&net.forward(st.x.clone(), &st.t));
        if got.len() != st.out.len() {
            bail!(
                "{weights}: the network gives {} values, the fixture's out has {}",
                got.len(),
                st.out.len()
            );
        }
        let err = got
            .iter()
            .zip(&st.out)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("{weights}: max abs error {err:e} over {} values", got.len());
    }
    Ok(())
}

fn parity_dps(a: ParityDpsArgs) -> Result<()> {
    use tweedie::parity::{DpsFixture, check_dps_case, dps_fixture_files};
    let device = crate::model::device(&a.backend)?;
    let cfg = tweedie_unet::UNetConfig::from_json_file(a.model_dir.join("config.json"))?;
    let files = dps_fixture_files(&a.fixtures)?;
    if files.is_empty() {
        bail!("{}: no dps_*.json fixtures", a.fixtures.display());
    }
    let fixtures = files
        .iter()
        .map(|f| DpsFixture::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut worst = 0.0f64;
    let mut any_weights = false;
    for weights in ["model.safetensors", "model.pt"] {
        let p = a.model_dir.join(weights);
        if !p.exists() {
            continue;
        }
        any_weights = true;
        let net = tweedie_unet::UNetEps {
            net: tweedie_unet::UNet::load(&cfg, &p, &device)?,
        };
        println!("{weights}:");
        println!(
            "  {:<18} {:>10} {:>16} {:>10} {:>12}",
            "case", "A(x0)", "one step (k)", "√ᾱ·x̂0", "whole chain"
        );
        for fx in &fixtures {
            let r = check_dps_case(&net, fx, &device)?;
            worst = worst.max(r.one_step_error).max(r.x0_hat_error);
            println!(
                "  {:<18} {:>10.2e} {:>11.2e} ({:>2}) {:>10.2e} {:>12.2e}",
                r.case,
                r.operator_error,
                r.one_step_error,
                r.worst_step,
                r.x0_hat_error,
                r.chain_error
            );
        }
    }
    if !any_weights {
        bail!(
            "{}: neither model.safetensors nor model.pt",
            a.model_dir.display()
        );
    }
    if worst > a.tolerance {
        bail!(
            "worst one-step error {worst:e} exceeds --tolerance {:e}",
            a.tolerance
        );
    }
    Ok(())
}

struct FixtureIo {
    x: burn::tensor::Tensor<4>,
    t: Vec<f32>,
    out: Vec<f32>,
}

/// The fixture's `x` (4-D), `t` (integer timesteps) and `out`, read with the safetensors crate.
fn safetensors_view(
    bytes: &[u8],
    path: &std::path::Path,
    device: &burn::tensor::Device,
) -> Result<FixtureIo> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let v = st
            .tensor(name)
            .with_context(|| format!("{}: no tensor {name:?}", path.display()))?;
        let d = v.data();
        let values: Vec<f32> = match v.dtype() {
            safetensors::Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
                .collect(),
            safetensors::Dtype::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            other => bail!(
                "{}: tensor {name:?} is {other:?}, expected F32, I64 or I32",
                path.display()
            ),
        };
        Ok((v.shape().to_vec(), values))
    };
    let (xs, x) = read("x")?;
    let (_, out) = read("out")?;
    let (_, t) = read("t")?;
    let [b, c, h, w] = xs[..] else {
        bail!("{}: x must be 4-D, got {xs:?}", path.display());
    };
    if t.len() != b {
        bail!(
            "{}: {} timesteps for a batch of {b}",
            path.display(),
            t.len()
        );
    }
    Ok(FixtureIo {
        x: tweedie_core::tensor::from_vec(x, [b, c, h, w], device),
        t,
        out,
    })
}
