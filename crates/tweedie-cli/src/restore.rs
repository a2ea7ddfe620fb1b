//! `tweedie restore`.

use crate::args::{Common, SolverArgs};
use crate::inputs::{named_inputs, one, readable, stem, warn_skipped, write_json};
use crate::model;
use crate::output::check_out;
use crate::progress::bar;
use anyhow::{Context, Result, bail};
use burn::tensor::Tensor;
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use tweedie::tasks::{self, Method, Scores};
use tweedie_core::NoiseSource;
use tweedie_io::{Grid, GridCell, Image};
use tweedie_metrics::Lpips;
use tweedie_samplers::{Observer, StepInfo};

#[derive(Args, Debug)]
#[command(after_help = "\
Simulated (INPUTS): each image is centre-cropped and resized to the model, measured with --op \
and --sigma (seeded), and restored. Writes <name>_measurement.png, <name>_<method>.png, the \
kernel or mask used (<name>_kernel.npy/.png, <name>_mask.png), <method>_grid.png (ground truth \
| measurement | initialisation | restored) and <method>_metrics.json (settings and \
PSNR/SSIM/LPIPS).

Measured (--measured y.png): y is restored as it is; only an image of the size needed is \
accepted (the model's, or the operator's output for sr4/sr4-box), --fit crop|resize fits \
another. Metrics appear only with --reference. Writes <name>_<method>.png, \
<method>_grid.png (measurement | A+y initialisation | restored [| reference]) and \
<method>_metrics.json with the settings.

Examples:
  tweedie restore --measured blurred.png --op gaussian-blur --sigma 0.02 --method dps --steps 250
  tweedie restore --measured y.png --op motion-blur --kernel y_kernel.npy --reference x.png --fit crop
  tweedie restore --measured lowres_8x8.png --op sr4 --method ald --samples 8")]
pub struct RestoreArgs {
    #[command(flatten)]
    pub common: Common,
    /// Images or folders of images (centre-cropped and resized to the model resolution): a
    /// measurement y = A(x) + σn is simulated from each and restored. Not with --measured.
    #[arg(required_unless_present = "measured", conflicts_with = "measured")]
    pub inputs: Vec<PathBuf>,
    /// Restore this measured image y instead (no ground truth needed): a blurred or masked
    /// image of the model's size, or for sr4/sr4-box the low-resolution image itself (8×8 for
    /// a 32 px model). Another size is an error unless --fit is given. --op motion-blur needs
    /// --kernel, masks need --op inpaint-mask --mask (random operators are refused); --sigma
    /// is the noise level assumed for y.
    #[arg(long, value_name = "FILE")]
    pub measured: Option<PathBuf>,
    /// With --measured: the ground truth, for PSNR/SSIM/LPIPS (without it none are computed).
    /// It must have the model's size, or is fitted by --fit like the measurement.
    #[arg(long, value_name = "FILE", requires = "measured")]
    pub reference: Option<PathBuf>,
    /// With --measured: bring an image of another size to the size needed: `crop` (centre
    /// square, then resize) or `resize` (resize directly). Without it nothing is resized.
    #[arg(long, value_enum, requires = "measured")]
    pub fit: Option<FitArg>,
    /// Draw K ≥ 2 posterior samples of each measurement in one batched chain and write their
    /// mean (<name>_<method>_mean.png), per-pixel standard deviation (mean over channels, a
    /// heat map from black = 0 to yellow = its maximum: <name>_<method>_std.png), each sample
    /// (<name>_<method>_sample_<k>.png) and a figure (<name>_<method>_samples.png: mean | std
    /// | up to 4 samples, the std's scale in its caption), instead of <name>_<method>.png.
    #[arg(long, value_name = "K")]
    pub samples: Option<usize>,
    /// Restoration method.
    #[arg(long, value_enum, default_value_t = Method::Dps)]
    pub method: Method,
    /// Measurement operator (DPS's settings scaled to the model's resolution).
    #[arg(long, value_enum, default_value_t = crate::operator_args::OpArg::InpaintBox)]
    pub op: crate::operator_args::OpArg,
    #[command(flatten)]
    pub operator: crate::operator_args::OperatorArgs,
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Fail on an unreadable image instead of skipping it with a warning.
    #[arg(long)]
    pub strict: bool,
    /// Simulated restores: images restored at once, in one batched chain. The results do not
    /// depend on it: each image draws its operator, measurement noise and sampler noise from
    /// its own seed (`--seed` + its index). Not with --samples (which batches its K samples).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

/// `--fit`: how `restore --measured` brings an image of another size to the size it needs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitArg {
    /// Centre-crop the largest square, then resize (as inputs to the simulated restore are).
    Crop,
    /// Resize directly (a non-square image is squeezed).
    Resize,
}

