//! `tweedie fit-mean`: fit a model's post-hoc correction of x̂0's per-channel image mean
//! ([`MeanCorrection`]) on training images, optionally refit its intercepts on sampler
//! chains ([`fit_mean_on_chain`]) and calibrate its last step on fresh chains
//! ([`fit_last_step_open_loop`]), and write the config that carries it.

use crate::args::{check_crop, check_steps};
use crate::model;
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use tweedie_core::{FitRule, MeanCorrection, Schedule};
use tweedie_samplers::{ChainOptions, Denoiser, fit_last_step_open_loop, fit_mean_on_chain};
use tweedie_train::{Dataset, DatasetOptions};

/// Added to `--seed` for the chains' noise, so that `generate --seed S` never replays the
/// chains a correction was fitted on.
pub const CHAIN_SEED_OFFSET: u64 = 1 << 32;

/// Added to `--seed` for the last-step calibration's chains: neither `generate --seed S` nor
/// the chain fit draws them.
pub const LAST_STEP_SEED_OFFSET: u64 = 1 << 33;

/// `tweedie fit-mean`: fits a [`MeanCorrection`] on training images and writes the config.
#[derive(Args, Debug)]
pub struct FitMeanArgs {
    #[command(flatten)]
    pub common: crate::args::Common,
    /// Training images to fit on (not the held-out ones you evaluate with).
    #[arg(long)]
    pub data: PathBuf,
    /// Centre-crop side before resizing (as in training).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Fit on the first N images by name (0: all).
    #[arg(long, default_value_t = 2048)]
    pub n: usize,
    /// Timesteps to fit at (between them the lines are interpolated linearly).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,50,100,150,200,250,300,350,400,450,500,550,600,650,700,750,800,850,900,950,1000"
    )]
    pub t: Vec<usize>,
    /// How each line's slope is chosen: `variance` (the corrected mean varies as much as the
    /// posterior mean would: b = √(Cov(m̂, m)/Var(m̂))) or `regression` (least squares,
    /// b = Cov(m̂, m)/Var(m̂), which also shrinks part of the signal away).
    #[arg(long, value_enum, default_value_t = RuleArg::Variance)]
    pub rule: RuleArg,
    /// Then refit the intercepts on this many reverse chains from x_T ~ N(0, I) (0: no chain
    /// fit): at every step, x̂0's channel means are shifted so that their average over the
    /// chains equals the images' mean (the tower property a correct model's chain satisfies).
    /// The chains run as `generate` would with `--chain-steps`, `--variance` and `--no-clip`.
    #[arg(long, default_value_t = 0)]
    pub chains: usize,
    /// Reverse steps of the chains (strided from T = 1000).
    #[arg(long, default_value_t = 100)]
    pub chain_steps: usize,
    /// Chains the network evaluates at once.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// The chains do not clamp x̂0 to [−1, 1] (as `generate --no-clip`); by default they do,
    /// and the shift is solved for the clamped x̂0.
    #[arg(long)]
    pub no_clip: bool,
    /// On the chains, also match the spread: scale each chain's x̂0 mean about the chains'
    /// average so that its variance equals Var(E[m | x_t]) as the lines' fit measured it on
    /// noised images (their `posterior_variance`). Needs a table that records it (not
    /// `--keep-fit` on a table fitted before session 11).
    #[arg(long)]
    pub chain_variance: bool,
    /// Keep the correction the model's config already has (instead of refitting its lines on
    /// noised images): only the chain steps then change it (`--chains`, `--last-step-chains`;
    /// one of them is needed).
    #[arg(long)]
    pub keep_fit: bool,
    /// Last, calibrate the last step (t = 1) open-loop on this many fresh chains (0: none):
    /// run them under the table as it is then (seed `--seed` + 2³³, with `--chain-steps`,
    /// `--variance` and `--no-clip`), and shift t = 1's intercept so that their samples'
    /// average channel means equal the images' mean (t = 1's intercept moves, up or down).
    /// Every sampler whose chain ends at t = 1 then gets the shift at its last step.
    #[arg(long, default_value_t = 0)]
    pub last_step_chains: usize,
}

/// `--rule`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleArg {
    /// Variance matching.
    Variance,
    /// Least squares.
    Regression,
}

impl From<RuleArg> for FitRule {
    fn from(r: RuleArg) -> Self {
        match r {
            RuleArg::Variance => FitRule::Variance,
            RuleArg::Regression => FitRule::Regression,
        }
    }
}

