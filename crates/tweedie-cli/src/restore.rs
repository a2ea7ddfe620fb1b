//! `denoise`, `restore` and `metrics`.

use crate::commands::{DenoiseArgs, MetricsArgs, RestoreArgs, bar, check_out, error_text};
use crate::model;
use anyhow::{Context, Result, bail};
use burn::tensor::Tensor;
use serde_json::json;
use std::collections::BTreeMap;
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

/// An input image and the name its outputs are given.
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// Its path relative to the folder it was found in, without the extension and
    /// `/`-separated (`s1/face` for `DIR/s1/face.jpg`), or the file stem of a file given by
    /// name: outputs are `OUT/<name>_….png`, so images of the same name in different
    /// subfolders do not overwrite each other.
    pub name: String,
}

/// `rel` without its extension, components joined by `/`.
fn output_name(rel: &Path) -> String {
    rel.with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// [`collect_inputs`] with each image's output name ([`Input::name`]). Fails, listing them,
/// when two images would get the same name (`a/face.png` and `b/face.png` given by name, or
/// `face.jpg` beside `face.png`): their outputs would overwrite each other.
pub fn named_inputs(inputs: &[PathBuf]) -> Result<Vec<Input>> {
    let mut out: Vec<Input> = Vec::new();
    for p in inputs {
        if p.is_dir() {
            for f in tweedie_io::list_images(p)? {
                let name = output_name(f.strip_prefix(p).unwrap_or(&f));
                out.push(Input { path: f, name });
            }
        } else if p.exists() {
            out.push(Input {
                path: p.clone(),
                name: stem(p),
            });
        } else {
            bail!("input {} does not exist", p.display());
        }
    }
    if out.is_empty() {
        bail!("no PNG/JPEG images found in the inputs");
    }
    // The same file given twice is processed once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|i| seen.insert(i.path.clone()));
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in &out {
        by_name
            .entry(&i.name)
            .or_default()
            .push(i.path.display().to_string());
    }
    let clashes: Vec<String> = by_name
        .iter()
        .filter(|(_, paths)| paths.len() > 1)
        .map(|(name, paths)| format!("{name} ← {}", paths.join(", ")))
        .collect();
    if !clashes.is_empty() {
        bail!(
            "{} output name(s) would be shared, and the outputs overwrite each other: {}. Outputs are named by the path relative to the input folder without the extension (the file stem of an image given by name): rename or move these images, or process them in separate runs",
            clashes.len(),
            clashes.join("; ")
        );
    }
    Ok(out)
}

/// An image that could not be read: its path and why.
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// The error.
    pub why: String,
}

/// Decodes each of `items` (index among all inputs, input) once with `load` before any work:
/// an unreadable one is skipped with a warning, or is an error when `strict`. Fails when
/// images were given but none can be read. Returns the readable ones and the skipped ones.
#[allow(clippy::type_complexity)] // (index, input) pairs in, the readable ones and the skipped out
pub fn readable(
    items: Vec<(usize, &Input)>,
    strict: bool,
    load: impl Fn(&Path) -> Result<Image>,
) -> Result<(Vec<(usize, &Input)>, Vec<Skipped>)> {
    let total = items.len();
    let (mut good, mut skipped) = (Vec::new(), Vec::new());
    for (index, input) in items {
        match load(&input.path) {
            Ok(_) => good.push((index, input)),
            Err(e) => {
                let why = error_text(&e);
                if strict {
                    bail!("{why} (--strict: an unreadable image is an error)");
                }
                eprintln!("warning: skipping an unreadable image: {why}");
                skipped.push(Skipped {
                    path: input.path.clone(),
                    why,
                });
            }
        }
    }
    if good.is_empty() && !skipped.is_empty() {
        bail!(
            "none of the {total} images could be read (the first: {})",
            skipped[0].why
        );
    }
    Ok((good, skipped))
}

/// `first, second, … (and N more)`: at most ten of `names`.
pub fn first_ten(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        text.push_str(&format!(" (and {} more)", names.len() - 10));
    }
    text
}

/// The closing warning on skipped images: "N of M images skipped", naming them.
pub fn warn_skipped(skipped: &[Skipped], total: usize) {
    if skipped.is_empty() {
        return;
    }
    let names: Vec<String> = skipped
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    eprintln!(
        "warning: {} of {total} images skipped (unreadable): {}",
        skipped.len(),
        first_ten(&names)
    );
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
    let inputs = named_inputs(&a.inputs)?;
    check_out(&c.out)?;
    let device = model::device(&c.backend)?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let lpips = Lpips::alex_default(&device)?;
    let size = net.net.config().image_size;
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
            let s_noisy = tasks::score(&lpips, &d.x_t.clone().clamp(-1.0, 1.0), &x0)?[0];
            let s = tasks::score(&lpips, &d.x0_hat.clone().clamp(-1.0, 1.0), &x0)?[0];
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

pub fn restore(a: RestoreArgs) -> Result<()> {
    let c = &a.common;
    let method: Method = a.method.into();
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
            if !m.is_file() {
                bail!("--measured {} does not exist", m.display());
            }
            a.operator.check_measured(a.op)?;
            Vec::new()
        }
        None => named_inputs(&a.inputs)?,
    };
    check_out(&c.out)?;
    let schedule = Schedule::linear_default();
    let device = model::device(&c.backend)?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let size = net.net.config().image_size;
    let spec = a.operator.spec(a.op, size)?;
    let method_name = crate::commands::value_name(&a.method);
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
    let mut progress = crate::commands::Progress::lines(jobs.len(), "restore");
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
        let mut record = json!({"image": name, "method": method.to_string()});
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
            record["fit"] = json!(a.fit.map(|f| crate::commands::value_name(&f)));
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

pub fn metrics(a: MetricsArgs) -> Result<()> {
    if let Some(out) = &a.out {
        check_out(out)?;
    }
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
        let s = tasks::score(&lpips, &xt, &rt)?[0];
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
