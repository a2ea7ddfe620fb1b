//! `tweedie report`: the full task suite (Tasks 2–6) on one model and a folder of faces,
//! written as `report/README.md` with figures, a metrics table and `report/metrics.json`.
//! `cargo xtask run-all` runs this.

use crate::commands::bar;
use crate::model;
use anyhow::{Result, bail};
use burn::tensor::Tensor;
use clap::Args;
use serde_json::json;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use tweedie::tasks::{self, Method, Scores};
use tweedie_core::{NoiseSource, Schedule};
use tweedie_io::{Grid, GridCell, Image};
use tweedie_metrics::Lpips;
use tweedie_operators::OperatorSpec;
use tweedie_samplers::{ChainOptions, Observer, StepInfo};

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub common: crate::commands::Common,
    #[command(flatten)]
    pub solver: crate::commands::SolverArgs,
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
        value_delimiter = ',',
        default_value = "inpaint-box,gaussian-blur"
    )]
    pub ops: Vec<String>,
}

fn images(x: &Tensor<4>) -> Vec<Image> {
    tweedie_io::from_tensor(x).expect("3 channels")
}

pub fn report(a: ReportArgs) -> Result<()> {
    let started = Instant::now();
    let c = &a.common;
    // Bad solver options fail here, not after Tasks 2 and 3 have run.
    a.solver.validate()?;
    let device = model::device(&c.backend)?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let size = net.net.config().image_size;
    let lpips = Lpips::alex_default(&device)?;
    let schedule = Schedule::linear_default();
    let files: Vec<PathBuf> = crate::restore::collect_inputs(std::slice::from_ref(&a.faces))?
        .into_iter()
        .take(a.n_faces)
        .collect();
    if files.is_empty() {
        bail!("no faces in {}", a.faces.display());
    }
    let faces: Vec<Image> = files
        .iter()
        .map(|f| crate::restore::load_cropped(f, a.crop, size))
        .collect::<Result<_>>()?;
    let x0 = tweedie_io::to_tensor(&faces, &device)?;
    let fig = c.out.join("figures");
    let mut md = String::new();
    let mut all = json!({"model": c.model, "image_size": size, "faces": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(), "steps": a.solver.steps, "sigma": a.solver.sigma});
    writeln!(md, "# tweedie report\n")?;
    writeln!(
        md,
        "Model: `{}` ({}×{}, {:.2} M parameters). Faces: {} from `{}`. Reverse steps: {} (strided from T = 1000{}). Seed {}. Backend: {}.\n",
        c.model,
        size,
        size,
        net.net.num_parameters() as f64 / 1e6,
        faces.len(),
        a.faces.display(),
        a.solver.steps,
        if a.solver.steps == 1000 {
            ", the sheet's full chain"
        } else {
            "; `--full` runs 1000"
        },
        c.seed,
        c.backend
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
        let (imgs, secs) = crate::commands::sample_images(
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
    let mut table = String::from(
        "| method | operator | PSNR (dB) | SSIM | LPIPS | time (s) |\n|---|---|---|---|---|---|\n",
    );
    let mut restorations = Vec::new();
    for (task, method) in [(4, Method::Sdedit), (5, Method::Ald), (6, Method::Dps)] {
        writeln!(md, "## Task {task} — {method}\n")?;
        for op_name in &a.ops {
            let op = OperatorSpec::dps_default(op_name, size)?;
            let settings = a
                .solver
                .settings(method, op, c.seed, c.variance)?
                .for_model(&net);
            let pb = bar(a.solver.steps, &format!("task {task} {method} {op_name}"));
            let mut obs = Observer::with_progress(|i: StepInfo| {
                pb.set_length(i.total as u64);
                pb.set_position(i.step as u64)
            });
            let t0 = Instant::now();
            let r = tasks::restore(&net, &schedule, &x0, &settings, &device, &mut obs)?;
            pb.finish_and_clear();
            let secs = t0.elapsed().as_secs_f64();
            let s = tasks::score(&lpips, &r.reconstruction, &x0)?;
            let mut g = Grid::new(96).with_titles(&[
                "ground truth",
                "measurement",
                if method == Method::Sdedit {
                    "x_t0 init"
                } else {
                    "A+y init"
                },
                "restored",
            ]);
            for (i, ((gt, y), (init, rec))) in faces
                .iter()
                .zip(images(&r.measurement_image))
                .zip(
                    images(&r.initialisation.clone().clamp(-1.0, 1.0))
                        .into_iter()
                        .zip(images(&r.reconstruction)),
                )
                .enumerate()
            {
                g.push_row(vec![
                    GridCell::new(gt.clone(), ""),
                    GridCell::new(y, ""),
                    GridCell::new(init, ""),
                    GridCell::new(rec, &s[i].caption()),
                ]);
            }
            let file = format!(
                "task{task}_{}_{op_name}.png",
                method.to_string().to_lowercase().replace('-', "")
            );
            g.save(fig.join(&file))?;
            let m = Scores::mean(&s);
            writeln!(
                md,
                "**{}** — PSNR/LPIPS {:.2} / {:.4} (mean over {} faces)\n\n![{method} {op_name}](figures/{file})\n",
                r.description,
                m.psnr,
                m.lpips,
                faces.len()
            )?;
            writeln!(
                table,
                "| {method} | {} | {:.2} | {:.3} | {:.4} | {:.0} |",
                r.description, m.psnr, m.ssim, m.lpips, secs
            )?;
            restorations.push(json!({"task": task, "method": method.to_string(), "operator": op_name, "description": r.description, "mean": m, "per_image": s, "seconds": secs, "settings": settings}));
        }
    }
    all["restorations"] = json!(restorations);
    writeln!(md, "## Metrics table (Tasks 4–6)\n\n{table}")?;
    writeln!(
        md,
        "Problem sheet (FFHQ-256, 1000 steps): SDEdit 20.2/0.189 (inpainting), 20.1/0.232 (deconvolution); Score-ALD 28.5/0.0605, 22.2/0.144; DPS 34.0/0.0239, 28.4/0.0518.\n"
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
    println!("{table}");
    println!(
        "report written to {} in {:.0} s",
        c.out.join("README.md").display(),
        total
    );
    Ok(())
}
