//! The training loop.

use crate::{Dataset, DatasetOptions};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tweedie_core::{NoiseSource, Schedule};
use tweedie_unet::{Export, UNet, UNetConfig, WeightMap};

/// Training errors.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Data problems.
    #[error("training data: {0}")]
    Data(String),
    /// Invalid options.
    #[error("invalid training option: {0}")]
    Invalid(String),
    /// Checkpoint I/O.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Divergence.
    #[error("training diverged at step {step}: loss is {loss}")]
    Diverged {
        /// Step.
        step: usize,
        /// Loss value.
        loss: f64,
    },
}

/// Everything a run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Folder of training images.
    pub data: PathBuf,
    /// Output folder (weights, config, checkpoints, loss log).
    pub out: PathBuf,
    /// Network architecture.
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
        let bad = |m: &str| Err(TrainError::Invalid(m.to_string()));
        if self.batch_size == 0 {
            return bad("batch size must be ≥ 1");
        }
        if self.steps == 0 {
            return bad("steps must be ≥ 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("learning rate must be > 0");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("EMA decay must lie in [0, 1)");
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint interval must be ≥ 1");
        }
        self.unet
            .validate()
            .map_err(|e| TrainError::Invalid(e.to_string()))
    }
}

/// Reported after every step.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Step just finished (1-based).
    pub step: usize,
    /// Total steps.
    pub total: usize,
    /// Its loss.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Images per second since the run (or resume) started.
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
    /// Training throughput of this invocation's loop (data loading excluded).
    pub images_per_sec: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    recent_losses: Vec<f64>,
    images_seen: usize,
}

fn ckpt_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint(e.to_string())
}

/// Trains (or resumes, if `out/checkpoint/` exists and `resume` is set) and writes
/// `out/model.safetensors` (EMA weights) + `out/model.json`.
pub fn train(
    opts: &TrainOptions,
    resume: bool,
    device: &Device,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<TrainSummary, TrainError> {
    opts.validate()?;
    let started = Instant::now();
    let data = Dataset::load(
        &opts.data,
        &DatasetOptions {
            size: opts.unet.image_size,
            crop: opts.crop,
        },
    )?;
    std::fs::create_dir_all(&opts.out).map_err(ckpt_err)?;
    let ckpt_dir = opts.out.join("checkpoint");
    let ad = device.clone().autodiff();
    let schedule = Schedule::linear_default();
    let mut adam = AdamConfig::new();
    if let Some(c) = opts.grad_clip {
        adam = adam.with_grad_clipping(Some(GradientClippingConfig::Norm(c as f32)));
    }
    let mut optim = adam.init();

    let (mut model, mut ema, mut state) = if resume && ckpt_dir.join("state.json").exists() {
        let model =
            UNet::load(&opts.unet, ckpt_dir.join("model.safetensors"), &ad).map_err(ckpt_err)?;
        let mut ema_map = WeightMap::load(ckpt_dir.join("ema.safetensors")).map_err(ckpt_err)?;
        let ema = export_of(&mut ema_map, &model.export());
        let bytes = std::fs::read(ckpt_dir.join("optim.bpk")).map_err(ckpt_err)?;
        optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| ckpt_err(format!("{e:?}")))?;
        let state: CheckpointState =
            serde_json::from_slice(&std::fs::read(ckpt_dir.join("state.json")).map_err(ckpt_err)?)
                .map_err(ckpt_err)?;
        (model, ema, state)
    } else {
        if resume {
            return Err(TrainError::Checkpoint(format!(
                "--resume given but {} has no checkpoint",
                ckpt_dir.display()
            )));
        }
        let model = UNet::init(&opts.unet, opts.seed, &ad)
            .map_err(|e| TrainError::Invalid(e.to_string()))?;
        let ema = model.export();
        (
            model,
            ema,
            CheckpointState {
                step: 0,
                recent_losses: Vec::new(),
                images_seen: 0,
            },
        )
    };
    let log_path = opts.out.join("loss.csv");
    truncate_log(&log_path, state.step).map_err(ckpt_err)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(ckpt_err)?;
    if state.step == 0 {
        writeln!(log, "step,loss,lr").map_err(ckpt_err)?;
    }

    let first_step = state.step;
    let b = opts.batch_size;
    let loop_start = Instant::now();
    while state.step < opts.steps {
        let step = state.step + 1;
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
        let x_t = x0 * tweedie_core::tensor::from_vec(sa, [b, 1, 1, 1], &ad)
            + eps.clone() * tweedie_core::tensor::from_vec(sb, [b, 1, 1, 1], &ad);
        let net_t: Vec<f32> = ts.iter().map(|&t| (t - 1) as f32).collect();
        let pred = model.forward(x_t, &net_t).narrow(1, 0, 3);
        let loss = (pred - eps).powf_scalar(2.0).mean();
        let loss_value = tweedie_core::tensor::scalar(&loss);
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
        ema_update(&mut ema, &model.export(), decay);

        state.step = step;
        state.images_seen += b;
        state.recent_losses.push(loss_value);
        if state.recent_losses.len() > 100 {
            state.recent_losses.remove(0);
        }
        writeln!(log, "{step},{loss_value:.6},{lr:.3e}").map_err(ckpt_err)?;
        let done = (step - first_step) * b;
        on_step(&StepReport {
            step,
            total: opts.steps,
            loss: loss_value,
            lr,
            images_per_sec: done as f64 / loop_start.elapsed().as_secs_f64(),
        });
        if step % opts.checkpoint_every == 0 || step == opts.steps {
            log.flush().map_err(ckpt_err)?;
            save_checkpoint(&ckpt_dir, &model, &ema, &optim, &state)?;
        }
    }
    WeightMap::save_safetensors(&ema, &opts.out.join("model.safetensors")).map_err(ckpt_err)?;
    std::fs::write(opts.out.join("model.json"), opts.unet.to_json()).map_err(ckpt_err)?;
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
        images_per_sec: ((state.step - first_step) * b) as f64 / loop_start.elapsed().as_secs_f64(),
    })
}

