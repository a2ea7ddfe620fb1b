//! `tweedie memorisation`: do a model's samples sit closer to its training images than
//! held-out images do? For each sample and each held-out image, the distance to the nearest
//! training image (pixel RMSE, mirror images included; LPIPS to the nearest few in pixel
//! distance), and the two sets' distributions side by side.

use crate::inputs::load_cropped;
use crate::model;
use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use tweedie_io::Image;
use tweedie_metrics::{DistanceSummary, Lpips, Neighbour, fraction_below, nearest_pixel};

/// `tweedie memorisation SAMPLES --train DIR --val DIR`.
#[derive(Args, Debug)]
pub struct MemorisationArgs {
    /// The model's samples: a folder (searched recursively), e.g. `tweedie generate --out`.
    /// Samples must be `--size`×`--size`; other images there (such as generate's
    /// `grid.png`) are reported and skipped.
    pub samples: PathBuf,
    /// The training images.
    #[arg(long)]
    pub train: PathBuf,
    /// Held-out images of the same distribution (the comparison set).
    #[arg(long)]
    pub val: PathBuf,
    /// Side all images are brought to (centre crop, Catmull-Rom resize), as in training.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Centre-crop side of the training and held-out images before resizing (as
    /// `train --crop`; the samples are taken whole).
    #[arg(long)]
    pub crop: Option<usize>,
    /// LPIPS (AlexNet) is measured to this many nearest training images in pixel distance,
    /// and the smallest kept (0: pixel distances only).
    #[arg(long, default_value_t = 8)]
    pub lpips_candidates: usize,
    /// Write the closest pairs (sample, its nearest training image) to this PNG: the 8
    /// samples nearest to the training set.
    #[arg(long)]
    pub pairs_png: Option<PathBuf>,
    /// Also write the numbers to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// `cpu` (burn flex), `wgpu` or `libtorch` (builds with those features).
    #[arg(long, value_enum, default_value_t = crate::args::BackendArg::Cpu)]
    pub backend: crate::args::BackendArg,
}

/// Loads every readable image of a folder; unreadable ones are reported and skipped. With
/// `exact`, images are taken as they are and those not `size`×`size` are skipped too;
/// otherwise each is centre-cropped and resized to `size`.
fn load_set(
    what: &str,
    dir: &Path,
    crop: Option<usize>,
    size: usize,
    exact: bool,
) -> Result<Vec<Image>> {
    if !dir.is_dir() {
        bail!("{what}: {} is not a folder", dir.display());
    }
    let files = tweedie_io::list_images(dir)?;
    let mut images = Vec::with_capacity(files.len());
    let mut skipped = Vec::new();
    let mut other_size: Option<(usize, usize)> = None;
    for f in &files {
        let loaded = if exact {
            tweedie_io::load_image(f)
                .map_err(anyhow::Error::from)
                .and_then(|img| {
                    if img.width == size && img.height == size {
                        Ok(img)
                    } else {
                        other_size = Some((img.width, img.height));
                        bail!(
                            "{}: {}×{}, not {size}×{size} (pass --size to match the samples)",
                            f.display(),
                            img.width,
                            img.height
                        )
                    }
                })
        } else {
            load_cropped(f, crop, size)
        };
        match loaded {
            Ok(img) => images.push(img),
            Err(e) => {
                eprintln!(
                    "warning: {what}: skipping {}",
                    crate::output::error_text(&e)
                );
                skipped.push(f.display().to_string());
            }
        }
    }
    if images.is_empty() {
        if let Some((w, h)) = other_size {
            bail!(
                "{what}: no {size}×{size} images in {} (e.g. {w}×{h}): pass --size to match the samples",
                dir.display()
            );
        }
        bail!(
            "{what}: no readable PNG/JPEG images in {} ({} skipped)",
            dir.display(),
            skipped.len()
        );
    }
    Ok(images)
}

