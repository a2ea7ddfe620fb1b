//! The sheet's scale end to end: a random-weight model of the FFHQ-256 architecture (channel
//! multipliers 1,1,2,2,4,4, attention at 16, one res block, learned σ, scale-shift, resblock
//! up/down; 16 base channels instead of 128 so that it fits CI), every method on DPS's own
//! 256-px operators (61×61 Gaussian and motion kernels, a 128² box, ×4 bicubic), a few steps
//! each, and the report at 256 px. It catches size assumptions; the wall time goes to stderr.
//!
//! Three pairs are left out, because their data step is conjugate gradients on a 61×61 blur
//! at 256² (about a minute per solve here): DiffPIR and DDNM with motion blur, and DDNM with
//! the Gaussian blur (its A⁺). DiffPIR's Gaussian-blur and SR proxes are exact and cheap.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tweedie(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tweedie {args:?} failed:\n{text}");
    text
}

/// The FFHQ-256 ADM with `channels` base channels (GroupNorm groups and attention head width
/// = channels, so the narrowest level still has one channel per group), random weights, saved as safetensors with
/// its JSON config.
fn narrow_ffhq(dir: &Path, channels: usize) -> (PathBuf, PathBuf) {
    let mut cfg = tweedie_unet::UNetConfig::ffhq256();
    cfg.num_channels = channels;
    cfg.norm_groups = channels;
    // Every level width must be a multiple of the head width (64 at 128 channels).
    cfg.num_head_channels = channels as i64;
    let net = tweedie_unet::UNet::init(&cfg, 0, &burn::tensor::Device::flex()).unwrap();
    let weights = dir.join("ffhq_narrow.safetensors");
    net.save(&weights).unwrap();
    (weights.clone(), weights.with_extension("json"))
}

#[test]
fn every_method_and_the_report_run_at_256_px() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("tweedie-256-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let faces = dir.join("faces");
    std::fs::create_dir_all(&faces).unwrap();
    std::fs::copy(
        root().join("assets/faces/000444.jpg"),
        faces.join("000444.jpg"),
    )
    .unwrap();
    let (w, c) = narrow_ffhq(&dir, 16);
    let (w, c, f) = (
        w.to_str().unwrap(),
        c.to_str().unwrap(),
        faces.to_str().unwrap(),
    );
    let runs = [
        ("sdedit,ald,dps,diffpir,ddnm", "inpaint-box,sr4"),
        ("sdedit,ald,dps", "gaussian-blur,motion-blur"),
        ("diffpir", "gaussian-blur"),
    ];
    for (k, (methods, ops)) in runs.iter().enumerate() {
        let out = dir.join(format!("eval{k}"));
        let t = Instant::now();
        tweedie(&[
            "eval",
            f,
            "--model",
            w,
            "--config",
            c,
            "--crop",
            "178",
            "--methods",
            methods,
            "--ops",
            ops,
            "--steps",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]);
        eprintln!(
            "256 px eval {methods} × {ops}: {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let shard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("eval_shard_0_of_1.json")).unwrap(),
        )
        .unwrap();
        // DPS's own 256-px settings, unscaled.
        for spec in shard["settings"]["ops"].as_array().unwrap() {
            let s = &spec[1];
            match spec[0].as_str().unwrap() {
                "inpaint-box" => assert_eq!(s["size"], 128, "{s}"),
                "gaussian-blur" | "motion-blur" => assert_eq!(s["size"], 61, "{s}"),
                "sr4" => assert_eq!(s["factor"], 4, "{s}"),
                other => panic!("{other}"),
            }
        }
        let records = shard["records"].as_array().unwrap().len();
        assert_eq!(
            records,
            methods.split(',').count() * ops.split(',').count(),
            "{shard}"
        );
    }
    let report = dir.join("report");
    let t = Instant::now();
    tweedie(&[
        "report",
        "--model",
        w,
        "--config",
        c,
        "--faces",
        f,
        "--crop",
        "178",
        "--n-faces",
        "1",
        "--n-samples",
        "1",
        "--presets",
        "dps",
        "--steps",
        "2",
        "--out",
        report.to_str().unwrap(),
    ]);
    eprintln!("256 px report: {:.1} s", t.elapsed().as_secs_f64());
    let md = std::fs::read_to_string(report.join("README.md")).unwrap();
    assert!(md.contains("256×256"), "{md}");
    let figures = std::fs::read_dir(report.join("figures")).unwrap().count();
    assert!(figures >= 4, "{figures} figures");
    eprintln!(
        "the 256-px test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
