//! `cargo xtask`: builds the release CLI and runs the project's jobs.
//!
//! - `cargo xtask run-all [--full] [--model embedded|ffhq|celebahq|cifar10|church|PATH] [--out DIR]` — the task suite
//!   (Tasks 2–6) on the embedded model, written to `report/`.
//! - `cargo xtask bench [--ffhq]` — UNet forward, DPS-step and training-step timings.
//! - `cargo xtask bench --compare [--python PATH] [--backend cpu,libtorch] [--also LABEL=BIN]
//!   [--rounds N] [--threads N] [--reps N] [--models A,B]` — the same against PyTorch
//!   (`../shared/bench/pytorch_adm.py` + `xtask/torch_dps.py`), alternating, medians, ratio
//!   table; JSON in `target/bench_compare.json` (see docs/backends.md).
//! - `cargo xtask flex-repro` — minimal burn-flex reproducers of the CPU bottlenecks
//!   (docs/backends.md); `xtask/flex_repro_torch.py` times the same ops in PyTorch.
//! - `cargo xtask fetch-weights ffhq|celebahq|cifar10|church|lpips-vgg [--url URL]` — download
//!   from the Hugging Face Hub into its cache (`HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`,
//!   `HF_HUB_OFFLINE`, `HF_TOKEN`), resumable and verified, and print the local path (see
//!   `fetch` and docs/fetch.md); `--url` / `TWEEDIE_FFHQ_URL`: a direct link instead.

mod compare;
mod fetch;
mod flex_repro;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The main target folder: `$CARGO_TARGET_DIR` or the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn build_cli(features: &[String]) -> Result<PathBuf> {
    build_cli_in(features, &target_dir(), &[])
}

/// Builds the release CLI with `features` into `target_dir`, with extra environment.
fn build_cli_in(
    features: &[String],
    target_dir: &Path,
    env: &[(String, String)],
) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root())
        .args(["build", "--release", "-p", "tweedie-cli"])
        .env("CARGO_TARGET_DIR", target_dir)
        .envs(env.iter().map(|(k, v)| (k, v)));
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    eprintln!(
        "xtask: building the release CLI{} (first build takes a few minutes)…",
        if features.is_empty() {
            String::new()
        } else {
            format!(" with {}", features.join(","))
        }
    );
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!(
            "cargo build --release -p tweedie-cli{} failed",
            if features.is_empty() {
                String::new()
            } else {
                format!(" --features {}", features.join(","))
            }
        );
    }
    Ok(target_dir.join("release/tweedie"))
}

fn run(bin: &Path, args: &[String]) -> Result<()> {
    let status = Command::new(bin)
        .current_dir(root())
        .args(args)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("{} {} failed", bin.display(), args.join(" "));
    }
    Ok(())
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let n = args.len();
    args.retain(|a| a != flag);
    args.len() != n
}