/// Loads `path` at `want` = (width, height): as it is when it has that size, fitted by `fit`
/// when given, else an error naming both sizes and `--fit`. `what` says what the size is
/// (`"the model's resolution"`, …).
fn load_fitted(
    path: &Path,
    want: (usize, usize),
    fit: Option<FitArg>,
    what: &str,
) -> Result<Image> {
    let img = tweedie_io::load_image(path)?;
    let (w, h) = want;
    if (img.width, img.height) == want {
        return Ok(img);
    }
    Ok(match fit {
        Some(FitArg::Crop) => tweedie_io::center_crop_square(&img).resize(w, h),
        Some(FitArg::Resize) => img.resize(w, h),
        None => bail!(
            "{} is {}×{} but {what} is {w}×{h}: give an image of that size, or --fit crop (centre square, then resize) or --fit resize (resize directly); nothing is resized without --fit",
            path.display(),
            img.width,
            img.height
        ),
    })
}

/// `img` enlarged to `width × height` by repeating pixels (a low-resolution measurement shown
/// beside full-size images).
fn upscale_nearest(img: &Image, width: usize, height: usize) -> Image {
    if (img.width, img.height) == (width, height) {
        return img.clone();
    }
    let (iw, ih) = (img.width, img.height);
    let mut data = Vec::with_capacity(3 * width * height);
    for c in 0..3 {
        for y in 0..height {
            let sy = (y * ih / height).min(ih - 1);
            for x in 0..width {
                let sx = (x * iw / width).min(iw - 1);
                data.push(img.data[c * iw * ih + sy * iw + sx]);
            }
        }
    }
    Image {
        width,
        height,
        data,
    }
}

/// One restoration job of `restore`: a simulated measurement of an input image, or a measured
/// image.
#[allow(clippy::large_enum_variant)] // one job per run; boxing would only add indirection
enum Job {
    Simulated {
        img: Image,
        x: Tensor<4>,
    },
    Measured {
        /// y as given (for the grid).
        y_img: Image,
        y: Tensor<4>,
        /// The ground truth of `--reference`.
        reference: Option<(Image, Tensor<4>)>,
    },
}

/// Scores of `x` against `reference` when there is one.
fn scores_of(
    lpips: &Lpips,
    x: &Tensor<4>,
    reference: Option<&Tensor<4>>,
) -> Result<Option<Scores>> {
    Ok(match reference {
        Some(r) => Some(tasks::score(lpips, x, r)?[0]),
        None => None,
    })
}

