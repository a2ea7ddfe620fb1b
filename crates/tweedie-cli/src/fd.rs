//! `tweedie fd`: Fréchet distances between two image sets — FD-Alex (LPIPS-AlexNet conv5,
//! 256-d) and colour-FD (per-image mean RGB, 3-d). Our own sample-quality numbers, **not
//! FID** (see `tweedie_metrics::fd`).

use crate::model;
use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use tweedie_metrics::fd::Gaussian;
use tweedie_metrics::{Lpips, SetFeatures, draw_floor, fd_scores, split_floor};

/// `tweedie fd A B`.
#[derive(Args, Debug)]
pub struct FdArgs {
    /// First image set: a folder (searched recursively) or one image.
    pub a: PathBuf,
    /// Second image set: a folder (searched recursively) or one image.
    pub b: PathBuf,
    /// Side the images are brought to first, as training does (centre crop, Catmull-Rom
    /// resize); the features then resize to 224×224. Default: the embedded model's 32.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Centre-crop side before resizing, for both sets (as `train --crop`; default: the
    /// largest centred square).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Centre-crop side for set A only (overrides `--crop`), e.g. faces against 32×32 samples.
    #[arg(long)]
    pub crop_a: Option<usize>,
    /// Centre-crop side for set B only (overrides `--crop`).
    #[arg(long)]
    pub crop_b: Option<usize>,
    /// Use at most this many images of each set, evenly spaced over its sorted file list.
    #[arg(long)]
    pub max: Option<usize>,
    /// Images per AlexNet batch (at 224×224, ≈ 40 MB each).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Also write the numbers to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep images of every size in a set. By default a set's images of another size than
    /// its most common one (such as the `grid.png` that `tweedie generate` writes beside its
    /// samples) are reported and skipped.
    #[arg(long)]
    pub mixed_sizes: bool,
    /// Also measure the floor for a set of A's size: split B at random into |A| images and
    /// the rest, this many times, and report both distances' median and 5–95 % range (real
    /// against real images — what A cannot be expected to beat). 0: off.
    #[arg(long, default_value_t = 0)]
    pub split_floor: usize,
    /// With `--split-floor`: draw each floor set of |A| images from this folder of real
    /// images (cropped as B) and score it against all of B, instead of splitting B. For
    /// samples scored against held-out faces B, give the training faces: the floor is then
    /// what |A| real faces score against those same held-out faces.
    #[arg(long)]
    pub floor_from: Option<PathBuf>,
    /// Seed of the `--split-floor` draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `cpu` (burn flex), `wgpu` or `libtorch` (builds with those features).
    #[arg(long, value_enum, default_value_t = crate::args::BackendArg::Cpu)]
    pub backend: crate::args::BackendArg,
}

/// Splits `paths` into the files of the set's most common size and the others (reported);
/// unreadable headers stay in, to be reported when loaded.
fn common_size(what: &str, paths: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<String>) {
    let dims: Vec<Option<(usize, usize)>> = paths
        .iter()
        .map(|p| tweedie_io::image_dimensions(p).ok())
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for d in dims.iter().flatten() {
        *counts.entry(*d).or_insert(0usize) += 1;
    }
    let Some((&common, &most)) = counts.iter().max_by_key(|&(_, n)| *n) else {
        return (paths, Vec::new());
    };
    if counts.values().filter(|&&n| n == most).count() > 1 {
        eprintln!(
            "warning: {what}: no single most common image size ({} sizes with {most} images each); keeping every size",
            counts.values().filter(|&&n| n == most).count()
        );
        return (paths, Vec::new());
    }
    let (mut kept, mut other) = (Vec::new(), Vec::new());
    for (p, d) in paths.into_iter().zip(dims) {
        match d {
            Some(d) if d != common => {
                eprintln!(
                    "warning: {what}: skipping {} ({}×{}, not the set's {}×{}; --mixed-sizes keeps it)",
                    p.display(),
                    d.0,
                    d.1,
                    common.0,
                    common.1
                );
                other.push(p.display().to_string());
            }
            _ => kept.push(p),
        }
    }
    (kept, other)
}

/// The image files of a folder, or the one file given.
fn files(p: &Path) -> Result<Vec<PathBuf>> {
    let all = if p.is_dir() {
        tweedie_io::list_images(p)?
    } else if p.exists() {
        vec![p.to_path_buf()]
    } else {
        bail!("{} does not exist", p.display());
    };
    if all.is_empty() {
        bail!("{}: no PNG/JPEG images", p.display());
    }
    Ok(all)
}

/// At most `max` of `all`, evenly spaced.
fn at_most(all: Vec<PathBuf>, max: Option<usize>) -> Vec<PathBuf> {
    match max {
        Some(m) if m < all.len() => (0..m).map(|i| all[i * all.len() / m].clone()).collect(),
        _ => all,
    }
}