fn take_value(args: &mut Vec<String>, flag: &str) -> Option<String> {
    let i = args.iter().position(|a| a == flag)?;
    let v = args.get(i + 1).cloned();
    args.drain(i..(i + 2).min(args.len()));
    v
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        bail!(
            "usage: cargo xtask <run-all [--full] [--model embedded|ffhq|celebahq|cifar10|church|PATH] [--out DIR] | bench [--ffhq] | bench --compare [--python PATH] [--backend cpu,libtorch] [--also LABEL=BIN] [--rounds N] [--threads N] [--reps N] [--models A,B] | flex-repro | fetch-weights ffhq|celebahq|cifar10|church|lpips-vgg [--url URL]>"
        );
    }
    let cmd = args.remove(0);
    match cmd.as_str() {
        "run-all" => {
            let full = take_flag(&mut args, "--full");
            let model = take_value(&mut args, "--model").unwrap_or_else(|| "embedded".into());
            let out = take_value(&mut args, "--out").unwrap_or_else(|| "report".into());
            let wgpu = take_flag(&mut args, "--wgpu");
            let features = if wgpu {
                vec!["wgpu".to_string()]
            } else {
                vec![]
            };
            let mut report: Vec<String> = vec!["report".into(), "--out".into(), out];
            let (model_args, about) = run_all_model(&model)?;
            report.extend(model_args);
            // Default: 250 strided steps (fits the 15-minute CPU budget); --full: the sheet's 1000.
            let steps = if full { "1000" } else { "250" };
            report.extend(["--steps", steps].map(String::from));
            if wgpu {
                report.extend(["--backend", "wgpu"].map(String::from));
            }
            // LPIPS-VGG beside AlexNet where its weights are at hand (../shared, or the cache
            // `cargo xtask fetch-weights lpips-vgg` fills).
            let vgg = Some(root().join("../shared/weights/lpips_vgg16.safetensors"))
                .filter(|p| p.exists())
                .or_else(|| fetch::local_model("lpips-vgg"));
            if let Some(vgg) = vgg {
                report.extend(["--lpips-vgg".to_string(), vgg.display().to_string()]);
            }
            // Quality against steps (DPS, DiffPIR, DDNM on box inpainting and Gaussian
            // deblurring, 4 faces): 20 and 100 steps by default (≈ 3 min), 20–1000 with --full.
            // Same model, faces and strengths as the report, which shows its table and plot.
            let nfe_out = format!("{}/nfe", report[2]);
            let mut nfe: Vec<String> = vec![
                "nfe".into(),
                "--out".into(),
                nfe_out.clone(),
                "--n-faces".into(),
                "4".into(),
                "--nfe-steps".into(),
                if full { "20,50,100,250,1000" } else { "20,100" }.into(),
            ];
            let mut rest = report[3..].iter();
            while let Some(a) = rest.next() {
                if a == "--lpips-vgg" {
                    rest.next();
                } else {
                    nfe.push(a.clone());
                }
            }
            report.extend(["--nfe".to_string(), nfe_out]);
            if let Some(about) = about {
                report.extend(["--model-about".to_string(), about.to_string()]);
            }
            report.extend(args);
            let bin = build_cli(&features)?;
            run(&bin, &nfe)?;
            run(&bin, &report)
        }
        "bench" if take_flag(&mut args, "--compare") => bench_compare(args),
        "bench" => {
            let bin = build_cli(&[])?;
            let mut b = vec![
                "bench".to_string(),
                "--json".into(),
                "target/bench.json".into(),
            ];
            b.extend(args);
            run(&bin, &b)
        }
        "flex-repro" => {
            flex_repro::run();
            Ok(())
        }
        "fetch-weights" => {
            let url = take_value(&mut args, "--url");
            let what = match args.as_slice() {
                [what] => what.clone(),
                [] => bail!("fetch-weights needs one of {}", fetch::NAMES),
                [_, extra, ..] => bail!("fetch-weights: unexpected argument {extra:?}"),
            };
            let path = fetch::fetch(&what, url.as_deref())?;
            println!("{}", path.display());
            Ok(())
        }
        other => bail!("unknown xtask command {other:?}"),
    }
}

/// The report's model, faces and operator strengths for `run-all --model NAME`, and the
/// model's line (what it is, licence, source) for fetched models.
///
/// - `embedded`: the built-in 32-px ADM on `assets/faces`, with the operator strengths
///   matched to DPS's 256-px difficulty (`docs/calibration_32px.json`);
/// - `ffhq`, `celebahq`, `church` (256 px): FFHQ faces (`../shared/data/ffhq256`, else
///   `assets/faces`) at DPS's own 256-px operator settings;
/// - `cifar10` (32 px): `assets/faces` at the 32-px calibrated strengths;
/// - anything else: a checkpoint path or diffusers folder, on `assets/faces`.
fn run_all_model(model: &str) -> Result<(Vec<String>, Option<&'static str>)> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let calibrated_32 = strings(&[
        "--faces",
        "assets/faces",
        "--crop",
        "140",
        "--calibration",
        "docs/calibration_32px.json",
    ]);
    let faces_256 = || {
        let ffhq = root().join("../shared/data/ffhq256");
        if ffhq.exists() {
            vec!["--faces".to_string(), ffhq.display().to_string()]
        } else {
            strings(&["--faces", "assets/faces", "--crop", "178"])
        }
    };
    if model == "embedded" {
        return Ok((calibrated_32, None));
    }
    let Some(m) = fetch::model(model) else {
        return Ok((
            strings(&["--model", model, "--faces", "assets/faces"]),
            None,
        ));
    };
    let Some(path) = fetch::local_model(model) else {
        let settings = fetch::Settings::from_env();
        bail!(
            "the {model} model is missing: run `cargo xtask fetch-weights {model}` first (or put its files at {})",
            fetch::manual_path(&settings, m).display()
        );
    };
    let mut args = vec!["--model".to_string(), path.display().to_string()];
    if model == "ffhq" {
        let cfg = fetch::write_ffhq_config(&path)?;
        args.extend(["--config".to_string(), cfg.display().to_string()]);
    }
    if model == "cifar10" {
        args.extend(calibrated_32);
    } else {
        args.extend(faces_256());
    }
    Ok((args, Some(m.about)))
}