fn export_of(map: &mut WeightMap, like: &Export) -> Export {
    like.iter()
        .map(|(k, (s, v))| {
            (
                k.clone(),
                (s.clone(), map.take(k, s).unwrap_or_else(|| v.clone())),
            )
        })
        .collect()
}

fn ema_update(ema: &mut Export, current: &Export, decay: f64) {
    let (d, e) = (decay as f32, 1.0 - decay as f32);
    for (k, (_, v)) in current {
        if let Some((_, acc)) = ema.get_mut(k) {
            for (a, x) in acc.iter_mut().zip(v) {
                *a = d * *a + e * x;
            }
        }
    }
}

fn save_checkpoint(
    dir: &Path,
    model: &UNet,
    ema: &Export,
    optim: &burn::optim::ModuleOptimizer,
    state: &CheckpointState,
) -> Result<(), TrainError> {
    // Write into a fresh folder, then swap it in: a crash never leaves a half checkpoint.
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(ckpt_err)?;
    WeightMap::save_safetensors(&model.export(), &tmp.join("model.safetensors"))
        .map_err(ckpt_err)?;
    WeightMap::save_safetensors(ema, &tmp.join("ema.safetensors")).map_err(ckpt_err)?;
    let bytes = optim.into_bytes().map_err(|e| ckpt_err(format!("{e:?}")))?;
    std::fs::write(tmp.join("optim.bpk"), &bytes[..]).map_err(ckpt_err)?;
    std::fs::write(
        tmp.join("state.json"),
        serde_json::to_vec(state).map_err(ckpt_err)?,
    )
    .map_err(ckpt_err)?;
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(ckpt_err)?;
    }
    std::fs::rename(&tmp, dir).map_err(ckpt_err)?;
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
