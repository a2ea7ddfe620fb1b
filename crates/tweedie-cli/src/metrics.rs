//! `tweedie metrics`.

use crate::args::NetArg;
use crate::inputs::write_json;
use crate::inputs::{first_ten, stem};
use crate::output::check_out;
use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tweedie::tasks::Scores;
use tweedie_metrics::Lpips;

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
    #[arg(long, value_enum, default_value_t = NetArg::Alex)]
    pub net: NetArg,
    /// LPIPS weights file (default for alex: the built-in copy of
    /// crates/tweedie-metrics/assets/lpips_alexnet.safetensors; for vgg the file `cargo xtask
    /// fetch-weights lpips-vgg` prints).
    #[arg(long)]
    pub lpips_weights: Option<PathBuf>,
}

/// The images of `dir` by their path relative to it (`/`-separated, with the extension).
fn relative_images(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    Ok(tweedie_io::list_images(dir)?
        .into_iter()
        .map(|f| {
            let rel = f
                .strip_prefix(dir)
                .unwrap_or(&f)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            (rel, f)
        })
        .collect())
}

/// SSIM's window is 11×11: smaller images have none.
const SSIM_MIN_SIDE: usize = 11;

pub fn run(a: MetricsArgs) -> Result<()> {
    if let Some(out) = &a.out {
        check_out(out)?;
    }
    let device = burn::tensor::Device::flex();
    let lpips = match (a.net, &a.lpips_weights) {
        (NetArg::Alex, None) => Lpips::alex_default(&device)?,
        (NetArg::Alex, Some(p)) => Lpips::load(tweedie_metrics::Backbone::Alex, p, &device)?,
        (NetArg::Vgg, Some(p)) => Lpips::load(tweedie_metrics::Backbone::Vgg, p, &device)?,
        (NetArg::Vgg, None) => bail!(
            "--net vgg needs --lpips-weights (get them with `cargo xtask fetch-weights lpips-vgg`)"
        ),
    };
    let pairs: Vec<(String, PathBuf, PathBuf)> = if a.reference.is_dir() {
        if !a.restored.is_dir() {
            bail!(
                "{} is a folder but {} is not",
                a.reference.display(),
                a.restored.display()
            );
        }
        // Matched by the path relative to each folder.
        let reference = relative_images(&a.reference)?;
        let restored = relative_images(&a.restored)?;
        let v: Vec<(String, PathBuf, PathBuf)> = reference
            .iter()
            .filter_map(|(name, r)| {
                restored
                    .get(name)
                    .map(|x| (name.clone(), r.clone(), x.clone()))
            })
            .collect();
        if v.is_empty() {
            bail!(
                "no file names in common between {} and {}",
                a.reference.display(),
                a.restored.display()
            );
        }
        // Say which images were left out, both ways.
        for (from, other, names, theirs) in [
            (&a.reference, &a.restored, &reference, &restored),
            (&a.restored, &a.reference, &restored, &reference),
        ] {
            let unmatched: Vec<String> = names
                .keys()
                .filter(|n| !theirs.contains_key(*n))
                .cloned()
                .collect();
            if !unmatched.is_empty() {
                eprintln!(
                    "warning: {} of {} images in {} have no counterpart in {} and are left out: {}",
                    unmatched.len(),
                    names.len(),
                    from.display(),
                    other.display(),
                    first_ten(&unmatched)
                );
            }
        }
        v
    } else {
        vec![(stem(&a.restored), a.reference.clone(), a.restored.clone())]
    };
    // (name, scores, whether SSIM was measured)
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
        let has_ssim = ri.width.min(ri.height) >= SSIM_MIN_SIDE;
        let rt = tweedie_io::to_tensor(&[ri], &device)?;
        let xt = tweedie_io::to_tensor(&[xi], &device)?;
        let s = tweedie::tasks::score(&lpips, &xt, &rt)?[0];
        rows.push((name.clone(), s, has_ssim));
    }
    let n = rows.len() as f64;
    let with_ssim: Vec<f64> = rows.iter().filter(|r| r.2).map(|r| r.1.ssim).collect();
    // The mean SSIM is over the images that have one (None when none has).
    let mean_ssim =
        (!with_ssim.is_empty()).then(|| with_ssim.iter().sum::<f64>() / with_ssim.len() as f64);
    let mean = Scores {
        psnr: rows.iter().map(|r| r.1.psnr).sum::<f64>() / n,
        ssim: mean_ssim.unwrap_or(f64::NAN),
        lpips: rows.iter().map(|r| r.1.lpips).sum::<f64>() / n,
    };
    let too_small = format!("too small for SSIM (needs ≥ {SSIM_MIN_SIDE}×{SSIM_MIN_SIDE} px)");
    let ssim_text = |v: Option<f64>| match v {
        Some(v) => format!("SSIM {v:.4}"),
        None => format!("SSIM –, {too_small}"),
    };
    for (name, s, has_ssim) in &rows {
        println!(
            "{name}: PSNR {:.2} dB  {}  LPIPS {:.4}",
            s.psnr,
            ssim_text(has_ssim.then_some(s.ssim)),
            s.lpips
        );
    }
    let small = rows.iter().filter(|r| !r.2).count();
    if rows.len() > 1 {
        println!(
            "mean over {}: PSNR {:.2} dB  {}{}  LPIPS {:.4}",
            rows.len(),
            mean.psnr,
            ssim_text(mean_ssim),
            if small > 0 && mean_ssim.is_some() {
                format!(
                    " (over {} of {} images: {small} too small for SSIM)",
                    with_ssim.len(),
                    rows.len()
                )
            } else {
                String::new()
            },
            mean.lpips
        );
    }
    if let Some(out) = &a.out {
        let scores_json = |s: &Scores, ssim: Option<f64>| {
            let mut v = json!({"psnr": s.psnr, "ssim": ssim, "lpips": s.lpips});
            if ssim.is_none() {
                v["ssim_note"] = json!(too_small);
            }
            v
        };
        write_json(
            &out.join("metrics.json"),
            &json!({
                "images": rows
                    .iter()
                    .map(|(n, s, has)| json!({"image": n, "scores": scores_json(s, has.then_some(s.ssim))}))
                    .collect::<Vec<_>>(),
                "mean": scores_json(&mean, mean_ssim),
                "ssim_images": with_ssim.len(),
            }),
        )?;
        let ssim_csv = |v: Option<f64>| v.map(|v| format!("{v:.5}")).unwrap_or_default();
        let mut csv = String::from("image,psnr,ssim,lpips\n");
        for (name, s, has) in &rows {
            csv.push_str(&format!(
                "{name},{:.4},{},{:.5}\n",
                s.psnr,
                ssim_csv(has.then_some(s.ssim)),
                s.lpips
            ));
        }
        csv.push_str(&format!(
            "mean,{:.4},{},{:.5}\n",
            mean.psnr,
            ssim_csv(mean_ssim),
            mean.lpips
        ));
        tweedie_io::write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    }
    Ok(())
}