pub fn run(a: RestoreArgs) -> Result<()> {
    let c = &a.common;
    let method: Method = a.method;
    // Validate the options before loading anything.
    a.solver.validate()?;
    if let Some(k) = a.samples
        && k < 2
    {
        bail!("--samples must be ≥ 2 (without it, one restoration is drawn), got {k}");
    }
    if a.batch == 0 {
        bail!("--batch must be ≥ 1");
    }
    if a.batch > 1 && a.samples.is_some() {
        bail!(
            "--batch goes with single restorations: --samples already draws its K samples in one batched chain"
        );
    }
    // (clap's `requires` is not checked when inputs, which exclude --measured, are given.)
    if a.measured.is_none() {
        for (flag, given) in [
            ("--reference", a.reference.is_some()),
            ("--fit", a.fit.is_some()),
        ] {
            if given {
                bail!(
                    "{flag} goes with --measured (a simulated restore's input is its own reference, cropped and resized as it is)"
                );
            }
        }
    }
    let inputs = match &a.measured {
        Some(m) => {
            // A pipe (`/dev/stdin`) or FIFO is fine: the loader reads it into memory.
            if !m.exists() {
                bail!("--measured {} does not exist", m.display());
            }
            if m.is_dir() {
                bail!("--measured {} is a folder: give one image", m.display());
            }
            a.operator.check_measured(a.op)?;
            Vec::new()
        }
        None => named_inputs(&a.inputs)?,
    };
    check_out(&c.out)?;
    let device = model::device(c.backend.as_str())?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let schedule = net.schedule().clone();
    let size = net.image_size();
    let spec = a.operator.spec(a.op, size)?;
    let method_name = crate::args::value_name(&a.method);
    // (index among all inputs, output name, job); each simulated image's seed is `--seed`
    // plus its index among all inputs, skipped ones included.
    let mut jobs: Vec<(usize, String, Job)> = Vec::new();
    let mut skipped = Vec::new();
    if let Some(path) = &a.measured {
        // The operator's output size at the model's resolution (8×8 for sr4 at 32 px).
        let op = tweedie_operators::build(&spec, size, size, &mut NoiseSource::new(0), &device)?;
        let [mh, mw] = tasks::measurement_size(op.as_ref(), [size, size], &device);
        let what = if (mw, mh) == (size, size) {
            format!("the model's resolution (--op {})", a.op.name())
        } else {
            format!(
                "--op {}'s measurement of the model's {size}×{size} images (the low-resolution image itself)",
                a.op.name()
            )
        };
        let y_img = load_fitted(path, (mw, mh), a.fit, &what)?;
        let y = tweedie_io::to_tensor(std::slice::from_ref(&y_img), &device)?;
        let reference = match &a.reference {
            Some(r) => {
                let img = load_fitted(r, (size, size), a.fit, "the model's resolution")
                    .context("--reference")?;
                let t = tweedie_io::to_tensor(std::slice::from_ref(&img), &device)?;
                Some((img, t))
            }
            None => None,
        };
        jobs.push((
            0,
            stem(path),
            Job::Measured {
                y_img,
                y,
                reference,
            },
        ));
    } else {
        let (usable, skip) = readable(inputs.iter().enumerate().collect(), a.strict, |p| {
            Ok(tweedie_io::load_image_sized(p, size)?)
        })?;
        skipped = skip;
        for (i, input) in usable {
            let img = tweedie_io::load_image_sized(&input.path, size)?;
            let x = tweedie_io::to_tensor(std::slice::from_ref(&img), &device)?;
            jobs.push((i, input.name.clone(), Job::Simulated { img, x }));
        }
    }
    let lpips = Lpips::alex_default(&device)?;
    let measured = a.measured.is_some();
    let has_reference = !measured || a.reference.is_some();
    let restored_title = match a.samples {
        Some(k) => format!("mean of {k}"),
        None => "restored".into(),
    };
    let init_title = match method {
        Method::Sdedit => "init x_t0",
        _ => "init A+y",
    };
    let titles: Vec<String> = if measured {
        let mut t = vec!["measurement".into(), init_title.into(), restored_title];
        if has_reference {
            t.push("reference".into());
        }
        t
    } else {
        vec![
            "ground truth".into(),
            "measurement".into(),
            "initialisation".into(),
            restored_title,
        ]
    };
    let mut grid = Grid::new(128).with_titles(&titles);
    let mut records = Vec::new();
    // Simulated restores run `--batch` images per chain; their results wait here.
    let mut ready: std::collections::VecDeque<tasks::Restoration> = Default::default();
    // Without a terminal, a line per image with an ETA.
    let mut progress = crate::progress::Progress::lines(jobs.len(), "restore");
    for (j, (i, name, job)) in jobs.iter().enumerate() {
        let seed = c.seed.wrapping_add(*i as u64);
        let settings = a
            .solver
            .settings(method, spec.clone(), seed, c.variance)?
            .for_model(&net);
        let (observation, reference) = match job {
            Job::Simulated { x, .. } => (tasks::Observation::Simulated(x), Some(x)),
            Job::Measured { y, reference, .. } => (
                tasks::Observation::Measured {
                    y,
                    image_size: [size, size],
                },
                reference.as_ref().map(|r| &r.1),
            ),
        };
        let pb = bar(a.solver.steps, &format!("{method} {name}"));
        let mut obs = Observer::with_progress(|s: StepInfo| {
            pb.set_length(s.total as u64);
            pb.set_position(s.step as u64)
        });
        let mut record =
            json!({"image": name, "method": method.to_string(), "network": net.describe()});
        let (r, outputs) = match a.samples {
            None if matches!(job, Job::Simulated { .. }) => {
                if ready.is_empty() {
                    // This image and the next ones, up to --batch, in one chain.
                    let chunk = &jobs[j..(j + a.batch).min(jobs.len())];
                    let mut xs = Vec::with_capacity(chunk.len());
                    for (_, _, job) in chunk {
                        if let Job::Simulated { x, .. } = job {
                            xs.push(x.clone());
                        }
                    }
                    let seeds: Vec<u64> = chunk
                        .iter()
                        .map(|(i, ..)| c.seed.wrapping_add(*i as u64))
                        .collect();
                    if chunk.len() > 1 {
                        let names: Vec<&str> = chunk.iter().map(|(_, n, _)| n.as_str()).collect();
                        pb.set_message(format!("{method} {}", names.join(", ")));
                    }
                    ready.extend(tasks::restore_each(
                        &net,
                        &schedule,
                        &Tensor::cat(xs, 0),
                        &settings,
                        &seeds,
                        &device,
                        &mut obs,
                    )?);
                }
                pb.finish_and_clear();
                let r = ready
                    .pop_front()
                    .context("a batch returned too few results")?;
                let file = format!("{name}_{method_name}.png");
                tweedie_io::save_png(&one(&r.reconstruction), c.out.join(&file))?;
                (r, vec![file])
            }
            None => {
                let r = tasks::restore_from(
                    &net,
                    &schedule,
                    observation,
                    &settings,
                    &device,
                    &mut obs,
                )?;
                pb.finish_and_clear();
                let file = format!("{name}_{method_name}.png");
                tweedie_io::save_png(&one(&r.reconstruction), c.out.join(&file))?;
                (r, vec![file])
            }
            Some(k) => {
                let p = tasks::posterior_samples(
                    &net,
                    &schedule,
                    observation,
                    &settings,
                    k,
                    &device,
                    &mut obs,
                )?;
                pb.finish_and_clear();
                let (files, extra) =
                    write_samples(&p, name, &method_name, &c.out, &lpips, reference, size)?;
                for (key, value) in extra {
                    record[key] = value;
                }
                (p.restoration, files)
            }
        };
        let s = scores_of(&lpips, &r.reconstruction, reference)?;
        let mut outputs = outputs;
        let mut params: Vec<String> = Vec::new();
        let row = match job {
            Job::Simulated { img, .. } => {
                let file = format!("{name}_measurement.png");
                tweedie_io::save_png(&one(&r.measurement_image), c.out.join(&file))?;
                outputs.push(file);
                // The kernel or mask this run used, so that it can be rerun or compared
                // (beside the image's other outputs, in its subfolder if it has one).
                if let Some(dir) = c.out.join(name).parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                params = r
                    .operator
                    .save_params(&c.out, name)?
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                vec![
                    GridCell::new(img.clone(), ""),
                    GridCell::new(one(&r.measurement_image), &r.description),
                    GridCell::new(one(&r.initialisation), ""),
                    GridCell::new(
                        one(&r.reconstruction),
                        &s.map(|s| s.caption()).unwrap_or_default(),
                    ),
                ]
            }
            Job::Measured {
                y_img, reference, ..
            } => {
                let mut row = vec![
                    GridCell::new(
                        upscale_nearest(y_img, size, size),
                        &format!("{} ({}x{})", r.description, y_img.width, y_img.height),
                    ),
                    GridCell::new(one(&r.initialisation), ""),
                    GridCell::new(
                        one(&r.reconstruction),
                        &s.map(|s| s.caption()).unwrap_or_default(),
                    ),
                ];
                if let Some((img, _)) = reference {
                    row.push(GridCell::new(img.clone(), "PSNR/LPIPS"));
                }
                row
            }
        };
        grid.push_row(row);
        progress.inc(1, name);
        match s {
            Some(s) => println!(
                "{name}: {method} {} → PSNR {:.2} dB  SSIM {:.3}  LPIPS {:.4}",
                r.description, s.psnr, s.ssim, s.lpips
            ),
            None => println!(
                "{name}: {method} {} → restored (no --reference, so no metrics)",
                r.description
            ),
        }
        record["operator"] = json!(r.description);
        record["settings"] = json!(settings);
        record["summary"] = json!(settings.summary());
        if let Job::Measured { .. } = job {
            record["measured"] = json!(a.measured);
            record["reference"] = json!(a.reference);
            record["fit"] = json!(a.fit.map(|f| crate::args::value_name(&f)));
        } else {
            record["operator_files"] = json!(params);
        }
        record["outputs"] = json!(outputs);
        if let Some(s) = s {
            record["scores"] = json!(s);
        }
        records.push(record);
    }
    grid.save(c.out.join(format!("{method_name}_grid.png")))?;
    let skipped_names: Vec<String> = skipped
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    write_json(
        &c.out.join(format!("{method_name}_metrics.json")),
        &json!({"results": records, "skipped": skipped_names}),
    )?;
    println!("wrote {}", c.out.display());
    warn_skipped(&skipped, inputs.len());
    Ok(())
}

