//! `tweedie report`: the full task suite (Tasks 2–6) on one model and a folder of faces,
//! written as `report/README.md` with figures, a metrics table and `report/metrics.json`.
//! `cargo xtask run-all` runs this.

use crate::model;
use crate::operator_args::{OpArg, operator_spec};
use crate::progress::bar;
use anyhow::{Context, Result, bail};
use burn::tensor::Tensor;
use clap::Args;
use serde_json::json;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use tweedie::calibrate::Calibration;
use tweedie::tasks::{self, Method, Scores};
use tweedie_core::NoiseSource;
use tweedie_io::{Grid, GridCell, Image};
use tweedie_metrics::Lpips;
use tweedie_samplers::{ChainOptions, Observer, StepInfo};

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub common: crate::args::Common,
    #[command(flatten)]
    pub solver: crate::args::SolverArgs,
    /// Folder of test faces.
    #[arg(long)]
    pub faces: PathBuf,
    /// How many faces to use.
    #[arg(long, default_value_t = 4)]
    pub n_faces: usize,
    /// Centre-crop side before resizing (the embedded model was trained with 140 on CelebA).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Number of unconditional samples.
    #[arg(long, default_value_t = 16)]
    pub n_samples: usize,
    /// Operators for Tasks 4–6.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "inpaint-box,gaussian-blur,motion-blur,sr4"
    )]
    pub ops: Vec<OpArg>,
    /// Operator strengths from `tweedie calibrate --out` (matched to DPS's 256-px difficulty);
    /// without it, DPS's settings are scaled by pixel size, and the report says so.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Sampler presets to run (each in turn replaces `--preset`); a method whose resolved
    /// settings are the same under two presets runs once.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dps,sheet")]
    pub presets: Vec<tweedie::tasks::Preset>,
    /// LPIPS-VGG weights (e.g. ../shared/weights/lpips_vgg16.safetensors) for a second
    /// perceptual column beside LPIPS-Alex.
    #[arg(long)]
    pub lpips_vgg: Option<PathBuf>,
    /// The output folder of a `tweedie nfe` run (nfe.md, nfe.png, nfe.json): its table and
    /// plot become the report's section on quality against steps.
    #[arg(long)]
    pub nfe: Option<PathBuf>,
    /// What the model is, where it came from and its licence, shown under the report's title
    /// and in its JSON (`cargo xtask run-all --model NAME` fills it for the models it fetches).
    #[arg(long)]
    pub model_about: Option<String>,
}