/// The images of one set: those of `p` ([`files`]), of its most common size unless
/// `--mixed-sizes` ([`common_size`]), at most `--max` ([`at_most`]); with the paths left out
/// for their size.
fn set_files(what: &str, p: &Path, a: &FdArgs) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let all = files(p)?;
    let (kept, other) = if a.mixed_sizes {
        (all, Vec::new())
    } else {
        common_size(what, all)
    };
    Ok((at_most(kept, a.max), other))
}

/// Loads and featurises one set, 64 images at a time; an unreadable image is reported and
/// skipped. Returns the features and the skipped files.
fn set_features(
    what: &str,
    paths: &[PathBuf],
    crop: Option<usize>,
    a: &FdArgs,
    net: &Lpips,
    device: &burn::tensor::Device,
) -> Result<(SetFeatures, Vec<String>)> {
    let mut feats = SetFeatures::new();
    let mut skipped = Vec::new();
    let mut progress = crate::progress::Progress::new(paths.len(), what);
    for chunk in paths.chunks(64) {
        let mut imgs = Vec::with_capacity(chunk.len());
        for p in chunk {
            match crate::inputs::load_cropped(p, crop, a.size) {
                Ok(img) => imgs.push(img),
                Err(e) => {
                    eprintln!(
                        "warning: skipping an unreadable image: {}",
                        crate::output::error_text(&e)
                    );
                    skipped.push(p.display().to_string());
                }
            }
        }
        if !imgs.is_empty() {
            let x = tweedie_io::to_tensor(&imgs, device)?;
            feats.add(net, &x, a.batch)?;
        }
        progress.inc(chunk.len(), "");
    }
    progress.finish();
    if feats.len() < 2 {
        bail!(
            "{what}: {} readable image(s) ({} skipped); a covariance needs at least 2",
            feats.len(),
            skipped.len()
        );
    }
    Ok((feats, skipped))
}