/// Most samples shown in the `--samples` figure.
const FIGURE_SAMPLES: usize = 4;

/// Writes the outputs of `restore --samples`: `<name>_<method>_mean.png`, `_std.png` (the
/// per-pixel standard deviation, averaged over the channels, as a heat map from 0 to its
/// maximum), `_sample_<k>.png` and the figure `_samples.png` (mean | std | up to four samples,
/// the std's scale in its caption). Returns the files and the record's extra entries.
#[allow(clippy::type_complexity)] // the files written and the JSON fields they add
fn write_samples(
    p: &tasks::PosteriorSamples,
    name: &str,
    method_name: &str,
    out: &Path,
    lpips: &Lpips,
    reference: Option<&Tensor<4>>,
    size: usize,
) -> Result<(Vec<String>, Vec<(&'static str, serde_json::Value)>)> {
    let k = p.samples.dims()[0];
    let mut files = Vec::new();
    let mut save = |img: &Image, file: String| -> Result<()> {
        tweedie_io::save_png(img, out.join(&file))?;
        files.push(file);
        Ok(())
    };
    let mean = one(&p.mean);
    save(&mean, format!("{name}_{method_name}_mean.png"))?;
    let std = tweedie_core::tensor::to_vec(&p.std_map());
    let max = std.iter().cloned().fold(0.0f32, f32::max);
    let avg = std.iter().map(|v| *v as f64).sum::<f64>() / std.len() as f64;
    let heat = tweedie_io::heat_map(&std, size, size, max)?;
    save(&heat, format!("{name}_{method_name}_std.png"))?;
    let samples = tweedie_io::from_tensor(&p.samples)?;
    let digits = (k - 1).to_string().len().max(3);
    for (j, img) in samples.iter().enumerate() {
        save(img, format!("{name}_{method_name}_sample_{j:0digits$}.png"))?;
    }
    let mean_scores = scores_of(lpips, &p.restoration.reconstruction, reference)?;
    let sample_scores = match reference {
        Some(r) => Some(tasks::score(
            lpips,
            &p.samples.clone().clamp(-1.0, 1.0),
            &r.clone().repeat_dim(0, k),
        )?),
        None => None,
    };
    let shown = k.min(FIGURE_SAMPLES);
    let mut titles = vec![format!("mean of {k}"), "std (heat map)".to_string()];
    titles.extend((1..=shown).map(|j| format!("sample {j}")));
    let mut figure = Grid::new(128).with_titles(&titles);
    let mut row = vec![
        GridCell::new(mean, &mean_scores.map(|s| s.caption()).unwrap_or_default()),
        GridCell::new(
            heat,
            &format!("black 0 to yellow {max:.3} (mean {avg:.3}, [-1,1] units)"),
        ),
    ];
    for (j, img) in samples.iter().take(shown).enumerate() {
        let caption = sample_scores
            .as_ref()
            .map(|s| s[j].caption())
            .unwrap_or_default();
        row.push(GridCell::new(img.clone(), &caption));
    }
    figure.push_row(row);
    let file = format!("{name}_{method_name}_samples.png");
    figure.save(out.join(&file))?;
    files.push(file);
    let mut extra = vec![
        ("samples", json!(k)),
        (
            "std",
            json!({
                "max": max,
                "mean": avg,
                "what": "per-pixel standard deviation over the samples (Bessel-corrected), averaged over the channels, in the [-1, 1] scale; the heat map runs from black (0) to light yellow (max)",
            }),
        ),
    ];
    if let Some(s) = sample_scores {
        extra.push(("sample_scores_mean", json!(Scores::mean(&s))));
        extra.push(("sample_scores", json!(s)));
    }
    Ok((files, extra))
}