/// PSNR, SSIM, LPIPS-Alex (and LPIPS-VGG) of each item.
fn scores_with_vgg(
    lpips: &Lpips,
    vgg: Option<&Lpips>,
    x: &Tensor<4>,
    x0: &Tensor<4>,
) -> Result<(Vec<Scores>, Option<Vec<f64>>)> {
    let s = tasks::score(lpips, x, x0)?;
    let v = vgg.map(|v| v.distance(x, x0)).transpose()?;
    Ok((s, v))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn images(x: &Tensor<4>) -> Vec<Image> {
    tweedie_io::from_tensor(x).expect("3 channels")
}

pub fn run(a: ReportArgs) -> Result<()> {
    let started = Instant::now();
    let c = &a.common;
    // Bad solver options fail here, not after Tasks 2 and 3 have run.
    a.solver.validate()?;
    crate::args::refuse_repeats("--ops", &a.ops, crate::args::value_name)?;
    crate::args::refuse_repeats("--presets", &a.presets, crate::args::value_name)?;
    if a.n_faces == 0 {
        bail!("--n-faces must be ≥ 1");
    }
    crate::output::check_out(&c.out)?;
    let device = model::device(c.backend.as_str())?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let size = net.image_size();
    let lpips = Lpips::alex_default(&device)?;
    let schedule = net.schedule().clone();
    let files: Vec<PathBuf> = crate::inputs::collect_inputs(std::slice::from_ref(&a.faces))?
        .into_iter()
        .take(a.n_faces)
        .collect();
    if files.is_empty() {
        bail!("no faces in {}", a.faces.display());
    }
    let faces: Vec<Image> = files
        .iter()
        .map(|f| crate::inputs::load_cropped(f, a.crop, size))
        .collect::<Result<_>>()?;
    let x0 = tweedie_io::to_tensor(&faces, &device)?;
    let fig = c.out.join("figures");
    let mut md = String::new();
    let mut all = json!({"model": c.model, "network": net.describe(), "image_size": size, "faces": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(), "steps": a.solver.steps, "sigma": a.solver.sigma});
    writeln!(md, "# tweedie report\n")?;
    if let Some(about) = &a.model_about {
        writeln!(md, "**Model:** {about}\n")?;
        all["model_about"] = json!(about);
    }
    writeln!(
        md,
        "Model: `{}` ({}×{}, {:.2} M parameters). Faces: {} from `{}`. Reverse steps: {} (strided from T = {}{}). Seed {}. Backend: {}.\n",
        c.model,
        size,
        size,
        net.num_parameters() as f64 / 1e6,
        faces.len(),
        a.faces.display(),
        a.solver.steps,
        schedule.num_steps(),
        if a.solver.steps == schedule.num_steps() {
            ", the sheet's full chain"
        } else {
            "; `--full` runs 1000"
        },
        c.seed,
        c.backend.as_str()
    )?;

    // Task 2.
    let ts = [30usize, 100, 300];
    let mut noise = NoiseSource::new(c.seed);
    let mut titles = vec!["x0".to_string()];
    for t in ts {
        titles.push(format!("x_t t={t}"));
        titles.push(format!("x0^ t={t}"));
    }
    let mut rows: Vec<Vec<GridCell>> = faces
        .iter()
        .map(|f| vec![GridCell::new(f.clone(), "PSNR/LPIPS")])
        .collect();
    let mut task2 = Vec::new();
    writeln!(
        md,
        "## Task 2 — forward noising and one-step Tweedie denoising\n\n![Task 2](figures/task2_denoise.png)\n\n| t | PSNR (dB) | SSIM | LPIPS |\n|---|---|---|---|"
    )?;
    for t in ts {
        let d = tweedie_samplers::denoise(&net, &schedule, x0.clone(), t, &mut noise)?;
        let den = d.x0_hat.clamp(-1.0, 1.0);
        let s_noisy = tasks::score(&lpips, &d.x_t.clone().clamp(-1.0, 1.0), &x0)?;
        let s = tasks::score(&lpips, &den, &x0)?;
        for (i, (xt, xd)) in images(&d.x_t).into_iter().zip(images(&den)).enumerate() {
            rows[i].push(GridCell::new(xt, &s_noisy[i].caption()));
            rows[i].push(GridCell::new(xd, &s[i].caption()));
        }
        let m = Scores::mean(&s);
        writeln!(
            md,
            "| {t} | {:.2} | {:.3} | {:.4} |",
            m.psnr, m.ssim, m.lpips
        )?;
        task2
            .push(json!({"t": t, "mean": m, "per_image": s, "noisy_mean": Scores::mean(&s_noisy)}));
    }
    let mut g = Grid::new(96).with_titles(&titles);
    rows.into_iter().for_each(|r| g.push_row(r));
    g.save(fig.join("task2_denoise.png"))?;
    all["task2"] = json!(task2);
    writeln!(
        md,
        "\nProblem sheet (FFHQ-256 model): 37.4/0.0378 (t=30), 32.7/0.0941 (t=100), 27.3/0.203 (t=300). PSNR and SSIM are on the [0, 1] scale; LPIPS is AlexNet LPIPS v0.1 — on images this small the network sees few pixels, so absolute LPIPS values are far lower than at 256×256 and not comparable with the sheet.\n"
    )?;

    // Task 3.
    {
        let opts = ChainOptions {
            steps: a.solver.steps,
            variance: c.variance_or_beta(),
            ..Default::default()
        };
        let (imgs, secs) = crate::sampling::sample_images(
            &net,
            a.n_samples,
            &opts,
            c.seed,
            &device,
            "task 3 generate",
        )?;
        let cols = (a.n_samples as f64).sqrt().ceil() as usize;
        let g = Grid::from_images(&imgs, cols, 64);
        g.save(fig.join("task3_samples.png"))?;
        writeln!(
            md,
            "## Task 3 — unconditional generation\n\n{} samples, x̂0-form ancestral steps, {} steps, {:.1} s.\n\n![Task 3](figures/task3_samples.png)\n",
            a.n_samples, a.solver.steps, secs
        )?;
        all["task3"] = json!({"n": a.n_samples, "steps": a.solver.steps, "seconds": secs});
    }

    // Tasks 4–6.
    let calibration: Option<(serde_json::Value, Vec<Calibration>)> = a
        .calibration
        .as_deref()
        .map(|p| crate::operator_args::read_calibrations(p, size))
        .transpose()?;
    let calibrations: &[Calibration] = calibration.as_ref().map_or(&[], |(_, c)| c);
    let vgg = a
        .lpips_vgg
        .as_ref()
        .map(|p| Lpips::load(tweedie_metrics::Backbone::Vgg, p, &device))
        .transpose()?;
    writeln!(md, "## Tasks 4–6 — SDEdit, Score-ALD and DPS\n")?;
    match &calibration {
        Some((cal, cals)) => {
            writeln!(
                md,
                "### Operator strengths\n\nThe sheet's and DPS's operator settings are for 256×256 FFHQ. Scaling them by pixel size makes some problems trivial at {size} px (a σ = 0.375 Gaussian blur keeps 89 % of the mass in its centre tap: the noisy measurement alone scores ≈ 32 dB). Instead each operator's strength is chosen so that the measurement is as hard as DPS's at 256 px: the same PSNR of y (blurs) or A⁺y (masks, SR) against x0, σ_y = {}. Made by `tweedie calibrate` ([`calibration.json`](calibration.json)): {} FFHQ images at 256 px vs {} CelebA faces at {size} px.\n",
                cal["sigma"], cal["reference_images"], cal["faces_used"]
            )?;
            writeln!(md, "{}", tweedie::calibrate::table(cals))?;
            tweedie_io::write_atomic(
                &c.out.join("calibration.json"),
                serde_json::to_string_pretty(cal)?.as_bytes(),
            )?;
        }
        None => writeln!(
            md,
            "Operator strengths: DPS's 256-px settings scaled by pixel size (no `--calibration` given). Some are far easier at this size than at 256 px; see `tweedie calibrate`.\n"
        )?,
    }
    writeln!(
        md,
        "Each operator's table starts with the **measurement only** row (the do-nothing baseline: y for blurs, A⁺y for masks and SR). Every row states its method's settings; the `dps` preset is the official DPS code's (learned variance, residual rule, ζ = 0.5 for inpainting and 0.3 otherwise, applied per step whatever the number of steps), the `sheet` preset the problem sheet's (σ² = β, ζ_t = ζ/‖∇‖A(x̂0) − y‖²‖ with ζ = 1). Score-ALD uses our stabilised update (`docs/samplers.md`); the sheet's literal update is run once below to show that it diverges. PSNR and SSIM on the [0, 1] scale; LPIPS v0.1 (AlexNet{}).\n",
        if vgg.is_some() {
            " and VGG"
        } else {
            "; VGG: pass `--lpips-vgg`"
        }
    )?;
    // Without a terminal (run-all logging to a file, CI) the bars are hidden: one line a run.
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut restorations = Vec::new();
    let mut summary_table = String::from(
        "| operator | method | settings | PSNR | SSIM | LPIPS-Alex | LPIPS-VGG |\n|---|---|---|---|---|---|---|\n",
    );
    let fmt_vgg = |v: &Option<Vec<f64>>| {
        v.as_ref()
            .map_or("–".to_string(), |v| format!("{:.4}", mean(v)))
    };
    for (oi, &op_arg) in a.ops.iter().enumerate() {
        let (spec, origin) = operator_spec(op_arg, size, calibrations)?;
        // The measurement every method below sees (same seed ⇒ same operator and y).
        let base = tweedie::tasks::RestoreSettings {
            seed: c.seed,
            sigma: a.solver.sigma,
            ..tweedie::tasks::RestoreSettings::new(
                Method::Dps,
                tweedie::tasks::Preset::Dps,
                spec.clone(),
            )
        };
        let m = tasks::simulate(&x0, &base, &device)?;
        let desc = m.operator.describe();
        let y_img = m.image.clone().clamp(-1.0, 1.0);
        let (s_meas, v_meas) = scores_with_vgg(&lpips, vgg.as_ref(), &y_img, &x0)?;
        let mm = Scores::mean(&s_meas);
        writeln!(
            md,
            "### {desc} ({origin}; `{}`)\n\n| method | settings | PSNR (dB) | SSIM | LPIPS-Alex | LPIPS-VGG | time (s) |\n|---|---|---|---|---|---|---|\n| measurement only | {} | {:.2} | {:.3} | {:.4} | {} | – |",
            op_arg.name(),
            if op_arg.name().contains("blur") {
                "y"
            } else {
                "A⁺y"
            },
            mm.psnr,
            mm.ssim,
            mm.lpips,
            fmt_vgg(&v_meas)
        )?;
        writeln!(
            summary_table,
            "| {desc} | measurement only | – | {:.2} | {:.3} | {:.4} | {} |",
            mm.psnr,
            mm.ssim,
            mm.lpips,
            fmt_vgg(&v_meas)
        )?;
        restorations.push(json!({"operator": op_arg.name(), "spec": spec, "strength": origin, "description": desc, "method": "measurement only", "mean": mm, "lpips_vgg": v_meas.as_ref().map(|v| mean(v)), "per_image": s_meas}));
        let mut columns: Vec<(String, Vec<Image>)> = vec![
            ("ground truth".into(), faces.clone()),
            ("measurement".into(), images(&y_img)),
        ];
        let mut seen: Vec<serde_json::Value> = Vec::new();
        let mut runs: Vec<tweedie::tasks::RestoreSettings> = Vec::new();
        for &preset in &a.presets {
            // The DPS code's ζ is per step of its 1000-step chain: a strided chain keeps its
            // total guidance with ζ × 1000/steps (stated in the run's settings and notes).
            let solver = crate::args::SolverArgs {
                preset,
                scale_zeta_with_stride: a.solver.scale_zeta_with_stride
                    || preset == tweedie::tasks::Preset::Dps,
                ..a.solver.clone()
            };
            for method in [Method::Sdedit, Method::ScoreAld, Method::Dps] {
                let settings = solver
                    .settings(method, spec.clone(), c.seed, c.variance)?
                    .for_model(&net);
                // Two presets may resolve to the same run of a method: compare what the run
                // reads (a method's settings hold only its own knobs).
                let mut key = serde_json::to_value(&settings)?;
                key["preset"] = serde_json::Value::Null;
                key["notes"] = serde_json::Value::Null;
                if !seen.contains(&key) {
                    seen.push(key);
                    runs.push(settings);
                }
            }
        }
        // The sheet's literal Score-ALD, once: it diverges (docs/samplers.md).
        if oi == 0 {
            let mut literal = a
                .solver
                .settings(Method::ScoreAld, spec.clone(), c.seed, c.variance)?
                .for_model(&net);
            if let tweedie::tasks::Settings::ScoreAld(ald) = &mut literal.solver {
                ald.rule = tweedie_samplers::AldRule::Sheet;
            }
            literal.preset = None;
            runs.push(literal);
        }
        for settings in runs {
            let method = settings.method();
            let summary = settings.summary();
            let pb = bar(a.solver.steps, &format!("{method} {}", op_arg.name()));
            let mut obs = Observer::with_progress(|i: StepInfo| {
                pb.set_length(i.total as u64);
                pb.set_position(i.step as u64)
            });
            let t0 = Instant::now();
            let result = tasks::restore(&net, &schedule, &x0, &settings, &device, &mut obs);
            pb.finish_and_clear();
            let secs = t0.elapsed().as_secs_f64();
            let r = match result {
                Ok(r) => r,
                Err(tasks::TaskError::Sample(
                    e @ tweedie_samplers::SampleError::Diverged { .. },
                )) => {
                    writeln!(md, "| {method} | {summary} | diverged | | | | {secs:.0} |")?;
                    writeln!(
                        summary_table,
                        "| {desc} | {method} | {summary} | diverged | | | |"
                    )?;
                    restorations.push(json!({"operator": op_arg.name(), "spec": spec, "method": method.to_string(), "settings": settings, "summary": summary, "diverged": e.to_string(), "seconds": secs}));
                    eprintln!("{summary}: {e}");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let (s, v) = scores_with_vgg(&lpips, vgg.as_ref(), &r.reconstruction, &x0)?;
            let ms = Scores::mean(&s);
            if plain {
                eprintln!(
                    "report: {} {summary}: PSNR {:.2} dB in {secs:.0} s (elapsed {:.0} s)",
                    op_arg.name(),
                    ms.psnr,
                    started.elapsed().as_secs_f64()
                );
            }
            writeln!(
                md,
                "| {method} | {summary} | {:.2} | {:.3} | {:.4} | {} | {secs:.0} |",
                ms.psnr,
                ms.ssim,
                ms.lpips,
                fmt_vgg(&v)
            )?;
            writeln!(
                summary_table,
                "| {desc} | {method} | {summary} | {:.2} | {:.3} | {:.4} | {} |",
                ms.psnr,
                ms.ssim,
                ms.lpips,
                fmt_vgg(&v)
            )?;
            let label = match (method, settings.preset) {
                (Method::Dps, Some(p)) => format!("DPS ({p})"),
                _ => method.to_string(),
            };
            columns.push((label, images(&r.reconstruction)));
            restorations.push(json!({"operator": op_arg.name(), "spec": spec, "strength": origin, "description": desc, "method": method.to_string(), "settings": settings, "summary": summary, "mean": ms, "lpips_vgg": v.as_ref().map(|v| mean(v)), "per_image": s, "seconds": secs}));
        }
        let titles: Vec<&str> = columns.iter().map(|(t, _)| t.as_str()).collect();
        let mut g = Grid::new(96).with_titles(&titles);
        for i in 0..faces.len() {
            g.push_row(
                columns
                    .iter()
                    .map(|(_, imgs)| GridCell::new(imgs[i].clone(), ""))
                    .collect(),
            );
        }
        let file = format!("restore_{}.png", op_arg.name());
        g.save(fig.join(&file))?;
        writeln!(md, "\n![{desc}](figures/{file})\n")?;
    }
    all["restorations"] = json!(restorations);
    writeln!(md, "## All restorations\n\n{summary_table}")?;
    if let Some(dir) = &a.nfe {
        let table = std::fs::read_to_string(dir.join("nfe.md"))
            .with_context(|| format!("--nfe: reading {}", dir.join("nfe.md").display()))?;
        std::fs::copy(dir.join("nfe.png"), fig.join("nfe.png"))
            .with_context(|| format!("--nfe: copying {}", dir.join("nfe.png").display()))?;
        let runs: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("nfe.json"))
                .with_context(|| format!("--nfe: reading {}", dir.join("nfe.json").display()))?,
        )?;
        let mut steps: Vec<u64> = runs
            .as_array()
            .map(|r| r.iter().filter_map(|x| x["steps"].as_u64()).collect())
            .unwrap_or_default();
        steps.sort_unstable();
        steps.dedup();
        let steps = list_words(&steps);
        all["nfe"] = runs;
        writeln!(
            md,
            "## Quality against steps (NFE)\n\nEach method restores the same measurements (`tweedie nfe`: the same faces, operators and seed) with {steps} strided steps; one network evaluation per step (DPS also back-propagates through the network). Cells: PSNR (dB) / LPIPS-Alex / wall time of the batch. DPS's ζ is scaled by 1000/steps (the DPS preset).\n\n![NFE curves](figures/nfe.png)\n\n{table}"
        )?;
    }
    writeln!(
        md,
        "## The problem sheet's numbers (not comparable)\n\nThe sheet reports, for its FFHQ-256 model (93.6 M parameters, 1000 steps, 256×256 images, σ = 3 Gaussian deconvolution and 128×128 box inpainting), PSNR/LPIPS: SDEdit 20.2/0.189 (inpainting), 20.1/0.232 (deconvolution); Score-ALD 28.5/0.0605, 22.2/0.144; DPS 34.0/0.0239, 28.4/0.0518. They are listed here only for orientation: model, image size, steps and LPIPS's receptive field all differ, so they cannot be set beside the tables above.\n"
    )?;
    let total = started.elapsed().as_secs_f64();
    all["wall_seconds"] = json!(total);
    writeln!(
        md,
        "Total wall time: {:.0} s. All numbers: [`metrics.json`](metrics.json).",
        total
    )?;
    tweedie_io::write_atomic(
        &c.out.join("metrics.json"),
        serde_json::to_string_pretty(&all)?.as_bytes(),
    )?;
    tweedie_io::write_atomic(&c.out.join("README.md"), md.as_bytes())?;
    println!("{summary_table}");
    println!(
        "report written to {} in {:.0} s",
        c.out.join("README.md").display(),
        total
    );
    Ok(())
}

/// "20", "20 and 100", "20, 50, 100 and 1000".
fn list_words(v: &[u64]) -> String {
    match v {
        [] => "no".into(),
        [a] => a.to_string(),
        [rest @ .., last] => format!(
            "{} and {last}",
            rest.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::list_words;

    #[test]
    fn step_lists_read_as_words() {
        assert_eq!(list_words(&[]), "no");
        assert_eq!(list_words(&[20]), "20");
        assert_eq!(list_words(&[20, 100]), "20 and 100");
        assert_eq!(list_words(&[20, 50, 100, 1000]), "20, 50, 100 and 1000");
    }
}