/// Fits the correction and writes `OUT/model.json` (the model's config carrying it) and
/// `OUT/mean_correction.json`.
pub fn run(a: FitMeanArgs) -> Result<()> {
    let c = &a.common;
    check_crop(a.crop)?;
    let schedule = Schedule::linear_default();
    for &t in &a.t {
        schedule
            .check_timestep(t)
            .map_err(|e| anyhow::anyhow!("--t {t}: {e}"))?;
    }
    if a.t.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--t must list increasing timesteps, not {:?}", a.t);
    }
    if a.chains > 0 || a.last_step_chains > 0 {
        check_steps("--chain-steps", a.chain_steps)?;
        if a.chain_steps < 2 && a.last_step_chains > 0 {
            bail!("--last-step-chains needs --chain-steps ≥ 2 (a chain that ends at t = 1)");
        }
        if a.batch == 0 {
            bail!("--batch must be ≥ 1");
        }
    }
    if a.chains == 0 && a.chain_variance {
        bail!("--chain-variance works on chains: give --chains N (e.g. 1024)");
    }
    if a.chains == 0 && a.last_step_chains == 0 && a.keep_fit {
        bail!("--keep-fit works on chains: give --chains N or --last-step-chains N (e.g. 1024)");
    }
    crate::output::check_out(&c.out)?;
    let device = model::device(c.backend.as_str())?;
    let mut net = model::load_adm(&c.model, c.config.as_deref(), &device)?;
    let existing = net.net.config().mean_correction.clone();
    if a.keep_fit && existing.is_none() {
        bail!(
            "--keep-fit: the model's config has no mean correction to keep; drop --keep-fit to fit one"
        );
    }
    if a.keep_fit
        && a.chain_variance
        && existing
            .as_ref()
            .is_some_and(|m| m.posterior_variance.is_none())
    {
        bail!(
            "--chain-variance needs the lines' posterior variances, which the kept table does not record (it was fitted before they were); drop --keep-fit to refit the lines"
        );
    }
    if existing.is_some() && !a.keep_fit {
        eprintln!("note: the model's config already has a mean correction; fitting without it");
        net.net.set_mean_correction(None)?;
    }
    let size = net.net.config().image_size;
    let data = Dataset::load(&a.data, &DatasetOptions { size, crop: a.crop })?;
    let n = if a.n == 0 {
        data.len()
    } else {
        a.n.min(data.len())
    };
    if n < 2 {
        bail!(
            "the fit needs at least 2 images; {} has {}",
            a.data.display(),
            data.len()
        );
    }
    let batches = data.images()[..n]
        .chunks(64)
        .map(|chunk| tweedie_io::to_tensor(chunk, &device))
        .collect::<Result<Vec<_>, _>>()?;
    let started = std::time::Instant::now();
    let kept_t = existing.as_ref().map(|m| m.t.clone());
    let mut fit = match existing.filter(|_| a.keep_fit) {
        Some(kept) => {
            println!(
                "keeping the config's correction ({} timesteps)",
                kept.t.len()
            );
            kept
        }
        None => {
            let fit = MeanCorrection::fit(&net, &batches, &schedule, &a.t, c.seed, a.rule.into())?;
            for ((t, b), a) in fit.t.iter().zip(&fit.slope).zip(&fit.intercept) {
                println!(
                    "t={t}: slope {} intercept {}",
                    crate::output::slash_list(b),
                    crate::output::slash_list(a)
                );
            }
            fit
        }
    };
    let line_seconds = started.elapsed().as_secs_f64();
    let mut chain_settings = serde_json::Value::Null;
    if a.chains > 0 {
        fit = fit_on_chains(&a, &mut net, &fit, &batches, &schedule, &device)?;
        chain_settings = json!({
            "chains": a.chains, "steps": a.chain_steps, "clip": !a.no_clip, "match_variance": a.chain_variance,
            "variance": c.variance_or_beta(), "seed": c.seed.wrapping_add(CHAIN_SEED_OFFSET),
            "kept_fit": a.keep_fit, "seconds": started.elapsed().as_secs_f64() - line_seconds,
        });
    }
    let mut last_step_settings = serde_json::Value::Null;
    if a.last_step_chains > 0 {
        let before = started.elapsed().as_secs_f64();
        fit = calibrate_last_step(&a, &mut net, &fit, &batches, &schedule, &device)?;
        last_step_settings = json!({
            "chains": a.last_step_chains, "steps": a.chain_steps, "clip": !a.no_clip,
            "variance": c.variance_or_beta(), "seed": c.seed.wrapping_add(LAST_STEP_SEED_OFFSET),
            "seconds": started.elapsed().as_secs_f64() - before,
        });
    }
    let mut config = net.net.config().clone();
    config.mean_correction = Some(fit.clone());
    let config_path = c.out.join("model.json");
    tweedie_io::write_atomic(&config_path, config.to_json().as_bytes())?;
    let settings = json!({
        // The lines' timesteps: --t, or the kept table's.
        "t": if a.keep_fit { kept_t } else { Some(a.t.clone()) },
        "model": c.model, "data": a.data, "crop": a.crop, "images": n, "seed": c.seed, "rule": fit.rule,
        "seconds": started.elapsed().as_secs_f64(), "chain_fit": chain_settings,
        "last_step_calibration": last_step_settings, "correction": fit,
    });
    tweedie_io::write_atomic(
        &c.out.join("mean_correction.json"),
        serde_json::to_string_pretty(&settings)?.as_bytes(),
    )?;
    println!(
        "wrote {} (use it with --model {} --config {}) and mean_correction.json, fitted on {n} images in {:.0} s",
        config_path.display(),
        c.model,
        config_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The fitting images' average channel means ([−1, 1] scale): the chains' target.
fn image_mean(batches: &[tweedie_core::Tensor<4>]) -> Vec<f64> {
    let truth: Vec<Vec<f64>> = batches
        .iter()
        .flat_map(tweedie_core::mean_correction::channel_means)
        .collect();
    let channels = truth[0].len();
    (0..channels)
        .map(|k| truth.iter().map(|r| r[k]).sum::<f64>() / truth.len() as f64)
        .collect()
}

/// The chains' options from `--chain-steps`, `--variance` and `--no-clip`.
fn chain_options(a: &FitMeanArgs) -> ChainOptions {
    ChainOptions {
        steps: a.chain_steps,
        variance: a.common.variance_or_beta(),
        clip_x0: !a.no_clip,
        ..Default::default()
    }
}

/// Calibrates `fit`'s last step open-loop on `a.last_step_chains` fresh chains
/// ([`fit_last_step_open_loop`]) and prints the samples' mean before and the shift.
fn calibrate_last_step(
    a: &FitMeanArgs,
    net: &mut tweedie_unet::UNetEps,
    fit: &MeanCorrection,
    batches: &[tweedie_core::Tensor<4>],
    schedule: &Schedule,
    device: &burn::tensor::Device,
) -> Result<MeanCorrection> {
    let target = image_mean(batches);
    net.net.set_mean_correction(Some(fit.clone()))?;
    let steps = a.chain_steps.min(schedule.num_steps());
    let groups = a.last_step_chains.div_ceil(a.batch);
    let mut progress = Progress::new(groups * steps, "last-step chains' steps");
    let size = net.net.config().image_size;
    let calibrated = fit_last_step_open_loop(
        &Denoiser::new(&*net, schedule),
        fit,
        &target,
        [a.last_step_chains, target.len(), size, size],
        a.batch,
        &chain_options(a),
        a.common.seed.wrapping_add(LAST_STEP_SEED_OFFSET),
        device,
        &mut |_| progress.advance(1),
    )
    .context("the last-step calibration")?;
    progress.finish();
    let last = calibrated
        .last_step
        .as_ref()
        .expect("a last-step calibration records itself");
    println!(
        "last-step calibration: {} fresh chains, {steps} steps; their samples' mean {} against the images' {} ([−1, 1] scale); t = 1's shift is now {}",
        a.last_step_chains,
        crate::output::slash_list(&last.before),
        crate::output::slash_list(&target),
        crate::output::slash_list(&last.shift),
    );
    Ok(calibrated)
}

/// Refits `fit`'s intercepts on `a.chains` chains ([`fit_mean_on_chain`]) towards the mean
/// colour of the fitting images, and prints the shifts at every tenth chain timestep.
fn fit_on_chains(
    a: &FitMeanArgs,
    net: &mut tweedie_unet::UNetEps,
    fit: &MeanCorrection,
    batches: &[tweedie_core::Tensor<4>],
    schedule: &Schedule,
    device: &burn::tensor::Device,
) -> Result<MeanCorrection> {
    let c = &a.common;
    let target = image_mean(batches);
    let channels = target.len();
    net.net.set_mean_correction(Some(fit.clone()))?;
    let opts = chain_options(a);
    let steps = a.chain_steps.min(schedule.num_steps());
    let mut progress = Progress::new(steps, "chain steps");
    let size = net.net.config().image_size;
    let chained = fit_mean_on_chain(
        &Denoiser::new(&*net, schedule),
        fit,
        &target,
        [a.chains, channels, size, size],
        a.batch,
        &opts,
        c.seed.wrapping_add(CHAIN_SEED_OFFSET),
        a.chain_variance,
        device,
        &mut |info| {
            progress.advance(1);
            if info.step % 10 == 0 || info.step == info.total {
                progress.say(&format!("chain steps, at t = {}", info.t));
            }
        },
    )
    .context("the chain fit")?;
    progress.finish();
    let fit = chained
        .chain
        .as_ref()
        .expect("a chain fit records its chain");
    println!(
        "chain fit: {} chains, {steps} steps; target mean {} ([−1, 1] scale); shift of x̂0's mean{}:",
        a.chains,
        crate::output::slash_list(&target),
        if fit.scale.is_empty() {
            ""
        } else {
            " (and the spread's scale)"
        }
    );
    for (i, (t, s)) in chained.t.iter().zip(&fit.shift).enumerate().rev() {
        if i % 10 == 0 || i + 1 == fit.shift.len() {
            match fit.scale.get(i) {
                Some(k) => println!(
                    "  t={t}: {} (scale {})",
                    crate::output::slash_list(s),
                    crate::output::slash_list(k)
                ),
                None => println!("  t={t}: {}", crate::output::slash_list(s)),
            }
        }
    }
    Ok(chained)
}
