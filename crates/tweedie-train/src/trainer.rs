//! The training loop.

use crate::{Dataset, DatasetOptions};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tweedie_core::{InvalidParameter, NoiseSource, Schedule};
use tweedie_unet::{ConfigError, UNet, UNetConfig, WeightMap};

/// A boxed underlying error, kept as the `source()` of a [`TrainError`].
pub type BoxedSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Training errors.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The training images: what is wrong, with the underlying error (listing the folder,
    /// preparing an image) as its source when there is one.
    #[error("training data: {context}")]
    Data {
        /// What went wrong, naming the file or folder.
        context: String,
        /// The underlying error.
        #[source]
        source: Option<BoxedSource>,
    },
    /// An option is out of range.
    #[error(transparent)]
    Invalid(#[from] InvalidParameter),
    /// The network config is invalid.
    #[error("invalid training option")]
    Config(#[from] ConfigError),
    /// Checkpoint, weights or loss-log I/O: what and where, with the underlying error (I/O,
    /// JSON, safetensors, optimizer state) as its source when there is one.
    #[error("checkpoint: {context}")]
    Checkpoint {
        /// The file and what went wrong.
        context: String,
        /// The underlying error.
        #[source]
        source: Option<BoxedSource>,
    },
    /// The periodic evaluation failed (the step's checkpoint, when due, was saved first, so
    /// `--resume` continues from it).
    #[error("the evaluation at step {step}: {context}")]
    Evaluation {
        /// Step.
        step: usize,
        /// What failed.
        context: String,
        /// The underlying error.
        #[source]
        source: Option<BoxedSource>,
    },
    /// Divergence.
    #[error("training diverged at step {step}: loss is {loss}")]
    Diverged {
        /// Step.
        step: usize,
        /// Loss value.
        loss: f64,
    },
}

impl TrainError {
    /// A [`TrainError::Data`] without an underlying error.
    pub fn data(context: impl Into<String>) -> Self {
        TrainError::Data {
            context: context.into(),
            source: None,
        }
    }

    /// A [`TrainError::Data`] caused by `source`.
    pub fn data_from(context: impl Into<String>, source: impl Into<BoxedSource>) -> Self {
        TrainError::Data {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A [`TrainError::Checkpoint`] without an underlying error.
    pub fn checkpoint(context: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            context: context.into(),
            source: None,
        }
    }

    /// A [`TrainError::Checkpoint`] caused by `source`.
    pub fn checkpoint_from(context: impl Into<String>, source: impl Into<BoxedSource>) -> Self {
        TrainError::Checkpoint {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Folder of training images.
    pub data: PathBuf,
    /// Output folder (weights, config, checkpoints, loss log).
    pub out: PathBuf,
    /// Network architecture. `unet.learn_sigma` selects the objective: `false` trains ε by
    /// L_simple = ‖ε̂ − ε‖²; `true` gives the network 6 output channels and trains Improved
    /// DDPM's hybrid L_simple + λ L_vlb (see [`crate::vlb_bits_per_dim`]), recorded in
    /// `model.json` and the checkpoint's `state.json`.
    pub unet: UNetConfig,
    /// Centre-crop side before resizing (`None`: largest square).
    pub crop: Option<usize>,
    /// Images per step.
    pub batch_size: usize,
    /// Total optimizer steps of the run (a resumed run continues up to this).
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// EMA decay of the shipped weights.
    pub ema_decay: f64,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    /// Save a checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl TrainOptions {
    fn validate(&self) -> Result<(), TrainError> {
        let bad = |name, value: &dyn std::fmt::Display, reason: &str| {
            Err(InvalidParameter::new(name, value, reason).into())
        };
        if self.batch_size == 0 {
            return bad("batch size", &self.batch_size, "must be ≥ 1");
        }
        if self.steps == 0 {
            return bad("steps", &self.steps, "must be ≥ 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("learning rate", &self.lr, "must be finite and > 0");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("EMA decay", &self.ema_decay, "must lie in [0, 1)");
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint interval", &self.checkpoint_every, "must be ≥ 1");
        }
        if self.crop == Some(0) {
            return bad(
                "crop",
                &0,
                "must be ≥ 1 (the side of the centred square, in pixels)",
            );
        }
        if let Some(c) = self.grad_clip
            && !(c.is_finite() && c > 0.0)
        {
            return bad(
                "gradient clip",
                &c,
                "must be a finite norm > 0 (None: no clipping)",
            );
        }
        Ok(self.unet.validate()?)
    }
}

/// Reported after every step.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Step just finished (1-based).
    pub step: usize,
    /// Total steps.
    pub total: usize,
    /// Its loss (with learned sigma, the hybrid loss: MSE + (T/1000)·VLB term).
    pub loss: f64,
    /// With learned sigma, the batch mean of the VLB term L_{t−1} in bits/dim (unweighted).
    pub vlb: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Images per second of this invocation's training steps (evaluations and checkpoint
    /// writes excluded).
    pub images_per_sec: f64,
}

/// What a finished run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Steps completed in total.
    pub steps: usize,
    /// Images seen in total.
    pub images_seen: usize,
    /// Wall time of this invocation, seconds.
    pub wall_seconds: f64,
    /// Mean loss over the last 100 steps.
    pub final_loss: f64,
    /// Training images used / skipped.
    pub images: usize,
    /// Unreadable files skipped.
    pub skipped: usize,
    /// Steps run by this invocation (fewer than `steps` on resume).
    pub steps_this_run: usize,
    /// Training throughput of this invocation's steps (data loading, evaluations and
    /// checkpoint writes excluded).
    pub images_per_sec: f64,
    /// Wall seconds of the training steps over every run joined by `--resume` (evaluation
    /// and checkpoint writing excluded), counted from the first checkpoint that recorded it
    /// (older checkpoints start it at 0).
    #[serde(default)]
    pub train_seconds: f64,
    /// What was done to recover a checkpoint left by an interrupted save, if anything (see
    /// [`recover_checkpoint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
}

/// How [`train`] treats an output folder that may already hold a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run; refused when the folder already holds one (a checkpoint, `loss.csv` or
    /// `model.safetensors`).
    New,
    /// Continue from the folder's newest complete checkpoint, recovering one left by an
    /// interrupted save first (see [`recover_checkpoint`]).
    Resume,
    /// A new run that first deletes the files of any run already in the folder (its
    /// checkpoints, `loss.csv`, `model.safetensors` and `model.json`).
    Overwrite,
}

/// The files of a checkpoint folder; the marker [`MARKER`] is written after them.
const CHECKPOINT_FILES: [&str; 4] = [
    "model.safetensors",
    "ema.safetensors",
    "optim.bpk",
    "state.json",
];

/// Written last into a checkpoint folder, after every other file is synced to disk: a folder
/// without it (or missing a file it lists) is incomplete.
const MARKER: &str = "complete.json";

/// The contents of [`MARKER`].
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    step: usize,
    files: Vec<String>,
}

/// The files a run leaves in its output folder (besides the CLI's `train_summary.json`).
const RUN_FILES: [&str; 8] = [
    "checkpoint",
    "checkpoint.tmp",
    "checkpoint.old",
    "checkpoint.incomplete",
    "loss.csv",
    "eval.csv",
    "model.safetensors",
    "model.json",
];

/// `out/checkpoint`, the folder being written (`checkpoint.tmp`) and the one being replaced
/// (`checkpoint.old`).
fn checkpoint_dirs(out: &Path) -> [PathBuf; 3] {
    ["checkpoint", "checkpoint.tmp", "checkpoint.old"].map(|n| out.join(n))
}

/// The step of the checkpoint in `dir` when it is complete, else why not. Without a marker,
/// a folder is accepted (as written by versions before the marker) only with `legacy` set
/// and every file present: the final `checkpoint` and `checkpoint.old` were only ever whole
/// folders renamed into place, while `checkpoint.tmp` may have been cut off mid-write.
fn complete_step(dir: &Path, legacy: bool) -> Result<usize, String> {
    if !dir.is_dir() {
        return Err("missing".into());
    }
    let marker = dir.join(MARKER);
    let (step, files) = if marker.exists() {
        let m: Manifest = std::fs::read(&marker)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| format!("{}: {e}", marker.display()))?;
        (Some(m.step), m.files)
    } else if legacy {
        (
            None,
            CHECKPOINT_FILES.iter().map(|f| f.to_string()).collect(),
        )
    } else {
        return Err(format!("no {MARKER}: its save did not finish"));
    };
    if let Some(f) = files.iter().find(|f| !dir.join(f).is_file()) {
        return Err(format!("{} is missing", dir.join(f).display()));
    }
    if let Some(step) = step {
        return Ok(step);
    }
    let state = dir.join("state.json");
    std::fs::read(&state)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<CheckpointState>(&b).map_err(|e| e.to_string()))
        .map(|s| s.step)
        .map_err(|e| format!("{}: {e}", state.display()))
}

