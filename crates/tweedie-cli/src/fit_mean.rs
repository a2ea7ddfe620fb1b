//! `tweedie fit-mean`: fit a model's post-hoc correction of x̂0's per-channel image mean
//! ([`MeanCorrection`]) on training images, and write the config that carries it.

use crate::args::check_crop;
use crate::model;
use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use tweedie_core::{FitRule, MeanCorrection, Schedule};
use tweedie_train::{Dataset, DatasetOptions};

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
    crate::output::check_out(&c.out)?;
    let device = model::device(c.backend.as_str())?;
    let mut net = model::load(&c.model, c.config.as_deref(), &device)?;
    if net.net.config().mean_correction.is_some() {
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
    let fit = MeanCorrection::fit(&net, &batches, &schedule, &a.t, c.seed, a.rule.into())?;
    for ((t, b), a) in fit.t.iter().zip(&fit.slope).zip(&fit.intercept) {
        println!(
            "t={t}: slope {} intercept {}",
            crate::output::slash_list(b),
            crate::output::slash_list(a)
        );
    }
    let mut config = net.net.config().clone();
    config.mean_correction = Some(fit.clone());
    let config_path = c.out.join("model.json");
    tweedie_io::write_atomic(&config_path, serde_json::to_string(&config)?.as_bytes())?;
    let settings = json!({
        "model": c.model, "data": a.data, "crop": a.crop, "images": n, "t": a.t, "seed": c.seed, "rule": fit.rule,
        "seconds": started.elapsed().as_secs_f64(), "correction": fit,
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