/// Runs `tweedie fd`.
pub fn run(a: FdArgs) -> Result<()> {
    let (crop_a, crop_b) = (a.crop_a.or(a.crop), a.crop_b.or(a.crop));
    crate::args::check_crop(crop_a)?;
    crate::args::check_crop(crop_b)?;
    if a.size == 0 || a.batch == 0 || a.max == Some(0) {
        bail!("--size, --batch and --max must be ≥ 1");
    }
    if a.floor_from.is_some() && a.split_floor == 0 {
        bail!("--floor-from needs --split-floor K (K ≥ 1 draws)");
    }
    if let Some(j) = &a.json {
        crate::output::check_out_file(j)?;
    }
    let (fa, other_a) = set_files("fd A", &a.a, &a)?;
    let (fb, other_b) = set_files("fd B", &a.b, &a)?;
    let pool_files = match &a.floor_from {
        Some(p) => Some((p.display().to_string(), set_files("fd floor pool", p, &a)?)),
        None => None,
    };
    let device = model::device(a.backend.as_str())?;
    let net = Lpips::alex_default(&device)?;
    let started = std::time::Instant::now();
    let (sa, skip_a) = set_features("fd A", &fa, crop_a, &a, &net, &device)?;
    let (sb, skip_b) = set_features("fd B", &fb, crop_b, &a, &net, &device)?;
    let pool = match &pool_files {
        Some((from, (f, other))) => {
            let (features, skipped) = set_features("fd floor pool", f, crop_b, &a, &net, &device)?;
            Some((from, features, skipped, other))
        }
        None => None,
    };
    let names = (a.a.display().to_string(), a.b.display().to_string());
    let s = fd_scores(&sa, &sb, (&names.0, &names.1))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "FD-Alex {:.4}  colour-FD {:.6}  ({} vs {} images at {}×{}, {:.0} s; not FID)",
        s.fd_alex,
        s.fd_colour,
        sa.len(),
        sb.len(),
        a.size,
        a.size,
        secs
    );
    let [ca, cb] = &s.colour_fits;
    println!(
        "colour-FD = {:.3e} (mean term: a cast) + {:.3e} (covariance term: a spread); per-image mean RGB ± std {}, {}",
        s.colour_terms.mean,
        s.colour_terms.covariance,
        colour_text("A", ca),
        colour_text("B", cb)
    );
    let floor = if a.split_floor > 0 {
        let (f, how, what) = match &pool {
            Some((from, sp, _, _)) => (
                draw_floor(sp, &sb, sa.len(), a.split_floor, a.seed)?,
                format!("{} of the {} images of {from} against B", sa.len(), sp.len()),
                format!("|A| images drawn at random from {from} ({} images), each draw against all of B", sp.len()),
            ),
            None => (
                split_floor(&sb, sa.len(), a.split_floor, a.seed)?,
                format!("B split into {} and the other {}", sa.len(), sb.len() - sa.len()),
                "B split at random into |A| images and the rest; the distances between the two parts".to_owned(),
            ),
        };
        let q = |v: &[f64]| [0.05, 0.5, 0.95].map(|p| tweedie_metrics::SplitFloor::quantile(v, p));
        let (qa, qc) = (q(&f.fd_alex), q(&f.fd_colour));
        println!(
            "floor for {} real images ({how}, {} draws, seed {}): FD-Alex median {:.4} (5–95 %: {:.4}–{:.4}), colour-FD median {:.6} (5–95 %: {:.6}–{:.6})",
            f.n, a.split_floor, a.seed, qa[1], qa[0], qa[2], qc[1], qc[0], qc[2]
        );
        // Where A itself falls among the real draws: the share of draws that score higher.
        let above =
            |v: &[f64], x: f64| v.iter().filter(|&&d| d > x).count() as f64 / v.len() as f64;
        let (ra, rc) = (
            above(&f.fd_alex, s.fd_alex),
            above(&f.fd_colour, s.fd_colour),
        );
        println!(
            "A against B scores higher than {:.0} % (FD-Alex) and {:.0} % (colour-FD) of those real draws",
            100.0 * (1.0 - ra),
            100.0 * (1.0 - rc)
        );
        let band = |q: [f64; 3]| json!({"p05": q[0], "median": q[1], "p95": q[2]});
        let mut v = json!({
            "n": f.n, "draws": a.split_floor, "seed": a.seed,
            "fd_alex": band(qa), "fd_colour": band(qc),
            "share_of_draws_above_a": {"fd_alex": ra, "fd_colour": rc},
            "values": {"fd_alex": f.fd_alex, "fd_colour": f.fd_colour},
            "what": what,
        });
        match &pool {
            Some((from, sp, skipped, other)) => {
                v["from"] = json!({"path": from, "crop": crop_b, "images": sp.len(), "skipped": skipped, "other_size": other});
            }
            None => v["rest"] = json!(sb.len() - f.n),
        }
        Some(v)
    } else {
        None
    };
    for (what, skipped) in [(&names.0, &skip_a), (&names.1, &skip_b)] {
        if !skipped.is_empty() {
            eprintln!(
                "warning: {} image(s) of {what} skipped (unreadable): {}",
                skipped.len(),
                crate::inputs::first_ten(skipped)
            );
        }
    }
    if let Some(j) = &a.json {
        let mut v = json!({
            "fd_alex": s.fd_alex,
            "fd_colour": s.fd_colour,
            "colour": {
                "mean_term": s.colour_terms.mean,
                "covariance_term": s.colour_terms.covariance,
                "a": colour_json(ca),
                "b": colour_json(cb),
            },
            "measure": "Fréchet distance of Gaussian fits; FD-Alex: LPIPS-AlexNet conv5 (after ReLU) averaged over positions, images resized to 224×224 bilinear; colour-FD: per-image mean RGB on [0, 1] (its mean term ‖μ_a − μ_b‖² and covariance term; each set's mean and standard deviation of that per-image mean RGB). Not FID.",
            "size": a.size,
            "max": a.max,
            "seconds": secs,
            "mixed_sizes": a.mixed_sizes,
            "a": {"path": a.a, "crop": crop_a, "images": sa.len(), "skipped": skip_a, "other_size": other_a},
            "b": {"path": a.b, "crop": crop_b, "images": sb.len(), "skipped": skip_b, "other_size": other_b},
        });
        if let Some(f) = floor {
            v["split_floor"] = f;
        }
        tweedie_io::write_atomic(j, serde_json::to_string_pretty(&v)?.as_bytes())?;
        println!("wrote {}", j.display());
    }
    Ok(())
}

/// Standard deviations √Σᵢᵢ of a colour fit.
fn colour_std(g: &Gaussian) -> Vec<f64> {
    (0..g.dim())
        .map(|i| g.cov[i * g.dim() + i].sqrt())
        .collect()
}

/// "A 0.532/0.420/0.361 ± 0.152/0.134/0.127".
fn colour_text(name: &str, g: &Gaussian) -> String {
    use crate::output::slash_list;
    format!(
        "{name} {} ± {}",
        slash_list(&g.mean),
        slash_list(&colour_std(g))
    )
}

/// A set's per-image mean RGB: its mean and standard deviation per channel.
fn colour_json(g: &Gaussian) -> serde_json::Value {
    json!({"mean_rgb": g.mean, "std_rgb": colour_std(g)})
}