/// Makes `out/checkpoint` the newest complete checkpoint after a save was interrupted (a
/// kill between the renames of the swap leaves it in `checkpoint.tmp`, or only the previous
/// one in `checkpoint.old`). Returns a line saying what was recovered, or `None` when
/// nothing needed recovering (also when there is no checkpoint at all). An incomplete
/// `checkpoint` is moved to `checkpoint.incomplete` (replacing an earlier one), not deleted. Fails, naming each
/// folder and what is wrong with it, when checkpoint folders exist but none is complete.
pub fn recover_checkpoint(out: &Path) -> Result<Option<String>, TrainError> {
    let [ck, tmp, old] = checkpoint_dirs(out);
    let why_ck = match complete_step(&ck, true) {
        Ok(_) => return Ok(None),
        Err(why) => why,
    };
    let mut problems = Vec::new();
    if ck.exists() {
        problems.push(format!("{}: {why_ck}", ck.display()));
    }
    for (from, legacy) in [(&tmp, false), (&old, true)] {
        match complete_step(from, legacy) {
            Ok(step) => {
                let mut note = format!(
                    "recovered the checkpoint of step {step} from {} (a save was interrupted)",
                    from.display()
                );
                if ck.exists() {
                    let aside = out.join("checkpoint.incomplete");
                    remove_dir_if_present(&aside).map_err(|e| io_err(&aside, e))?;
                    std::fs::rename(&ck, &aside).map_err(|e| io_err(&ck, e))?;
                    note.push_str(&format!(
                        "; the incomplete {} ({why_ck}) was moved to {}",
                        ck.display(),
                        aside.display()
                    ));
                }
                std::fs::rename(from, &ck).map_err(|e| io_err(from, e))?;
                sync_dir(out);
                if *from == tmp {
                    // The checkpoint it replaced is older.
                    remove_dir_if_present(&old).map_err(|e| io_err(&old, e))?;
                }
                return Ok(Some(note));
            }
            Err(why) if from.exists() => problems.push(format!("{}: {why}", from.display())),
            Err(_) => {}
        }
    }
    if problems.is_empty() {
        return Ok(None);
    }
    Err(TrainError::checkpoint(format!(
        "no complete checkpoint in {}: {}",
        out.display(),
        problems.join("; ")
    )))
}

