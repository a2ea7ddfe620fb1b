//! `tweedie nfe`: quality against the number of steps for several methods.

use crate::args::{Common, SolverArgs};
use crate::model;
use crate::operator_args::{OpArg, operator_spec};
use crate::output::check_out;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use tweedie::nfe::{NfeRun, fastest_within, plot, sweep, table};
use tweedie::tasks::Method;
use tweedie_metrics::Lpips;

/// `tweedie nfe`'s arguments.
#[derive(Args, Debug)]
pub struct NfeArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Folder of test faces.
    #[arg(long, default_value = "assets/faces")]
    pub faces: PathBuf,
    /// How many faces (restored in one batch per run).
    #[arg(long, default_value_t = 8)]
    pub n_faces: usize,
    /// Centre-crop side before resizing (140 for CelebA faces and the embedded model).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Methods to sweep.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "dps,diffpir,ddnm"
    )]
    pub methods: Vec<Method>,
    /// Operators.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "inpaint-box,gaussian-blur"
    )]
    pub ops: Vec<OpArg>,
    /// Chain lengths (steps of a strided chain from T = 1000).
    #[arg(long, value_delimiter = ',', default_value = "20,50,100,250,1000")]
    pub nfe_steps: Vec<usize>,
    /// Operator strengths from `tweedie calibrate --out` (default: DPS's settings scaled by
    /// pixel size).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Instead of sweeping, combine the runs of earlier `nfe.json` files (e.g. one per
    /// operator, run as separate jobs) into one table, plot and JSON in `--out`.
    #[arg(long, num_args = 1.., value_name = "NFE_JSON")]
    pub merge: Vec<PathBuf>,
}

/// The settings of one run of a sweep: the command line's, with `steps`; DPS's ζ × 1000/steps
/// under the DPS preset (its ζ is per step of a 1000-step chain).
pub fn sweep_settings(
    solver: &SolverArgs,
    common: &Common,
    method: Method,
    spec: &tweedie_operators::OperatorSpec,
    steps: usize,
) -> Result<tweedie::tasks::RestoreSettings, tweedie::tasks::TaskError> {
    let args = SolverArgs {
        steps,
        scale_zeta_with_stride: solver.scale_zeta_with_stride
            || solver.preset == tweedie::tasks::Preset::Dps,
        ..solver.clone()
    };
    let knobs = args.knobs(spec.clone());
    let settings = tweedie::tasks::RestoreSettings::configure(method, &knobs)?;
    Ok(tweedie::tasks::RestoreSettings {
        sigma: solver.sigma,
        seed: common.seed,
        variance: common.variance.map_or(solver.preset.variance(), Into::into),
        eta: solver.eta,
        ..settings
    })
}

/// Writes `nfe.json`, `nfe.md` and `nfe.png` of `runs` into `out`; returns the Markdown.
pub fn write_outputs(runs: &[NfeRun], out: &std::path::Path) -> Result<String> {
    let mut md = table(runs);
    md.push('\n');
    for (op, base, best) in fastest_within(runs, Method::Dps, 1000, 0.3) {
        let base_psnr = base.scores.map_or(f64::NAN, |s| s.psnr);
        md.push_str(&match best {
            Some((r, speedup)) => format!(
                "- {op}: DPS at 1000 steps gives {base_psnr:.2} dB in {:.0} s; the fastest run within 0.3 dB is {} at {} steps ({:.2} dB, {:.0} s): {speedup:.1}× faster.\n",
                base.seconds,
                r.method,
                r.steps,
                r.scores.map_or(f64::NAN, |s| s.psnr),
                r.seconds
            ),
            None => format!("- {op}: no run reaches within 0.3 dB of DPS at 1000 steps ({base_psnr:.2} dB).\n"),
        });
    }
    tweedie_io::write_atomic(
        &out.join("nfe.json"),
        serde_json::to_string_pretty(runs)?.as_bytes(),
    )?;
    tweedie_io::write_atomic(&out.join("nfe.md"), md.as_bytes())?;
    plot(runs, &out.join("nfe.png"))?;
    Ok(md)
}

/// Runs the sweep and writes its table, plot and JSON.
pub fn run(a: NfeArgs) -> Result<()> {
    let c = &a.common;
    if !a.merge.is_empty() {
        check_out(&c.out)?;
        let mut runs: Vec<NfeRun> = Vec::new();
        for p in &a.merge {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let part: Vec<NfeRun> = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an nfe.json", p.display()))?;
            runs.extend(part);
        }
        let md = write_outputs(&runs, &c.out)?;
        println!("{md}");
        return Ok(());
    }
    a.solver.validate()?;
    for &n in &a.nfe_steps {
        crate::args::check_steps("--nfe-steps", n)?;
    }
    if a.nfe_steps.is_empty() || a.methods.is_empty() || a.ops.is_empty() {
        bail!("--nfe-steps, --methods and --ops each need at least one value");
    }
    crate::args::refuse_repeats("--nfe-steps", &a.nfe_steps, |v| v.to_string())?;
    crate::args::refuse_repeats("--methods", &a.methods, crate::args::value_name)?;
    crate::args::refuse_repeats("--ops", &a.ops, crate::args::value_name)?;
    if a.n_faces == 0 {
        bail!("--n-faces must be ≥ 1");
    }
    crate::args::check_crop(a.crop)?;
    check_out(&c.out)?;
    let device = model::device(c.backend.as_str())?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let size = net.image_size();
    let files: Vec<PathBuf> = crate::inputs::collect_inputs(std::slice::from_ref(&a.faces))?
        .into_iter()
        .take(a.n_faces)
        .collect();
    if files.is_empty() {
        bail!("no faces in {}", a.faces.display());
    }
    let faces = files
        .iter()
        .map(|f| crate::inputs::load_cropped(f, a.crop, size))
        .collect::<Result<Vec<_>>>()?;
    let x = tweedie_io::to_tensor(&faces, &device)?;
    let calibrations = match &a.calibration {
        Some(p) => crate::operator_args::read_calibrations(p, size)?.1,
        None => Vec::new(),
    };
    let ops = a
        .ops
        .iter()
        .map(|&op| Ok((op.name(), operator_spec(op, size, &calibrations)?.0)))
        .collect::<Result<Vec<_>>>()?;
    let lpips = Lpips::alex_default(&device)?;
    let total = ops.len() * a.methods.len() * a.nfe_steps.len();
    let mut progress = crate::progress::Progress::new(total, "nfe");
    let runs = sweep(
        &net,
        net.schedule(),
        &x,
        &lpips,
        &ops,
        &a.methods,
        &a.nfe_steps,
        &|m, spec, n| sweep_settings(&a.solver, c, m, spec, n),
        &device,
        &mut |r| {
            let what = match r.scores {
                Some(s) => format!("{:.2} dB / {:.4}", s.psnr, s.lpips),
                None => "diverged".into(),
            };
            progress.inc(
                1,
                &format!(
                    "{} {} {} steps: {what} in {:.1} s",
                    r.op, r.method, r.steps, r.seconds
                ),
            );
        },
    )?;
    progress.finish();
    let md = write_outputs(&runs, &c.out)?;
    println!("{md}");
    println!("written to {}", c.out.join("nfe.md").display());
    Ok(())
}