/// For each query, the smallest LPIPS to its pixel-nearest candidates (mirrored as they
/// matched) and the LPIPS to the pixel-nearest one, in batches.
fn lpips_to_candidates(
    net: &Lpips,
    queries: &[Image],
    train: &[Image],
    neighbours: &[Vec<Neighbour>],
    device: &burn::tensor::Device,
) -> Result<Vec<(f64, f64)>> {
    let mut pairs_a = Vec::new();
    let mut pairs_b = Vec::new();
    for (q, ns) in queries.iter().zip(neighbours) {
        for n in ns {
            pairs_a.push(q.clone());
            let t = &train[n.index];
            pairs_b.push(if n.flipped {
                t.flip_horizontal()
            } else {
                t.clone()
            });
        }
    }
    let mut d = Vec::with_capacity(pairs_a.len());
    for (a, b) in pairs_a.chunks(256).zip(pairs_b.chunks(256)) {
        let (ta, tb) = (
            tweedie_io::to_tensor(a, device)?,
            tweedie_io::to_tensor(b, device)?,
        );
        d.extend(net.distance(&ta, &tb)?);
    }
    let mut out = Vec::with_capacity(queries.len());
    let mut it = d.into_iter();
    for ns in neighbours {
        let d: Vec<f64> = it.by_ref().take(ns.len()).collect();
        out.push((d.iter().copied().fold(f64::INFINITY, f64::min), d[0]));
    }
    Ok(out)
}

/// The images' pixel values, borrowed.
fn view(v: &[Image]) -> Vec<&[f32]> {
    v.iter().map(|x| x.data.as_slice()).collect()
}

fn summary_json(s: &DistanceSummary) -> serde_json::Value {
    json!({"n": s.n, "min": s.min, "p05": s.p05, "median": s.median, "mean": s.mean})
}