/// A checkpoint error about `path`, caused by `e`.
fn io_err(path: &Path, e: impl Into<BoxedSource>) -> TrainError {
    TrainError::checkpoint_from(path.display().to_string(), e)
}

fn remove_dir_if_present(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Flushes a folder's entries (renames, new files) to disk; best effort (not every platform
/// can open a folder).
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes `bytes` to `path` and syncs it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let mut f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(path, e))
}

/// Syncs an already written file to disk.
fn sync_file(path: &Path) -> Result<(), TrainError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(path, e))
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    recent_losses: Vec<f64>,
    images_seen: usize,
    /// The objective the run trains (absent in checkpoints written before learned sigma).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    learn_sigma: Option<bool>,
    /// Wall seconds of the training loop over every run so far (0 in older checkpoints).
    #[serde(default)]
    train_seconds: f64,
    /// GroupNorm groups of the network (absent in checkpoints written before the option:
    /// those had guided-diffusion's 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    norm_groups: Option<usize>,
}

/// The EMA of the network's parameters, kept as tensors on the training device (the plain,
/// non-autodiff one): θ̄ ← d·θ̄ + (1 − d)·θ after every step, with tensor ops only (nothing
/// goes through the host until a checkpoint is written).
struct DeviceEma {
    net: UNet,
}

/// Every float parameter of a module by id, flattened (shares the tensors; no copy).
struct CollectParams(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for CollectParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.0.insert(param.id, t.reshape([n]));
    }
}

/// θ̄ ← d·θ̄ + (1 − d)·θ for every EMA parameter whose id has a current value.
struct Blend {
    current: HashMap<ParamId, Tensor<1>>,
    decay: f64,
    missing: usize,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(x) = self.current.remove(&param.id) else {
            self.missing += 1;
            return param;
        };
        let d = self.decay;
        param.map(|e| {
            let dims = e.dims();
            e.mul_scalar(d) + x.reshape(dims).mul_scalar(1.0 - d)
        })
    }
}

