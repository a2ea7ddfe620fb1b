//! `tweedie denoise`.

use crate::args::Common;
use crate::inputs::{named_inputs, one, readable, warn_skipped, write_json};
use crate::model;
use crate::output::check_out;
use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use tweedie_core::{NoiseSource, Schedule};
use tweedie_io::{Grid, GridCell};
use tweedie_metrics::Lpips;

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

pub fn run(a: DenoiseArgs) -> Result<()> {
    let c = &a.common;
    // The embedded model's T (1000) checks --t before any work; a loaded model's own
    // schedule checks it again below.
    crate::args::refuse_repeats("--t", &a.t, |v| v.to_string())?;
    for &t in &a.t {
        Schedule::linear_default()
            .check_timestep(t)
            .map_err(|e| anyhow::anyhow!("--t {t}: {e}"))?;
    }
    let inputs = named_inputs(&a.inputs)?;
    check_out(&c.out)?;
    let device = model::device(c.backend.as_str())?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let schedule = net.schedule().clone();
    for &t in &a.t {
        schedule
            .check_timestep(t)
            .map_err(|e| anyhow::anyhow!("--t {t}: {e}"))?;
    }
    let lpips = Lpips::alex_default(&device)?;
    let size = net.image_size();
    let (usable, skipped) = readable(inputs.iter().enumerate().collect(), a.strict, |p| {
        Ok(tweedie_io::load_image_sized(p, size)?)
    })?;
    let mut titles = vec!["x0".to_string()];
    for t in &a.t {
        titles.push(format!("x_t t={t}"));
        titles.push(format!("x0^ t={t}"));
    }
    let mut grid = Grid::new(128).with_titles(&titles);
    let mut records = Vec::new();
    let mut noise = NoiseSource::new(c.seed);
    for (_, input) in &usable {
        let img = tweedie_io::load_image_sized(&input.path, size)?;
        let x0 = tweedie_io::to_tensor(std::slice::from_ref(&img), &device)?;
        let mut row = vec![GridCell::new(img.clone(), "PSNR/LPIPS")];
        let name = &input.name;
        for &t in &a.t {
            let d = tweedie_samplers::denoise(&net, &schedule, x0.clone(), t, &mut noise)?;
            let s_noisy = tweedie::tasks::score(&lpips, &d.x_t.clone().clamp(-1.0, 1.0), &x0)?[0];
            let s = tweedie::tasks::score(&lpips, &d.x0_hat.clone().clamp(-1.0, 1.0), &x0)?[0];
            tweedie_io::save_png(&one(&d.x_t), c.out.join(format!("{name}_t{t}_noisy.png")))?;
            tweedie_io::save_png(
                &one(&d.x0_hat),
                c.out.join(format!("{name}_t{t}_denoised.png")),
            )?;
            row.push(GridCell::new(one(&d.x_t), &s_noisy.caption()));
            row.push(GridCell::new(one(&d.x0_hat), &s.caption()));
            records.push(json!({"image": name, "t": t, "noisy": s_noisy, "denoised": s}));
        }
        grid.push_row(row);
    }
    grid.save(c.out.join("denoise_grid.png"))?;
    write_json(&c.out.join("denoise_metrics.json"), &json!(records))?;
    for r in &records {
        println!(
            "{} t={}: PSNR {:.2} dB  SSIM {:.3}  LPIPS {:.4}",
            r["image"].as_str().unwrap_or(""),
            r["t"],
            r["denoised"]["psnr"].as_f64().unwrap_or(0.0),
            r["denoised"]["ssim"].as_f64().unwrap_or(0.0),
            r["denoised"]["lpips"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "wrote {} (denoise_grid.png, denoise_metrics.json)",
        c.out.display()
    );
    warn_skipped(&skipped, inputs.len());
    Ok(())
}