/// `cargo xtask bench --compare …`: see [`compare`].
fn bench_compare(mut args: Vec<String>) -> Result<()> {
    let number = |v: Option<String>, default: usize, flag: &str| -> Result<usize> {
        v.map_or(Ok(default), |v| {
            v.parse()
                .with_context(|| format!("{flag} expects a number, got {v:?}"))
        })
    };
    let python = take_value(&mut args, "--python");
    let rounds = number(take_value(&mut args, "--rounds"), 3, "--rounds")?.max(1);
    let threads = number(
        take_value(&mut args, "--threads"),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        "--threads",
    )?;
    let reps = number(take_value(&mut args, "--reps"), 3, "--reps")?;
    let list = |v: Option<String>| -> Vec<String> {
        v.map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
    };
    let models = list(take_value(&mut args, "--models"));
    let mut backends = list(take_value(&mut args, "--backend"));
    if backends.is_empty() {
        backends.push("cpu".into());
    }
    let mut also = Vec::new();
    while let Some(v) = take_value(&mut args, "--also") {
        let (label, bin) = v
            .split_once('=')
            .with_context(|| format!("--also expects LABEL=BIN, got {v:?}"))?;
        also.push((label.to_string(), PathBuf::from(bin)));
    }
    let bench_dir = take_value(&mut args, "--bench-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/bench"));
    let tch_target = take_value(&mut args, "--tch-target-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("libtorch"));
    let out = take_value(&mut args, "--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/bench_compare.json"));
    if let Some(a) = args.first() {
        bail!("bench --compare: unexpected argument {a:?}");
    }
    let python = compare::find_python(&root(), python)?;
    let mut variants = Vec::new();
    for backend in &backends {
        match backend.as_str() {
            "cpu" | "flex" => variants.push(compare::Variant {
                label: "flex".into(),
                bin: build_cli(&[])?,
                backend: "cpu".into(),
                env: vec![],
            }),
            "wgpu" => variants.push(compare::Variant {
                label: "wgpu".into(),
                bin: build_cli_in(&["wgpu".into()], &target_dir().join("wgpu"), &[])?,
                backend: "wgpu".into(),
                env: vec![],
            }),
            "libtorch" | "tch" => {
                let py = python.as_ref().context(
                    "--backend libtorch builds against the torch of a Python environment: pass --python PATH (torch 2.9.0) or set TWEEDIE_PYTHON",
                )?;
                let bin_dir = py.exe.parent().unwrap_or(Path::new("."));
                let path = format!(
                    "{}:{}",
                    bin_dir.display(),
                    std::env::var("PATH").unwrap_or_default()
                );
                let mut env = vec![
                    ("LIBTORCH_USE_PYTORCH".to_string(), "1".to_string()),
                    ("PATH".into(), path),
                ];
                // torch-sys runs `python` inside a virtual environment, `python3` outside.
                if bin_dir.join("python").exists()
                    && let Some(venv) = bin_dir.parent()
                {
                    env.push(("VIRTUAL_ENV".into(), venv.display().to_string()));
                }
                let bin = build_cli_in(&["libtorch".into()], &tch_target, &env)?;
                let ld = match std::env::var("LD_LIBRARY_PATH") {
                    Ok(old) if !old.is_empty() => format!("{}:{old}", py.torch_lib.display()),
                    _ => py.torch_lib.display().to_string(),
                };
                variants.push(compare::Variant {
                    label: "libtorch".into(),
                    bin,
                    backend: "libtorch".into(),
                    env: vec![("LD_LIBRARY_PATH".into(), ld)],
                });
            }
            other => bail!("--backend {other:?}: expected cpu, libtorch or wgpu"),
        }
    }
    for (label, bin) in also {
        if !bin.exists() {
            bail!("--also {label}={}: no such binary", bin.display());
        }
        variants.push(compare::Variant {
            label,
            bin,
            backend: "cpu".into(),
            env: vec![],
        });
    }
    compare::compare(compare::Options {
        root: root(),
        python,
        rounds,
        threads,
        reps,
        models,
        bench_dir,
        variants,
        out,
    })
}