/// Runs `tweedie memorisation`.
pub fn run(a: MemorisationArgs) -> Result<()> {
    crate::args::check_crop(a.crop)?;
    if a.size == 0 {
        bail!("--size must be ≥ 1");
    }
    for p in [&a.json, &a.pairs_png].into_iter().flatten() {
        crate::output::check_out_file(p)?;
    }
    let started = std::time::Instant::now();
    let samples = load_set("samples", &a.samples, None, a.size, true)?;
    let train = load_set("--train", &a.train, a.crop, a.size, false)?;
    let val = load_set("--val", &a.val, a.crop, a.size, false)?;
    let k = a.lpips_candidates.max(1);
    let nn_samples = nearest_pixel(&view(&samples), &view(&train), a.size, a.size, k)?;
    let nn_val = nearest_pixel(&view(&val), &view(&train), a.size, a.size, k)?;
    let pixel = |nn: &[Vec<Neighbour>]| -> Vec<f64> { nn.iter().map(|n| n[0].distance).collect() };
    let (px_s, px_v) = (pixel(&nn_samples), pixel(&nn_val));
    let (lp_s, lp_v) = if a.lpips_candidates > 0 {
        let device = model::device(a.backend.as_str())?;
        let net = Lpips::alex_default(&device)?;
        (
            Some(lpips_to_candidates(
                &net,
                &samples,
                &train,
                &nn_samples,
                &device,
            )?),
            Some(lpips_to_candidates(&net, &val, &train, &nn_val, &device)?),
        )
    } else {
        (None, None)
    };
    let summarise = |v: &[f64], what: &str| {
        DistanceSummary::of(v).ok_or_else(|| anyhow::anyhow!("non-finite distances for the {what}"))
    };
    let (ps, pv) = (
        summarise(&px_s, "samples")?,
        summarise(&px_v, "held-out images")?,
    );
    let first = |v: &[(f64, f64)]| -> Vec<f64> { v.iter().map(|d| d.0).collect() };
    println!(
        "nearest training image ({} training images, mirror images included; {} samples, {} held-out)",
        train.len(),
        samples.len(),
        val.len()
    );
    println!("| distance | set | min | 5th pct | median | mean |");
    println!("|---|---|---:|---:|---:|---:|");
    let row = |what: &str, set: &str, s: &DistanceSummary| {
        println!(
            "| {what} | {set} | {:.4} | {:.4} | {:.4} | {:.4} |",
            s.min, s.p05, s.median, s.mean
        )
    };
    row("pixel RMSE", "samples", &ps);
    row("pixel RMSE", "held-out", &pv);
    let lp = match (&lp_s, &lp_v) {
        (Some(s), Some(v)) => Some((
            summarise(&first(s), "samples")?,
            summarise(&first(v), "held-out images")?,
        )),
        _ => None,
    };
    if let Some((ls, lv)) = &lp {
        row("LPIPS", "samples", ls);
        row("LPIPS", "held-out", lv);
    }
    let below_min = fraction_below(&px_s, pv.min);
    let below_p05 = fraction_below(&px_s, pv.p05);
    println!(
        "samples nearer to a training image than the nearest held-out image is: {:.1} %; nearer than the held-out 5th percentile: {:.1} % (5 % expected without memorisation)",
        100.0 * below_min,
        100.0 * below_p05
    );
    // Without memorisation about 5 % of samples fall below the held-out set's 5th percentile
    // (fewer for a model that is still far from the data); twice that is flagged.
    let verdict = if below_p05 <= 0.10 {
        "no sign of memorisation: samples sit no closer to the training set than held-out faces"
    } else {
        "more samples sit close to the training set than held-out faces do: inspect the closest pairs"
    };
    println!("{verdict}");
    if let Some(p) = &a.pairs_png {
        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.sort_by(|&i, &j| px_s[i].total_cmp(&px_s[j]));
        let mut grid = tweedie_io::Grid::new(96).with_titles(&["sample", "nearest"]);
        for &i in order.iter().take(8) {
            let n = nn_samples[i][0];
            let t = &train[n.index];
            let caption = match &lp_s {
                // The LPIPS of the pair shown (the table's is the best of k candidates).
                Some(l) => format!("RMSE {:.3}\nLPIPS {:.3}", n.distance, l[i].1),
                None => format!("RMSE {:.3}", n.distance),
            };
            grid.push_row(vec![
                tweedie_io::GridCell::new(samples[i].clone(), &caption),
                tweedie_io::GridCell::new(
                    if n.flipped {
                        t.flip_horizontal()
                    } else {
                        t.clone()
                    },
                    if n.flipped { "mirrored" } else { "" },
                ),
            ]);
        }
        grid.save(p)?;
        println!(
            "wrote {} (left: the samples nearest to the training set; right: their nearest training image)",
            p.display()
        );
    }
    if let Some(j) = &a.json {
        let mut v = json!({
            "measure": "distance of each image to its nearest training image: pixel RMSE on [0, 1] (to the image or its mirror image, whichever is nearer); LPIPS-AlexNet to the nearest `lpips_candidates` in pixel distance, smallest kept",
            "size": a.size,
            "crop": a.crop,
            "lpips_candidates": a.lpips_candidates,
            "samples": {"path": a.samples, "images": samples.len(), "pixel": summary_json(&ps)},
            "val": {"path": a.val, "images": val.len(), "pixel": summary_json(&pv)},
            "train": {"path": a.train, "images": train.len()},
            "fraction_samples_below_val_min": below_min,
            "fraction_samples_below_val_p05": below_p05,
            "verdict": verdict,
            "seconds": started.elapsed().as_secs_f64(),
        });
        if let Some((ls, lv)) = &lp {
            v["samples"]["lpips"] = summary_json(ls);
            v["val"]["lpips"] = summary_json(lv);
        }
        tweedie_io::write_atomic(j, serde_json::to_string_pretty(&v)?.as_bytes())?;
        println!("wrote {}", j.display());
    }
    Ok(())
}