impl DeviceEma {
    /// Starts the EMA at the network's current weights (on the plain device).
    fn new(model: &UNet) -> Self {
        Self { net: model.valid() }
    }

    /// One EMA step towards `model`'s current weights (consumes the EMA so that its tensors,
    /// held only here, can be updated in place).
    fn update(self, model: &UNet, decay: f64) -> Self {
        let mut collect = CollectParams(HashMap::new());
        model.visit(&mut collect);
        let mut blend = Blend {
            current: collect.0,
            decay,
            missing: 0,
        };
        let net = self.net.map(&mut blend);
        debug_assert!(
            blend.missing == 0 && blend.current.is_empty(),
            "EMA and network parameters differ"
        );
        Self { net }
    }
}

/// Trains (a new run, or continuing the one in `opts.out`, as `start` says) and writes
/// `out/model.safetensors` (EMA weights) + `out/model.json`, `out/loss.csv` and a
/// checkpoint (`out/checkpoint/`) every `checkpoint_every` steps.
///
/// Checkpoints are swapped in recoverably: written to `checkpoint.tmp` and synced, the
/// marker `complete.json` written last, then `checkpoint` → `checkpoint.old`,
/// `checkpoint.tmp` → `checkpoint`, and `checkpoint.old` removed; a resume after a kill at
/// any point finds the newest complete one ([`recover_checkpoint`]).
pub fn train(
    opts: &TrainOptions,
    start: Start,
    device: &Device,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<TrainSummary, TrainError> {
    train_with_eval(opts, start, device, on_step, None)
}

/// What the periodic evaluation of a run sees ([`Evaluation::extra`]).
pub struct EvalPoint<'a> {
    /// Steps done.
    pub step: usize,
    /// Images seen so far.
    pub images_seen: usize,
    /// The EMA network (the weights that ship), on the plain device.
    pub ema: &'a UNet,
}

/// Measurements that go into the callback's named columns of `eval.csv`.
pub type ExtraEval<'a> = dyn FnMut(&EvalPoint) -> Result<Vec<(String, f64)>, BoxedSource> + 'a;

/// The periodic evaluation of a run ([`train_with_eval`]): every `every` steps and at the
/// last one, a row of `out/eval.csv` = step, images seen, cumulative training seconds, the
/// EMA network's [`validation_loss`] on `val` (when given) and the `extra` callback's
/// columns (e.g. the FD of samples).
pub struct Evaluation<'a> {
    /// Evaluate every this many steps (≥ 1).
    pub every: usize,
    /// Held-out images for the validation loss.
    pub val: Option<&'a Dataset>,
    /// More measurements of the EMA network, as (column, value); the first row fixes the
    /// columns.
    pub extra: Option<&'a mut ExtraEval<'a>>,
}

/// Seed of the validation loss's timesteps and noise: the same for every evaluation and
/// every run, so values along a run (and across runs) compare.
const VALIDATION_SEED: u64 = 0x7661_6c5f_6c6f_7373;

/// The ε-MSE of `net` (its first 3 output channels) on every image of `val`, at fixed
/// stratified timesteps t_i = 1 + ⌊(i + ½)·T/n⌋ and fixed noise: a deterministic function
/// of the network, comparable between evaluations, runs and backends.
///
/// L_val = (1/n) Σ_i mean‖ε̂(√ᾱ_{t_i} x0_i + √(1−ᾱ_{t_i}) ε_i, t_i) − ε_i‖².
pub fn validation_loss(
    net: &UNet,
    val: &Dataset,
    schedule: &Schedule,
    device: &Device,
) -> Result<f64, TrainError> {
    let n = val.len();
    if n == 0 {
        return Err(TrainError::data("the validation set is empty"));
    }
    let size = net.config().image_size;
    if let Some(img) = val
        .images()
        .iter()
        .find(|i| i.width != size || i.height != size)
    {
        return Err(TrainError::data(format!(
            "validation images are {}×{}, the network takes {size}×{size}",
            img.width, img.height
        )));
    }
    let big_t = schedule.num_steps();
    let mut rng = NoiseSource::new(VALIDATION_SEED);
    let mut total = 0.0;
    for (chunk_index, chunk) in val.images().chunks(64).enumerate() {
        let b = chunk.len();
        let x0 = tweedie_io::to_tensor(chunk, device)
            .map_err(|e| TrainError::data_from("validation images", e))?;
        let ts: Vec<usize> = (0..b)
            .map(|j| {
                let i = chunk_index * 64 + j;
                (1 + ((i as f64 + 0.5) * big_t as f64 / n as f64) as usize).min(big_t)
            })
            .collect();
        let [_, c, h, w] = x0.dims();
        let eps = rng.normal([b, c, h, w], device);
        let coef = |v: &[f64]| {
            let v: Vec<f32> = ts.iter().map(|&t| v[t] as f32).collect();
            tweedie_core::tensor::from_vec(v, [b, 1, 1, 1], device)
        };
        let x_t = x0 * coef(&schedule.sqrt_alpha_bar)
            + eps.clone() * coef(&schedule.sqrt_one_minus_alpha_bar);
        let net_t: Vec<f32> = ts.iter().map(|&t| (t - 1) as f32).collect();
        let pred = net.forward(x_t, &net_t).narrow(1, 0, 3);
        let per_image = (pred - eps).powf_scalar(2.0).mean_dims(&[1, 2, 3]);
        total += tweedie_core::tensor::to_vec(&per_image.reshape([b]))
            .iter()
            .map(|&v| v as f64)
            .sum::<f64>();
    }
    Ok(total / n as f64)
}

