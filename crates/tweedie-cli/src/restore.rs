//! `denoise`, `restore` and `metrics`.

use crate::commands::{DenoiseArgs, MetricsArgs, RestoreArgs, bar};
use crate::model;
use anyhow::{Context, Result, bail};
use burn::tensor::Tensor;
use serde_json::json;
use std::path::{Path, PathBuf};
use tweedie::tasks::{self, Method, Scores};
use tweedie_core::{NoiseSource, Schedule};
use tweedie_io::{Grid, GridCell, Image};
use tweedie_metrics::Lpips;
use tweedie_samplers::{Observer, StepInfo};

/// Expands files and folders into a sorted list of image files.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            files.extend(tweedie_io::list_images(p)?);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("input {} does not exist", p.display());
        }
    }
    if files.is_empty() {
        bail!("no PNG/JPEG images found in the inputs");
    }
    Ok(files)
}

/// Loads an image, centre-crops it (to `crop`, or the largest square) and resizes it.
pub fn load_cropped(path: &Path, crop: Option<usize>, size: usize) -> Result<Image> {
    let opts = tweedie_train::DatasetOptions { size, crop };
    tweedie_train::prepare_checked(&tweedie_io::load_image(path)?, &opts)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

fn one(x: &Tensor<4>) -> Image {
    tweedie_io::from_tensor(x)
        .expect("3-channel tensor")
        .remove(0)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    tweedie_io::write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn denoise(a: DenoiseArgs) -> Result<()> {
    let c = &a.common;
    let schedule = Schedule::linear_default();
    for &t in &a.t {
        schedule
            .check_timestep(t)
            .map_err(|e| anyhow::anyhow!("--t {t}: {e}"))?;
    }
    let device = model::device(&c.backend)?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let lpips = Lpips::alex_default(&device)?;
    let size = net.net.config().image_size;
    let files = collect_inputs(&a.inputs)?;
    let mut titles = vec!["x0".to_string()];
    for t in &a.t {
        titles.push(format!("x_t t={t}"));
        titles.push(format!("x0^ t={t}"));
    }
    let mut grid = Grid::new(128).with_titles(&titles);
    let mut records = Vec::new();
    let mut noise = NoiseSource::new(c.seed);
    for f in &files {
        let img = tweedie_io::load_image_sized(f, size)?;
        let x0 = tweedie_io::to_tensor(std::slice::from_ref(&img), &device)?;
        let mut row = vec![GridCell::new(img.clone(), "PSNR/LPIPS")];
        for &t in &a.t {
            let d = tweedie_samplers::denoise(&net, &schedule, x0.clone(), t, &mut noise)?;
            let s_noisy = tasks::score(&lpips, &d.x_t.clone().clamp(-1.0, 1.0), &x0)?[0];
            let s = tasks::score(&lpips, &d.x0_hat.clone().clamp(-1.0, 1.0), &x0)?[0];
            let name = stem(f);
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
    Ok(())
}

pub fn restore(a: RestoreArgs) -> Result<()> {
    let c = &a.common;
    let method: Method = a.method.into();
    // Validate the solver options before loading anything.
    a.solver.validate()?;
    let schedule = Schedule::linear_default();
    let device = model::device(&c.backend)?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let size = net.net.config().image_size;
    let spec = a.operator.spec(a.op, size)?;
    let lpips = Lpips::alex_default(&device)?;
    let files = collect_inputs(&a.inputs)?;
    let mut grid =
        Grid::new(128).with_titles(&["ground truth", "measurement", "initialisation", "restored"]);
    let mut records = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let img = tweedie_io::load_image_sized(f, size)?;
        let x = tweedie_io::to_tensor(std::slice::from_ref(&img), &device)?;
        let settings = a
            .solver
            .settings(
                method,
                spec.clone(),
                c.seed.wrapping_add(i as u64),
                c.variance,
            )?
            .for_model(&net);
        let pb = bar(a.solver.steps, &format!("{method} {}", stem(f)));
        let mut obs = Observer::with_progress(|s: StepInfo| {
            pb.set_length(s.total as u64);
            pb.set_position(s.step as u64)
        });
        let r = tasks::restore(&net, &schedule, &x, &settings, &device, &mut obs)?;
        pb.finish_and_clear();
        let s: Scores = tasks::score(&lpips, &r.reconstruction, &x)?[0];
        let name = stem(f);
        let method_name = crate::commands::value_name(&a.method);
        tweedie_io::save_png(
            &one(&r.measurement_image),
            c.out.join(format!("{name}_measurement.png")),
        )?;
        tweedie_io::save_png(
            &one(&r.reconstruction),
            c.out.join(format!("{name}_{method_name}.png")),
        )?;
        // The kernel or mask this run used, so that it can be rerun or compared.
        let params: Vec<String> = r
            .operator
            .save_params(&c.out, &name)?
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        grid.push_row(vec![
            GridCell::new(img, ""),
            GridCell::new(one(&r.measurement_image), &r.description),
            GridCell::new(one(&r.initialisation), ""),
            GridCell::new(one(&r.reconstruction), &s.caption()),
        ]);
        println!(
            "{name}: {method} {} → PSNR {:.2} dB  SSIM {:.3}  LPIPS {:.4}",
            r.description, s.psnr, s.ssim, s.lpips
        );
        records.push(json!({"image": name, "method": method.to_string(), "operator": r.description, "settings": settings, "summary": settings.summary(), "operator_files": params, "scores": s}));
    }
    let method_name = crate::commands::value_name(&a.method);
    grid.save(c.out.join(format!("{method_name}_grid.png")))?;
    write_json(
        &c.out.join(format!("{method_name}_metrics.json")),
        &json!({"results": records}),
    )?;
    println!("wrote {}", c.out.display());
    Ok(())
}

pub fn metrics(a: MetricsArgs) -> Result<()> {
    let device = burn::tensor::Device::flex();
    let lpips = match (a.net.as_str(), &a.lpips_weights) {
        ("alex", None) => Lpips::alex_default(&device)?,
        ("alex", Some(p)) => Lpips::load(tweedie_metrics::Backbone::Alex, p, &device)?,
        ("vgg", Some(p)) => Lpips::load(tweedie_metrics::Backbone::Vgg, p, &device)?,
        ("vgg", None) => bail!(
            "--net vgg needs --lpips-weights (get them with `cargo xtask fetch-weights lpips-vgg`)"
        ),
        (other, _) => bail!("unknown --net {other:?}: expected alex or vgg"),
    };
    let pairs: Vec<(String, PathBuf, PathBuf)> = if a.reference.is_dir() {
        if !a.restored.is_dir() {
            bail!(
                "{} is a folder but {} is not",
                a.reference.display(),
                a.restored.display()
            );
        }
        let mut v = Vec::new();
        for r in tweedie_io::list_images(&a.reference)? {
            let name = r.file_name().unwrap().to_owned();
            let other = a.restored.join(&name);
            if other.exists() {
                v.push((name.to_string_lossy().into_owned(), r, other));
            }
        }
        if v.is_empty() {
            bail!(
                "no file names in common between {} and {}",
                a.reference.display(),
                a.restored.display()
            );
        }
        v
    } else {
        vec![(stem(&a.restored), a.reference.clone(), a.restored.clone())]
    };
    let mut rows = Vec::new();
    for (name, r, x) in &pairs {
        let (ri, xi) = (tweedie_io::load_image(r)?, tweedie_io::load_image(x)?);
        if (ri.width, ri.height) != (xi.width, xi.height) {
            bail!(
                "{} is {}×{} but {} is {}×{}: sizes must match",
                r.display(),
                ri.width,
                ri.height,
                x.display(),
                xi.width,
                xi.height
            );
        }
        let rt = tweedie_io::to_tensor(&[ri], &device)?;
        let xt = tweedie_io::to_tensor(&[xi], &device)?;
        let s = tasks::score(&lpips, &xt, &rt)?[0];
        rows.push((name.clone(), s));
    }
    let n = rows.len() as f64;
    let mean = Scores {
        psnr: rows.iter().map(|r| r.1.psnr).sum::<f64>() / n,
        ssim: rows.iter().map(|r| r.1.ssim).sum::<f64>() / n,
        lpips: rows.iter().map(|r| r.1.lpips).sum::<f64>() / n,
    };
    for (name, s) in &rows {
        println!(
            "{name}: PSNR {:.2} dB  SSIM {:.4}  LPIPS {:.4}",
            s.psnr, s.ssim, s.lpips
        );
    }
    if rows.len() > 1 {
        println!(
            "mean over {}: PSNR {:.2} dB  SSIM {:.4}  LPIPS {:.4}",
            rows.len(),
            mean.psnr,
            mean.ssim,
            mean.lpips
        );
    }
    if let Some(out) = &a.out {
        write_json(
            &out.join("metrics.json"),
            &json!({"images": rows.iter().map(|(n, s)| json!({"image": n, "scores": s})).collect::<Vec<_>>(), "mean": mean}),
        )?;
        let mut csv = String::from("image,psnr,ssim,lpips\n");
        for (name, s) in &rows {
            csv.push_str(&format!(
                "{name},{:.4},{:.5},{:.5}\n",
                s.psnr, s.ssim, s.lpips
            ));
        }
        csv.push_str(&format!(
            "mean,{:.4},{:.5},{:.5}\n",
            mean.psnr, mean.ssim, mean.lpips
        ));
        tweedie_io::write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    }
    Ok(())
}
