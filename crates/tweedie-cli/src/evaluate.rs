//! `tweedie evaluate`: the model card's numbers — Tweedie denoising quality on held-out
//! images against a Gaussian-prior (Wiener) baseline, and an 8×8 grid of samples.

use crate::args::{check_crop, check_steps};
use crate::model;
use anyhow::Result;
use burn::tensor::{Device, Tensor};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use tweedie::tasks::{Scores, score};
use tweedie_core::mean_correction::{channel_means, noised_channel_means};
use tweedie_core::priors::GaussianPrior;
use tweedie_core::{EpsModel, NoiseSource, Schedule};
use tweedie_metrics::{Lpips, mean_calibration};
use tweedie_samplers::ChainOptions;
use tweedie_train::{Dataset, DatasetOptions};

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub common: crate::args::Common,
    /// Held-out images.
    #[arg(long)]
    pub val: PathBuf,
    /// Training images (to fit the Gaussian baseline's per-pixel mean and variance).
    #[arg(long)]
    pub train: PathBuf,
    /// Centre-crop side before resizing (as in training; ≥ 1, at most the smaller image
    /// side).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Timesteps to evaluate.
    #[arg(long, value_delimiter = ',', default_value = "30,100,300")]
    pub t: Vec<usize>,
    /// Timesteps at which to check the calibration of x̂₀'s per-image mean colour (the flag
    /// without values: skip; skipped too with fewer than 2 held-out images). A slope of truth
    /// on prediction below 1 means over-spread colours, which sampling turns into casts.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "100,300,500,700,900")]
    pub colour_t: Vec<usize>,
    /// Reverse steps for the sample grid (1..=1000; 0: no grid).
    #[arg(long, default_value_t = 250)]
    pub sample_steps: usize,
}

fn gaussian_baseline(train: &Dataset, device: &Device) -> Result<GaussianPrior> {
    let x = tweedie_io::to_tensor(train.images(), device)?;
    let mean = x.clone().mean_dim(0);
    let var = (x - mean.clone())
        .powf_scalar(2.0)
        .mean_dim(0)
        .add_scalar(1e-6);
    Ok(GaussianPrior::diagonal(mean, var)?)
}

/// For each t: noise the held-out images (seed + t), denoise without clipping, and compare
/// the per-image mean RGB of x̂₀ with the truth ([`mean_calibration`]).
fn colour_calibration(
    net: &impl EpsModel,
    val: &Dataset,
    schedule: &Schedule,
    ts: &[usize],
    seed: u64,
    device: &Device,
) -> Result<serde_json::Value> {
    // Mean RGB on [0, 1] (the scale of `tweedie fd`'s colour statistics).
    let unit = |rows: Vec<Vec<f64>>| -> Vec<Vec<f64>> {
        rows.into_iter()
            .map(|r| r.into_iter().map(|m| (m + 1.0) / 2.0).collect())
            .collect()
    };
    let batches = val
        .images()
        .chunks(50)
        .map(|chunk| tweedie_io::to_tensor(chunk, device))
        .collect::<Result<Vec<_>, _>>()?;
    let truth = unit(batches.iter().flat_map(channel_means).collect());
    let mut rows = Vec::new();
    for &t in ts {
        let mut noise = NoiseSource::new(seed.wrapping_add(t as u64));
        let predicted = unit(noised_channel_means(
            net,
            &batches,
            schedule.level(t),
            &mut noise,
        ));
        let cal = mean_calibration(&predicted, &truth)?;
        println!(
            "t={t}: x̂0 mean-RGB calibration slope {:.3} (1 = calibrated, < 1 = over-spread), \
             std x̂0 {} vs truth {}, RMSE {:.4}",
            cal.slope,
            crate::output::slash_list(&cal.predicted_std),
            crate::output::slash_list(&cal.true_std),
            cal.rmse
        );
        rows.push(json!({
            "t": t, "slope": cal.slope, "predicted_std_rgb": cal.predicted_std,
            "true_std_rgb": cal.true_std, "rmse": cal.rmse, "images": val.len(), "clipped": false,
        }));
    }
    Ok(serde_json::Value::Array(rows))
}

pub fn run(a: EvaluateArgs) -> Result<()> {
    let c = &a.common;
    // Check every option before loading anything.
    check_crop(a.crop)?;
    if a.sample_steps > 0 {
        check_steps("--sample-steps", a.sample_steps)?;
    }
    let schedule = Schedule::linear_default();
    for (flag, ts) in [("--t", &a.t), ("--colour-t", &a.colour_t)] {
        for &t in ts {
            schedule
                .check_timestep(t)
                .map_err(|e| anyhow::anyhow!("{flag} {t}: {e}"))?;
        }
    }
    crate::output::check_out(&c.out)?;
    let device = model::device(c.backend.as_str())?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let schedule = net.schedule().clone();
    let size = net.image_size();
    let opts = DatasetOptions { size, crop: a.crop };
    let val = Dataset::load(&a.val, &opts)?;
    let train = Dataset::load(&a.train, &opts)?;
    let baseline = gaussian_baseline(&train, &device)?;
    let lpips = Lpips::alex_default(&device)?;
    let mut rows = Vec::new();
    for &t in &a.t {
        let level = schedule.level(t);
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        let mut noise = NoiseSource::new(c.seed.wrapping_add(t as u64));
        for chunk in val.images().chunks(50) {
            let x0 = tweedie_io::to_tensor(chunk, &device)?;
            let z = noise.normal_like(&x0);
            let x_t = tweedie_core::diffusion::q_sample(x0.clone(), z, level.alpha_bar);
            let clamp = |x: Tensor<4>| x.clamp(-1.0, 1.0);
            ours.extend(score(&lpips, &clamp(net.denoise(x_t.clone(), level)), &x0)?);
            base.extend(score(&lpips, &clamp(baseline.denoise(x_t, level)), &x0)?);
        }
        let (m, b) = (Scores::mean(&ours), Scores::mean(&base));
        println!(
            "t={t}: model PSNR {:.2} SSIM {:.3} LPIPS {:.4} | Gaussian baseline PSNR {:.2} SSIM {:.3} LPIPS {:.4}",
            m.psnr, m.ssim, m.lpips, b.psnr, b.ssim, b.lpips
        );
        rows.push(json!({"t": t, "model": m, "gaussian_baseline": b, "images": val.len()}));
    }
    let mut result =
        json!({"denoising": rows, "val_images": val.len(), "train_images": train.len()});
    if val.len() < 2 && !a.colour_t.is_empty() {
        eprintln!(
            "note: the colour calibration needs at least 2 held-out images ({} given); skipped",
            val.len()
        );
    } else if !a.colour_t.is_empty() {
        result["colour_calibration"] =
            colour_calibration(&net, &val, &schedule, &a.colour_t, c.seed, &device)?;
    }
    if a.sample_steps > 0 {
        let opts = ChainOptions {
            steps: a.sample_steps,
            variance: c.variance_or_beta(),
            ..Default::default()
        };
        let (images, secs) =
            crate::sampling::sample_images(&net, 64, &opts, c.seed, &device, "samples")?;
        let grid = tweedie_io::Grid::from_images(&images, 8, 0);
        grid.save(c.out.join("samples_8x8.png"))?;
        result["samples"] = json!({"n": 64, "steps": a.sample_steps, "seconds": secs});
    }
    tweedie_io::write_atomic(
        &c.out.join("evaluation.json"),
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )?;
    println!("wrote {}", c.out.join("evaluation.json").display());
    Ok(())
}