/// [`train`] with a periodic [`Evaluation`] written to `out/eval.csv` (a resumed run drops
/// the rows after its checkpoint, as for `loss.csv`).
pub fn train_with_eval(
    opts: &TrainOptions,
    start: Start,
    device: &Device,
    on_step: &mut dyn FnMut(&StepReport),
    mut evaluation: Option<Evaluation>,
) -> Result<TrainSummary, TrainError> {
    opts.validate()?;
    if let Some(e) = &evaluation
        && e.every == 0
    {
        return Err(InvalidParameter::new("evaluation interval", 0, "must be ≥ 1").into());
    }
    let resume = start == Start::Resume;
    match start {
        Start::New => {
            let found: Vec<&str> = RUN_FILES
                .iter()
                .copied()
                .filter(|f| opts.out.join(f).exists())
                .collect();
            if !found.is_empty() {
                return Err(TrainError::checkpoint(format!(
                    "{} already holds a training run ({}): pass --resume to continue it, or --force to start over (deleting it)",
                    opts.out.display(),
                    found.join(", ")
                )));
            }
        }
        Start::Overwrite | Start::Resume => {}
    }
    let started = Instant::now();
    let data = Dataset::load(
        &opts.data,
        &DatasetOptions {
            size: opts.unet.image_size,
            crop: opts.crop,
        },
    )?;
    if start == Start::Overwrite {
        // Only once the data has loaded: a typo in --data must not cost the old run.
        for f in RUN_FILES {
            let p = opts.out.join(f);
            if p.is_dir() {
                remove_dir_if_present(&p).map_err(|e| io_err(&p, e))?;
            } else if p.exists() {
                std::fs::remove_file(&p).map_err(|e| io_err(&p, e))?;
            }
        }
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| io_err(&opts.out, e))?;
    let ckpt_dir = opts.out.join("checkpoint");
    let ad = device.clone().autodiff();
    let schedule = Schedule::linear_default();
    let mut adam = AdamConfig::new();
    if let Some(c) = opts.grad_clip {
        adam = adam.with_grad_clipping(Some(GradientClippingConfig::Norm(c as f32)));
    }
    let mut optim = adam.init();

    let recovered = if resume {
        recover_checkpoint(&opts.out)?
    } else {
        None
    };
    let (mut model, mut ema, mut state) = if resume && ckpt_dir.is_dir() {
        // Every error names the file it is about.
        let file = |name: &str| ckpt_dir.join(name);
        let state_path = file("state.json");
        let state: CheckpointState = std::fs::read(&state_path)
            .map_err(|e| io_err(&state_path, e))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| io_err(&state_path, e)))?;
        if let Some(ls) = state.learn_sigma
            && ls != opts.unet.learn_sigma
        {
            return Err(TrainError::checkpoint(format!(
                "{}: the run was trained with learn_sigma = {ls}; resume it with the same setting (--learn-sigma {})",
                state_path.display(),
                if ls { "given" } else { "omitted" }
            )));
        }
        let groups = state.norm_groups.unwrap_or(32);
        if groups != opts.unet.norm_groups {
            return Err(TrainError::checkpoint(format!(
                "{}: the run was trained with norm_groups = {groups}; resume it with the same setting (--norm-groups {groups})",
                state_path.display()
            )));
        }
        let model = UNet::load(&opts.unet, file("model.safetensors"), &ad)
            .map_err(|e| TrainError::checkpoint_from("cannot load the network", e))?;
        let ema_path = file("ema.safetensors");
        let mut ema_map = WeightMap::load(&ema_path)
            .map_err(|e| TrainError::checkpoint_from("cannot load the EMA weights", e))?;
        let ema = UNet::from_weights(&opts.unet, &mut ema_map, device).map_err(|e| match e {
            tweedie_unet::UNetLoadError::Weights(tweedie_unet::WeightError::Mismatch {
                listing,
                ..
            }) => TrainError::checkpoint(format!(
                "{}: does not hold the EMA of every network tensor (resuming would reset it):\n{listing}",
                ema_path.display()
            )),
            other => TrainError::checkpoint_from("cannot load the EMA weights", other),
        })?;
        let ema = DeviceEma { net: ema };
        let optim_path = file("optim.bpk");
        let bytes = std::fs::read(&optim_path).map_err(|e| io_err(&optim_path, e))?;
        optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| {
                TrainError::checkpoint_from(
                    format!("{}: not a valid optimizer state", optim_path.display()),
                    e,
                )
            })?;
        (model, ema, state)
    } else {
        if resume {
            return Err(TrainError::checkpoint(format!(
                "--resume given but {} has no checkpoint",
                ckpt_dir.display()
            )));
        }
        let model = UNet::init(&opts.unet, opts.seed, &ad)?;
        let ema = DeviceEma::new(&model);
        (
            model,
            ema,
            CheckpointState {
                step: 0,
                recent_losses: Vec::new(),
                images_seen: 0,
                learn_sigma: None,
                train_seconds: 0.0,
                norm_groups: None,
            },
        )
    };
    state.learn_sigma = Some(opts.unet.learn_sigma);
    state.norm_groups = Some(opts.unet.norm_groups);
    let log_path = opts.out.join("loss.csv");
    // Every error about the loss log names it.
    let log_err = |e: std::io::Error| io_err(&log_path, e);
    truncate_log(&log_path, state.step).map_err(log_err)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(log_err)?;
    let learn_sigma = opts.unet.learn_sigma;
    if state.step == 0 {
        let header = if learn_sigma {
            "step,loss,lr,vlb"
        } else {
            "step,loss,lr"
        };
        writeln!(log, "{header}").map_err(log_err)?;
    }
    let eval_path = opts.out.join("eval.csv");
    let eval_err = |e: std::io::Error| io_err(&eval_path, e);
    truncate_log(&eval_path, state.step).map_err(eval_err)?;
    // The header is written with the first row (the callback's columns are known then); a
    // resumed run's rows must have the columns of the header already there.
    let mut eval_header: Option<String> = if eval_path.exists() {
        std::fs::read_to_string(&eval_path)
            .map_err(eval_err)?
            .lines()
            .next()
            .filter(|l| l.starts_with("step"))
            .map(String::from)
    } else {
        None
    };

    let first_step = state.step;
    let first_train_seconds = state.train_seconds;
    let b = opts.batch_size;
    while state.step < opts.steps {
        let step = state.step + 1;
        let step_started = Instant::now();
        // Every random choice of this step comes from (seed, step): resume is exact.
        let mut rng = NoiseSource::new(
            opts.seed
                .wrapping_mul(0x9E3779B97F4A7C15)
                .wrapping_add(step as u64),
        );
        let x0 = data.batch(b, &mut rng, &ad);
        let ts: Vec<usize> = (0..b)
            .map(|_| 1 + rng.below(schedule.num_steps()))
            .collect();
        let sa: Vec<f32> = ts
            .iter()
            .map(|&t| schedule.sqrt_alpha_bar[t] as f32)
            .collect();
        let sb: Vec<f32> = ts
            .iter()
            .map(|&t| schedule.sqrt_one_minus_alpha_bar[t] as f32)
            .collect();
        let eps = rng.normal([b, 3, opts.unet.image_size, opts.unet.image_size], &ad);
        let x_t = x0.clone() * tweedie_core::tensor::from_vec(sa, [b, 1, 1, 1], &ad)
            + eps.clone() * tweedie_core::tensor::from_vec(sb, [b, 1, 1, 1], &ad);
        let net_t: Vec<f32> = ts.iter().map(|&t| (t - 1) as f32).collect();
        let out = model.forward(x_t.clone(), &net_t);
        let pred = out.clone().narrow(1, 0, 3);
        let mse = (pred.clone() - eps).powf_scalar(2.0).mean();
        // With learned sigma: + (T/1000)·mean_i L_{t_i − 1}, the bound seeing ε̂ detached.
        let (loss, vlb) = if learn_sigma {
            let v = out.narrow(1, 3, 3);
            let vb = crate::vlb_bits_per_dim(&schedule, &x0, &x_t, pred, v, &ts).mean();
            (
                mse + vb.clone().mul_scalar(crate::vlb_weight(&schedule)),
                Some(vb),
            )
        } else {
            (mse, None)
        };
        // One read-back for both numbers.
        let values = tweedie_core::tensor::to_vec(&match &vlb {
            Some(vb) => Tensor::cat(vec![loss.clone(), vb.clone().detach()], 0),
            None => loss.clone(),
        });
        let loss_value = values[0] as f64;
        let vlb_value = vlb.as_ref().map(|_| values[1] as f64);
        if !loss_value.is_finite() {
            return Err(TrainError::Diverged {
                step,
                loss: loss_value,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = opts.lr * (step as f64 / opts.warmup.max(1) as f64).min(1.0);
        model = optim.step(lr, model, grads);
        let decay = opts
            .ema_decay
            .min((1.0 + step as f64) / (10.0 + step as f64));
        ema = ema.update(&model, decay);

        state.step = step;
        state.images_seen += b;
        state.train_seconds += step_started.elapsed().as_secs_f64();
        state.recent_losses.push(loss_value);
        if state.recent_losses.len() > 100 {
            state.recent_losses.remove(0);
        }
        match vlb_value {
            Some(v) => writeln!(log, "{step},{loss_value:.6},{lr:.3e},{v:.6}"),
            None => writeln!(log, "{step},{loss_value:.6},{lr:.3e}"),
        }
        .map_err(log_err)?;
        let done = (step - first_step) * b;
        on_step(&StepReport {
            step,
            total: opts.steps,
            loss: loss_value,
            vlb: vlb_value,
            lr,
            images_per_sec: done as f64 / (state.train_seconds - first_train_seconds).max(1e-9),
        });
        // The checkpoint first: a failed evaluation then loses no training.
        if step % opts.checkpoint_every == 0 || step == opts.steps {
            log.flush().map_err(log_err)?;
            save_checkpoint(&opts.out, &model, &ema, &optim, &state)?;
        }
        if let Some(e) = evaluation.as_mut()
            && (step % e.every == 0 || step == opts.steps)
        {
            let failed = |context: &str, source: Option<BoxedSource>| TrainError::Evaluation {
                step,
                context: context.to_string(),
                source,
            };
            let mut columns = vec![
                ("images_seen".to_string(), state.images_seen as f64),
                ("train_seconds".to_string(), state.train_seconds),
            ];
            if let Some(val) = e.val {
                let v = validation_loss(&ema.net, val, &schedule, device)
                    .map_err(|err| failed("validation loss", Some(Box::new(err))))?;
                columns.push(("val_loss".into(), v));
            }
            if let Some(extra) = e.extra.as_mut() {
                let point = EvalPoint {
                    step,
                    images_seen: state.images_seen,
                    ema: &ema.net,
                };
                columns.extend(extra(&point).map_err(|err| failed("measurements", Some(err)))?);
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&eval_path)
                .map_err(eval_err)?;
            let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
            let header = format!("step,{}", names.join(","));
            match &eval_header {
                None => {
                    writeln!(f, "{header}").map_err(eval_err)?;
                    eval_header = Some(header);
                }
                Some(h) if *h != header => {
                    return Err(failed(
                        &format!(
                            "{} has the columns {h:?}, this run measures {header:?}: resume with the same evaluation options, or move the file aside",
                            eval_path.display()
                        ),
                        None,
                    ));
                }
                Some(_) => {}
            }
            let values: Vec<String> = columns.iter().map(|(_, v)| format!("{v}")).collect();
            writeln!(f, "{step},{}", values.join(",")).map_err(eval_err)?;
        }
    }
    WeightMap::save_safetensors(&ema.net.export(), &opts.out.join("model.safetensors"))
        .map_err(|e| TrainError::checkpoint_from("cannot save the trained weights", e))?;
    let config_path = opts.out.join("model.json");
    std::fs::write(&config_path, opts.unet.to_json()).map_err(|e| io_err(&config_path, e))?;
    let final_loss =
        state.recent_losses.iter().sum::<f64>() / state.recent_losses.len().max(1) as f64;
    Ok(TrainSummary {
        steps: state.step,
        images_seen: state.images_seen,
        wall_seconds: started.elapsed().as_secs_f64(),
        final_loss,
        images: data.len(),
        skipped: data.skipped.len(),
        steps_this_run: state.step - first_step,
        images_per_sec: ((state.step - first_step) * b) as f64
            / (state.train_seconds - first_train_seconds).max(1e-9),
        train_seconds: state.train_seconds,
        recovered,
    })
}

fn save_checkpoint(
    out: &Path,
    model: &UNet,
    ema: &DeviceEma,
    optim: &burn::optim::ModuleOptimizer,
    state: &CheckpointState,
) -> Result<(), TrainError> {
    // Write a fresh folder, sync it, mark it complete, then swap it in (see `train`): a kill
    // at any point leaves a complete checkpoint that `recover_checkpoint` finds.
    let [dir, tmp, old] = checkpoint_dirs(out);
    remove_dir_if_present(&tmp).map_err(|e| io_err(&tmp, e))?;
    std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    for (name, tensors) in [
        ("model.safetensors", &model.export()),
        ("ema.safetensors", &ema.net.export()),
    ] {
        let path = tmp.join(name);
        WeightMap::save_safetensors(tensors, &path)
            .map_err(|e| TrainError::checkpoint_from("cannot save the weights", e))?;
        sync_file(&path)?;
    }
    let bytes = optim
        .into_bytes()
        .map_err(|e| TrainError::checkpoint_from("cannot serialise the optimizer state", e))?;
    write_synced(&tmp.join("optim.bpk"), &bytes[..])?;
    let state_path = tmp.join("state.json");
    write_synced(
        &state_path,
        &serde_json::to_vec(state).map_err(|e| io_err(&state_path, e))?,
    )?;
    sync_dir(&tmp);
    let manifest = Manifest {
        step: state.step,
        files: CHECKPOINT_FILES.iter().map(|f| f.to_string()).collect(),
    };
    let marker = tmp.join(MARKER);
    write_synced(
        &marker,
        &serde_json::to_vec(&manifest).map_err(|e| io_err(&marker, e))?,
    )?;
    sync_dir(&tmp);
    remove_dir_if_present(&old).map_err(|e| io_err(&old, e))?;
    if dir.exists() {
        std::fs::rename(&dir, &old).map_err(|e| io_err(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| io_err(&tmp, e))?;
    sync_dir(out);
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Keeps only the header and rows with step ≤ `step` (a resumed run rewrites the rest).
fn truncate_log(path: &Path, step: usize) -> std::io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path)?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("step")
                || l.split(',')
                    .next()
                    .and_then(|s| s.parse::<usize>().ok())
                    .is_some_and(|s| s <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device EMA equals the host formula it replaced, and its cost per step against the
    /// host version (export every tensor, blend in f32 on the host), on the embedded model's
    /// config. Timing only: `cargo test --release -p tweedie-train ema_cost -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "timing"]
    fn ema_cost_device_vs_host() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let cfg = UNetConfig::small(32, 32, &[1.0, 2.0, 2.0], &[16, 8]);
        let model = UNet::init(&cfg, 0, &ad).unwrap();
        let other = UNet::init(&cfg, 1, &ad).unwrap();
        let reps = 50;
        // Host: what the trainer did before (export + f32 loop).
        let mut host = model.export();
        let t = Instant::now();
        for _ in 0..reps {
            let current = other.export();
            let (d, e) = (0.999f32, 1.0 - 0.999f32);
            for (k, (_, v)) in &current {
                if let Some((_, acc)) = host.get_mut(k) {
                    for (a, x) in acc.iter_mut().zip(v) {
                        *a = d * *a + e * x;
                    }
                }
            }
        }
        let host_ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        let mut ema = DeviceEma::new(&model);
        let t = Instant::now();
        for _ in 0..reps {
            ema = ema.update(&other, 0.999);
        }
        // Reading one value back waits for the work.
        let _ = ema.net.export();
        let device_ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        let dev = ema.net.export();
        let worst = host
            .iter()
            .flat_map(|(k, (_, v))| v.iter().zip(&dev[k].1).map(|(a, b)| (a - b).abs()))
            .fold(0f32, f32::max);
        eprintln!(
            "EMA update, {} parameters: host {host_ms:.2} ms/step, device {device_ms:.2} ms/step (incl. one final export); max difference {worst:.2e}",
            model.num_parameters()
        );
        assert!(worst < 1e-5);
    }
}
