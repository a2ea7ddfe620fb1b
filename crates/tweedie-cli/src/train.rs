//! `tweedie train`.

use crate::args::BackendArg;
use crate::model;
use crate::output::check_out;
use crate::progress::bar;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

/// A flag given twice takes its last value (`args_override_self`), so a wrapper script's
/// defaults can be overridden: `training/celeba32_v2/train.sh --resume --steps 32000`.
#[derive(Args, Debug)]
#[command(args_override_self = true)]
pub struct TrainArgs {
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
    /// `cpu` (burn flex), `wgpu` or `libtorch` (builds with those features).
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: crate::args::BackendArg,
    /// Also learn the reverse-step variances (6 output channels, Improved DDPM's hybrid loss
    /// L_simple + λ·L_vlb; sample with `--variance learned`). A resume must repeat it.
    #[arg(long)]
    learn_sigma: bool,
    /// Groups of every GroupNorm (guided-diffusion's 32 by default). Keep ≥ 4 channels per
    /// group at the first level (e.g. 8 for `--channels 32`): with one channel per group the
    /// network loses each image's mean colour (colour casts). A resume must repeat it.
    #[arg(long, default_value_t = 32)]
    norm_groups: usize,
    /// Held-out images (e.g. ../shared/data/celeba/val): every `--eval-every` steps the EMA
    /// network's validation loss (fixed t and noise) and the FD of its samples against these
    /// images go into OUT/eval.csv.
    #[arg(long)]
    val: Option<PathBuf>,
    /// Evaluation interval in steps (with `--val`).
    #[arg(long, default_value_t = 1000, requires = "val")]
    eval_every: usize,
    /// Samples drawn per evaluation for FD-Alex and colour-FD against `--val` (seed 0, σ² = β;
    /// 0: no samples, only the validation loss). FD from few samples is biased upwards: it
    /// tracks the run; the model card's numbers use 256.
    #[arg(long, default_value_t = 128, requires = "val")]
    eval_samples: usize,
    /// Strided ancestral steps per evaluation sample.
    #[arg(long, default_value_t = 50, requires = "val")]
    eval_sample_steps: usize,
}

/// FD-Alex and colour-FD of the EMA network's samples against the validation images, for
/// [`tweedie_train::Evaluation::extra`].
struct SampleFd {
    lpips: tweedie_metrics::Lpips,
    reference: tweedie_metrics::SetFeatures,
    samples: usize,
    steps: usize,
    size: usize,
    device: burn::tensor::Device,
}

impl SampleFd {
    fn measure(
        &self,
        point: &tweedie_train::EvalPoint,
    ) -> Result<Vec<(String, f64)>, tweedie_train::BoxedSource> {
        let schedule = tweedie_core::Schedule::linear_default();
        let eps = tweedie_unet::UNetEps {
            net: point.ema.clone(),
        };
        let opts = tweedie_samplers::ChainOptions {
            steps: self.steps,
            ..Default::default()
        };
        let mut feats = tweedie_metrics::SetFeatures::new();
        let mut noise = tweedie_core::NoiseSource::new(0);
        let mut left = self.samples;
        while left > 0 {
            let b = left.min(64);
            let out = tweedie_samplers::generate(
                &tweedie_samplers::Denoiser::new(&eps, &schedule),
                [b, 3, self.size, self.size],
                &opts,
                &mut noise,
                &self.device,
                &mut tweedie_samplers::Observer::with_progress(|_| {}),
            )?;
            feats.add(&self.lpips, &out.x0.clamp(-1.0, 1.0), 32)?;
            left -= b;
        }
        let s = tweedie_metrics::fd_scores(&feats, &self.reference, ("samples", "--val"))?;
        Ok(vec![
            ("fd_alex".into(), s.fd_alex),
            ("colour_fd".into(), s.fd_colour),
        ])
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    crate::args::check_crop(a.crop)?;
    if !(a.grad_clip.is_finite() && a.grad_clip >= 0.0) {
        bail!(
            "--grad-clip must be finite and ≥ 0 (0: no clipping), got {}",
            a.grad_clip
        );
    }
    let mut unet = tweedie_unet::UNetConfig::small(a.size, a.channels, &a.mult, &a.attention);
    unet.learn_sigma = a.learn_sigma;
    unet.norm_groups = a.norm_groups;
    unet.validate()?;
    check_out(&a.out)?;
    let device = model::device(a.backend.as_str())?;
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
    // The validation set and, for FD, its AlexNet features (once).
    let val = match &a.val {
        Some(dir) => Some(
            tweedie_train::Dataset::load(
                dir,
                &tweedie_train::DatasetOptions {
                    size: a.size,
                    crop: a.crop,
                },
            )
            .with_context(|| format!("--val {}", dir.display()))?,
        ),
        None => None,
    };
    if val.is_some() && a.eval_every == 0 {
        bail!("--eval-every must be ≥ 1");
    }
    let sample_fd = match &val {
        Some(v) if a.eval_samples > 0 => {
            let max_steps = tweedie_core::Schedule::linear_default().num_steps();
            if a.eval_samples < 2 || v.len() < 2 || !(1..=max_steps).contains(&a.eval_sample_steps)
            {
                bail!(
                    "FD needs ≥ 2 samples and ≥ 2 validation images, and 1 to 1000 sampling steps (--eval-samples {}, {} images in --val, --eval-sample-steps {})",
                    a.eval_samples,
                    v.len(),
                    a.eval_sample_steps
                );
            }
            let lpips = tweedie_metrics::Lpips::alex_default(&device)?;
            let mut reference = tweedie_metrics::SetFeatures::new();
            for chunk in v.images().chunks(64) {
                reference.add(&lpips, &tweedie_io::to_tensor(chunk, &device)?, 32)?;
            }
            Some(SampleFd {
                lpips,
                reference,
                samples: a.eval_samples,
                steps: a.eval_sample_steps,
                size: a.size,
                device: device.clone(),
            })
        }
        _ => None,
    };
    let mut extra = |p: &tweedie_train::EvalPoint| match &sample_fd {
        Some(fd) => fd.measure(p),
        None => Ok(Vec::new()),
    };
    let evaluation = val.as_ref().map(|v| tweedie_train::Evaluation {
        every: a.eval_every,
        val: Some(v),
        extra: Some(&mut extra),
    });
    let summary = tweedie_train::train_with_eval(
        &opts,
        start,
        &device,
        &mut |r| {
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
        },
        evaluation,
    )?;
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
