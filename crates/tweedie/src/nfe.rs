//! Quality against the number of network evaluations (NFE): each method restores the same
//! measurements with several chain lengths, and the runs are tabled and plotted (PSNR and
//! LPIPS against steps, one panel per operator).

use crate::tasks::{self, Method, RestoreSettings, Scores, TaskError};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::Instant;
use tweedie_core::{EpsModel, Schedule};
use tweedie_metrics::Lpips;
use tweedie_operators::OperatorSpec;
use tweedie_samplers::{Observer, SampleError};

/// One restoration of the sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NfeRun {
    /// The operator's short name (e.g. `inpaint-box`).
    pub op: String,
    /// The method.
    pub method: Method,
    /// Reverse steps (one network evaluation each; DPS also back-propagates through it).
    pub steps: usize,
    /// Mean scores over the images (`None` when the chain diverged).
    pub scores: Option<Scores>,
    /// Why the chain stopped, when it diverged.
    pub diverged: Option<String>,
    /// Wall time of the restoration (all images in one batch), seconds.
    pub seconds: f64,
    /// The settings as run.
    pub settings: RestoreSettings,
}

/// Restores `x` (a batch of clean images, measured with each operator's seeded draws) with
/// every method of `methods` at every chain length of `steps`, on every operator of `ops`
/// (`(name, spec)`). `settings(method, spec, steps)` gives each run's settings. `on_run` sees
/// each run as it finishes (progress). A diverged chain is recorded, not fatal.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    model: &dyn EpsModel,
    schedule: &Schedule,
    x: &Tensor<4>,
    lpips: &Lpips,
    ops: &[(String, OperatorSpec)],
    methods: &[Method],
    steps: &[usize],
    settings: &dyn Fn(Method, &OperatorSpec, usize) -> Result<RestoreSettings, TaskError>,
    device: &Device,
    on_run: &mut dyn FnMut(&NfeRun),
) -> Result<Vec<NfeRun>, TaskError> {
    let mut runs = Vec::new();
    for (name, spec) in ops {
        for &method in methods {
            for &n in steps {
                let s = settings(method, spec, n)?.for_model(model);
                let started = Instant::now();
                let result =
                    tasks::restore(model, schedule, x, &s, device, &mut Observer::default());
                let seconds = started.elapsed().as_secs_f64();
                let (scores, diverged) = match result {
                    Ok(r) => {
                        let per = tasks::score(lpips, &r.reconstruction, x)?;
                        (Some(Scores::mean(&per)), None)
                    }
                    Err(TaskError::Sample(e @ SampleError::Diverged { .. })) => {
                        (None, Some(e.to_string()))
                    }
                    Err(e) => return Err(e),
                };
                let run = NfeRun {
                    op: name.clone(),
                    method,
                    steps: n,
                    scores,
                    diverged,
                    seconds,
                    settings: s,
                };
                on_run(&run);
                runs.push(run);
            }
        }
    }
    Ok(runs)
}

/// The Markdown table of a sweep: one row per operator and method, one PSNR / LPIPS / seconds
/// cell per chain length.
pub fn table(runs: &[NfeRun]) -> String {
    let mut steps: Vec<usize> = runs.iter().map(|r| r.steps).collect();
    steps.sort_unstable();
    steps.dedup();
    let mut md = String::new();
    let head: Vec<String> = steps.iter().map(|s| format!("{s} steps")).collect();
    let _ = writeln!(
        md,
        "| operator | method | {} |\n|---|---|{}",
        head.join(" | "),
        "---|".repeat(steps.len())
    );
    let mut keys: Vec<(String, Method)> = Vec::new();
    for r in runs {
        if !keys.contains(&(r.op.clone(), r.method)) {
            keys.push((r.op.clone(), r.method));
        }
    }
    for (op, method) in keys {
        let cells: Vec<String> = steps
            .iter()
            .map(|&n| {
                match runs
                    .iter()
                    .find(|r| r.op == op && r.method == method && r.steps == n)
                {
                    Some(NfeRun {
                        scores: Some(s),
                        seconds,
                        ..
                    }) => format!("{:.2} / {:.4} / {seconds:.0} s", s.psnr, s.lpips),
                    Some(r) if r.diverged.is_some() => format!("diverged / {:.0} s", r.seconds),
                    _ => "–".into(),
                }
            })
            .collect();
        let _ = writeln!(md, "| {op} | {method} | {} |", cells.join(" | "));
    }
    md
}

/// One operator's row of [`fastest_within`]: `(op, reference run, fastest run, speed-up)`.
pub type Fastest<'r> = (String, &'r NfeRun, Option<(&'r NfeRun, f64)>);

/// For each operator: the fastest run within `tolerance_db` of the PSNR of `reference` at
/// `reference_steps` steps, with its speed-up over that reference (`None` when no run reaches
/// it or the reference diverged). Returns `(op, reference run, fastest run, speed-up)`.
pub fn fastest_within(
    runs: &[NfeRun],
    reference: Method,
    reference_steps: usize,
    tolerance_db: f64,
) -> Vec<Fastest<'_>> {
    let mut ops: Vec<&str> = runs.iter().map(|r| r.op.as_str()).collect();
    ops.dedup();
    ops.into_iter()
        .filter_map(|op| {
            let base = runs
                .iter()
                .find(|r| r.op == op && r.method == reference && r.steps == reference_steps)?;
            let target = base.scores?.psnr - tolerance_db;
            let best = runs
                .iter()
                .filter(|r| r.op == op && r.scores.is_some_and(|s| s.psnr >= target))
                .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
                .map(|r| (r, base.seconds / r.seconds.max(1e-9)));
            Some((op.to_string(), base, best))
        })
        .collect()
}

/// The NFE figure: for each operator a PSNR panel and an LPIPS panel against steps (log axis),
/// one line per method; saved as PNG at `path`.
pub fn plot(runs: &[NfeRun], path: &std::path::Path) -> Result<(), tweedie_io::IoError> {
    let mut ops: Vec<&str> = runs.iter().map(|r| r.op.as_str()).collect();
    ops.dedup();
    let mut methods: Vec<Method> = Vec::new();
    for r in runs {
        if !methods.contains(&r.method) {
            methods.push(r.method);
        }
    }
    let mut panels = Vec::new();
    for op in ops {
        for (metric, label) in [("PSNR", "PSNR (dB)"), ("LPIPS", "LPIPS-Alex")] {
            let series = methods
                .iter()
                .map(|&m| tweedie_io::Series {
                    name: m.to_string(),
                    points: runs
                        .iter()
                        .filter(|r| r.op == op && r.method == m)
                        .map(|r| {
                            let v = r.scores.map_or(f64::NAN, |s| {
                                if metric == "PSNR" { s.psnr } else { s.lpips }
                            });
                            (r.steps as f64, v)
                        })
                        .collect(),
                })
                .collect();
            panels.push(tweedie_io::Panel {
                title: format!("{op}: {metric}"),
                x_label: "reverse steps (NFE)".into(),
                y_label: label.into(),
                log_x: true,
                series,
            });
        }
    }
    tweedie_io::save_panels(&panels, 2, (520, 360), path)
}
