//! `cargo xtask`: builds the release CLI and runs the project's jobs.
//!
//! - `cargo xtask run-all [--full] [--model embedded|ffhq|PATH] [--out DIR]` — the task suite
//!   (Tasks 2–6) on the embedded model, written to `report/`.
//! - `cargo xtask bench [--ffhq]` — UNet forward and training-step timings.
//! - `cargo xtask fetch-weights ffhq|lpips-vgg [--url URL]` — download into the cache.

mod fetch;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn build_cli(features: &[String]) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root())
        .args(["build", "--release", "-p", "tweedie-cli"]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    eprintln!("xtask: building the release CLI (first build takes a few minutes)…");
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p tweedie-cli failed");
    }
    Ok(root().join("target/release/tweedie"))
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
            "usage: cargo xtask <run-all [--full] [--model embedded|ffhq|PATH] [--out DIR] | bench [--ffhq] | fetch-weights ffhq|lpips-vgg [--url URL]>"
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
            match model.as_str() {
                "embedded" => {
                    // Operator strengths matched to DPS's 256-px difficulty for this 32-px
                    // model (made by `tweedie calibrate`, see docs/calibration_32px.json).
                    report.extend(
                        [
                            "--faces",
                            "assets/faces",
                            "--crop",
                            "140",
                            "--calibration",
                            "docs/calibration_32px.json",
                        ]
                        .map(String::from),
                    )
                }
                "ffhq" => {
                    let ckpt = fetch::cache_dir().join("ffhq_10m.pt");
                    if !ckpt.exists() {
                        bail!(
                            "{} is missing: run `cargo xtask fetch-weights ffhq` first (or place the file there)",
                            ckpt.display()
                        );
                    }
                    let cfg = fetch::write_ffhq_config()?;
                    let faces = root().join("../shared/data/ffhq256");
                    let faces = if faces.exists() {
                        faces
                    } else {
                        root().join("assets/faces")
                    };
                    report.extend([
                        "--model".into(),
                        ckpt.display().to_string(),
                        "--config".into(),
                        cfg.display().to_string(),
                        "--faces".into(),
                        faces.display().to_string(),
                    ]);
                }
                path => report.extend([
                    "--model".into(),
                    path.to_string(),
                    "--faces".into(),
                    "assets/faces".into(),
                ]),
            }
            // Default: 250 strided steps (fits the 15-minute CPU budget); --full: the sheet's 1000.
            let steps = if full { "1000" } else { "250" };
            report.extend(["--steps", steps].map(String::from));
            if wgpu {
                report.extend(["--backend", "wgpu"].map(String::from));
            }
            // LPIPS-VGG beside AlexNet where its weights are at hand (../shared, or the cache
            // `cargo xtask fetch-weights lpips-vgg` fills).
            let vgg = [
                root().join("../shared/weights/lpips_vgg16.safetensors"),
                fetch::cache_dir().join("lpips_vgg16.safetensors"),
            ]
            .into_iter()
            .find(|p| p.exists());
            if let Some(vgg) = vgg {
                report.extend(["--lpips-vgg".to_string(), vgg.display().to_string()]);
            }
            report.extend(args);
            let bin = build_cli(&features)?;
            run(&bin, &report)
        }
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
        "fetch-weights" => {
            let what = args
                .first()
                .cloned()
                .context("fetch-weights needs ffhq or lpips-vgg")?;
            let url = take_value(&mut args, "--url");
            let path = match what.as_str() {
                "ffhq" => fetch::fetch_ffhq(url.as_deref())?,
                "lpips-vgg" => fetch::fetch_lpips_vgg(url.as_deref())?,
                other => bail!("unknown weights {other:?}: expected ffhq or lpips-vgg"),
            };
            println!("{}", path.display());
            Ok(())
        }
        other => bail!("unknown xtask command {other:?}"),
    }
}
