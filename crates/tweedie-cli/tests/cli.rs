//! End-to-end tests of every `tweedie` subcommand on the tiny ADM fixture (random weights:
//! these check plumbing, files and errors, not image quality).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tweedie-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tweedie(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = tweedie(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tweedie {args:?} failed:\n{text}");
    text
}

/// Runs a command that must fail with a one-line error containing `needle`.
fn fails(args: &[&str], needle: &str) {
    let out = tweedie(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "tweedie {args:?} should fail");
    assert!(
        err.contains(needle),
        "tweedie {args:?}: expected {needle:?} in:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

const MODEL: [&str; 4] = [
    "--model",
    "tests/fixtures/adm/model.safetensors",
    "--config",
    "tests/fixtures/adm/config.json",
];
const FACE: &str = "assets/faces/000444.jpg";

fn with_model<'a>(mut v: Vec<&'a str>, out: &'a str) -> Vec<&'a str> {
    v.extend(MODEL);
    v.extend(["--out", out]);
    v
}

#[test]
fn generate_writes_samples_and_grid() {
    let out = tmp("gen");
    let o = out.to_str().unwrap();
    ok(&with_model(
        vec!["generate", "--n", "2", "--steps", "3", "--seed", "1"],
        o,
    ));
    assert!(
        out.join("sample_000.png").exists()
            && out.join("sample_001.png").exists()
            && out.join("grid.png").exists()
    );
    // Without the x̂0 clamp the chain differs (the fixture's random network leaves [−1, 1]).
    let raw = tmp("gen-noclip");
    ok(&with_model(
        vec![
            "generate",
            "--n",
            "2",
            "--steps",
            "3",
            "--seed",
            "1",
            "--no-clip",
        ],
        raw.to_str().unwrap(),
    ));
    assert_ne!(
        std::fs::read(out.join("sample_000.png")).unwrap(),
        std::fs::read(raw.join("sample_000.png")).unwrap()
    );
    // Each run records its settings.
    for (dir, clip) in [(&out, true), (&raw, false)] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("generate.json")).unwrap()).unwrap();
        assert_eq!(
            (
                v["clip_x0"].as_bool(),
                v["steps"].as_u64(),
                v["seed"].as_u64()
            ),
            (Some(clip), Some(3), Some(1)),
            "{v}"
        );
        // Spelled as every other run's JSON spells it (StepVariance's serde name).
        assert_eq!(v["variance"], "beta", "{v}");
    }
}

#[test]
fn denoise_writes_images_and_metrics() {
    let out = tmp("den");
    let o = out.to_str().unwrap();
    ok(&with_model(vec!["denoise", FACE, "--t", "30,300"], o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("denoise_metrics.json")).unwrap())
            .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert!(out.join("denoise_grid.png").exists() && out.join("000444_t30_denoised.png").exists());
}

#[test]
fn restore_runs_every_method() {
    for (method, op) in [
        ("dps", "inpaint-box"),
        ("ald", "gaussian-blur"),
        ("sdedit", "sr4"),
        ("diffpir", "gaussian-blur"),
        ("ddnm", "sr4"),
    ] {
        let out = tmp(&format!("restore-{method}"));
        let o = out.to_str().unwrap();
        let text = ok(&with_model(
            vec![
                "restore", FACE, "--method", method, "--op", op, "--steps", "3", "--t0", "100",
            ],
            o,
        ));
        assert!(text.contains("PSNR"), "{text}");
        assert!(out.join(format!("{method}_metrics.json")).exists());
        assert!(out.join(format!("{method}_grid.png")).exists());
    }
}

/// `tweedie nfe` runs every method at every chain length and writes the table, the plot and
/// the JSON; a method it does not know is refused by clap.
#[test]
fn nfe_sweeps_methods_and_steps() {
    let out = tmp("nfe");
    let o = out.to_str().unwrap();
    let text = ok(&with_model(
        vec![
            "nfe",
            "--faces",
            "assets/faces",
            "--n-faces",
            "2",
            "--ops",
            "inpaint-box",
            "--methods",
            "dps,diffpir,ddnm",
            "--nfe-steps",
            "2,3",
        ],
        o,
    ));
    assert!(text.contains("| inpaint-box | DDNM |"), "{text}");
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("nfe.json")).unwrap()).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 6);
    assert_eq!(runs[5]["method"], "ddnm");
    assert_eq!(runs[5]["steps"], 3);
    assert_eq!(runs[5]["settings"]["solver"]["method"], "ddnm");
    assert!(out.join("nfe.png").exists() && out.join("nfe.md").exists());
    // --merge combines earlier runs without sweeping again.
    let merged = tmp("nfe-merged");
    let json = out.join("nfe.json");
    ok(&[
        "nfe",
        "--merge",
        json.to_str().unwrap(),
        json.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("nfe.json")).unwrap()).unwrap();
    assert_eq!(m.as_array().unwrap().len(), 12);
    fails(
        &with_model(vec!["nfe", "--methods", "ddpm"], o),
        "invalid value 'ddpm'",
    );
}

/// The run's JSON records every setting of the preset, and the kernel a run used is saved
/// beside its results and can be given back with `--kernel`.
#[test]
fn restore_records_its_settings_and_saves_the_kernel() {
    let out = tmp("restore-settings");
    let o = out.to_str().unwrap();
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["restore", FACE, "--method", "dps", "--steps", "3"];
        args.extend(extra);
        ok(&with_model(args, o));
        let text = std::fs::read_to_string(out.join("dps_metrics.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["results"][0].clone()
    };
    // The DPS preset on a learned-sigma model: learned variance, residual rule, ζ = 0.3 (blur).
    let r = run(&["--op", "motion-blur"]);
    let s = &r["settings"];
    assert_eq!(s["preset"], "dps", "{r}");
    assert_eq!(s["variance"], "learned", "{r}");
    assert_eq!(s["solver"]["step"]["kind"], "residual", "{r}");
    assert_eq!(s["solver"]["step"]["zeta"], 0.3, "{r}");
    assert_eq!(s["clip_x0"], true, "{r}");
    let kernel = out.join("000444_kernel.npy");
    assert!(
        kernel.exists() && out.join("000444_kernel.png").exists(),
        "{r}"
    );
    // Inpainting gets the DPS configs' 0.5; the mask is saved.
    let r = run(&["--op", "inpaint-random-range"]);
    assert_eq!(r["settings"]["solver"]["step"]["zeta"], 0.5, "{r}");
    assert!(out.join("000444_mask.png").exists());
    // The sheet preset: σ² = β and ζ_t = ζ/‖∇‖ with ζ = 1; single overrides apply on top.
    let r = run(&["--op", "gaussian-blur", "--preset", "sheet"]);
    assert_eq!(r["settings"]["variance"], "beta", "{r}");
    assert_eq!(r["settings"]["solver"]["step"]["kind"], "normalized", "{r}");
    assert_eq!(r["settings"]["solver"]["step"]["zeta"], 1.0, "{r}");
    let r = run(&[
        "--op",
        "gaussian-blur",
        "--preset",
        "sheet",
        "--zeta",
        "2",
        "--variance",
        "posterior",
    ]);
    assert_eq!(r["settings"]["solver"]["step"]["zeta"], 2.0, "{r}");
    assert_eq!(r["settings"]["variance"], "posterior", "{r}");
    // The saved kernel drives a new run.
    let k = kernel.to_str().unwrap().to_string();
    let r = run(&["--op", "motion-blur", "--kernel", &k]);
    assert_eq!(r["settings"]["op"]["op"], "kernel-blur", "{r}");
}

/// `tweedie parity-dps` replays a DPS fixture folder and prints each case's errors.
#[test]
fn parity_dps_prints_the_errors() {
    let dir = tmp("parity-dps");
    for ext in ["json", "safetensors"] {
        std::fs::copy(
            root().join(format!("tests/fixtures/dps/dps_none.{ext}")),
            dir.join(format!("dps_none.{ext}")),
        )
        .unwrap();
    }
    let text = ok(&["parity-dps", "tests/fixtures/adm", dir.to_str().unwrap()]);
    assert!(
        text.contains("model.safetensors:") && text.contains("model.pt:") && text.contains("none"),
        "{text}"
    );
    fails(
        &["parity-dps", "tests/fixtures/adm", "tests/fixtures/adm"],
        "no dps_*.json fixtures",
    );
    fails(
        &[
            "parity-dps",
            "tests/fixtures/adm",
            dir.to_str().unwrap(),
            "--tolerance",
            "1e-12",
        ],
        "exceed --tolerance",
    );
}

#[test]
fn metrics_on_files_and_folders() {
    let text = ok(&["metrics", FACE, FACE]);
    assert!(text.contains("PSNR inf"), "{text}");
    let out = tmp("metrics");
    let (a, b) = (out.join("a"), out.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    for f in ["000444.jpg", "000719.jpg"] {
        std::fs::copy(root().join("assets/faces").join(f), a.join(f)).unwrap();
        std::fs::copy(root().join("assets/faces").join(f), b.join(f)).unwrap();
    }
    ok(&[
        "metrics",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}"); // header, 2 images, mean
}

#[test]
fn parity_prints_the_error() {
    let text = ok(&["parity", "tests/fixtures/adm"]);
    assert!(
        text.contains("model.safetensors: max abs error") && text.contains("model.pt"),
        "{text}"
    );
}

#[test]
fn train_evaluate_and_report_run_end_to_end() {
    let out = tmp("train");
    let data = out.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["000444.jpg", "000719.jpg", "000878.jpg"] {
        std::fs::copy(root().join("assets/faces").join(f), data.join(f)).unwrap();
    }
    let run = out.join("run");
    let text = ok(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--size",
        "16",
        "--channels",
        "32",
        "--mult",
        "1,1",
        "--attention",
        "8",
        "--batch",
        "2",
        "--steps",
        "2",
        "--checkpoint-every",
        "1",
        "--log-every",
        "1",
    ]);
    assert!(text.contains("trained 2 steps"), "{text}");
    // Output goes to a pipe here, so the plain progress lines replace the bar.
    assert!(
        text.contains("step 1/2  loss") && text.contains("step 2/2  loss"),
        "{text}"
    );
    let model = run.join("model.safetensors");
    let m = model.to_str().unwrap();
    let eval_out = out.join("eval");
    let (d, o) = (data.to_str().unwrap(), eval_out.to_str().unwrap());
    // Runs evaluate with `extra` arguments and returns its evaluation.json.
    let evaluate = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "evaluate", "--model", m, "--val", d, "--train", d, "--t", "30",
        ];
        args.extend(extra);
        args.extend(["--out", o]);
        ok(&args);
        serde_json::from_slice(&std::fs::read(eval_out.join("evaluation.json")).unwrap()).unwrap()
    };
    let ev = evaluate(&["--sample-steps", "2"]);
    assert!(eval_out.join("samples_8x8.png").exists());
    // The colour calibration of x̂0, one row per default --colour-t.
    let cal = ev["colour_calibration"].as_array().unwrap();
    assert_eq!(cal.len(), 5, "{ev}");
    assert_eq!(cal[0]["t"], 100);
    assert!(cal[0]["slope"].as_f64().unwrap().is_finite(), "{ev}");
    assert_eq!(cal[4]["true_std_rgb"].as_array().unwrap().len(), 3, "{ev}");
    // The flag without values skips it.
    let ev = evaluate(&["--colour-t", "--sample-steps", "0"]);
    assert!(ev.get("colour_calibration").is_none(), "{ev}");
    // fit-mean writes the config with the mean correction, which the other commands take.
    let fit = out.join("fit");
    let f = fit.to_str().unwrap();
    let text = ok(&[
        "fit-mean", "--model", m, "--data", d, "--n", "0", "--t", "500,900", "--out", f,
    ]);
    assert!(text.contains("t=900: slope"), "{text}");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fit.join("model.json")).unwrap()).unwrap();
    let table = &cfg["mean_correction"];
    assert_eq!(table["t"], serde_json::json!([500, 900]), "{cfg}");
    assert_eq!(table["slope"][1].as_array().unwrap().len(), 3, "{cfg}");
    assert_eq!(table["images"], 3, "{cfg}");
    let fitted = fit.join("model.json");
    let uncorrected = cal[4]["slope"].as_f64().unwrap();
    let ev = evaluate(&["--config", fitted.to_str().unwrap(), "--sample-steps", "0"]);
    let corrected = ev["colour_calibration"][4]["slope"].as_f64().unwrap();
    // The fitted table is used: x̂0's mean at t = 900 (a fitted t) moves.
    assert!(
        corrected.is_finite() && (corrected - uncorrected).abs() > 1e-6,
        "t=900 slope {corrected} with the correction, {uncorrected} without: {ev}"
    );
    // The chain fit keeps that table's slopes and refits its intercepts on sampler chains.
    let chained = out.join("chained");
    let (fc, cf) = (fitted.to_str().unwrap(), chained.to_str().unwrap());
    let text = ok(&[
        "fit-mean",
        "--model",
        m,
        "--config",
        fc,
        "--data",
        d,
        "--n",
        "0",
        "--keep-fit",
        "--chains",
        "4",
        "--chain-steps",
        "3",
        "--batch",
        "3",
        "--chain-variance",
        "--out",
        cf,
    ]);
    assert!(
        text.contains("keeping the config's correction (2 timesteps)")
            && text.contains("chain fit: 4 chains, 3 steps"),
        "{text}"
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(chained.join("model.json")).unwrap()).unwrap();
    let table = &cfg["mean_correction"];
    let chain = &table["chain"];
    assert_eq!(table["t"].as_array().unwrap().len(), 3, "{cfg}");
    assert_eq!(
        (chain["chains"].as_u64(), chain["steps"].as_u64()),
        (Some(4), Some(3)),
        "{cfg}"
    );
    assert_eq!(chain["clip"], true, "{cfg}");
    assert_eq!(chain["seed"], 1u64 << 32, "{cfg}");
    assert_eq!(chain["shift"].as_array().unwrap().len(), 3, "{cfg}");
    // --chain-variance: the spread's scale per step, from the lines' posterior variances.
    assert_eq!(chain["scale"].as_array().unwrap().len(), 3, "{cfg}");
    assert_eq!(
        table["posterior_variance"].as_array().unwrap().len(),
        3,
        "{cfg}"
    );
    assert!(text.contains("(scale "), "{text}");
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(chained.join("mean_correction.json")).unwrap())
            .unwrap();
    assert_eq!(settings["t"], serde_json::json!([500, 900]), "{settings}");
    assert_eq!(settings["chain_fit"]["kept_fit"], true, "{settings}");
    // t = 1000 lies beyond the fitted 900, where the slopes are held: the kept table's,
    // times the spread's scale k there.
    let kept = cfg_slope_900(&fitted);
    for c in 0..3 {
        let (b, k) = (
            kept[c].as_f64().unwrap(),
            chain["scale"][2][c].as_f64().unwrap(),
        );
        let refit = table["slope"][2][c].as_f64().unwrap();
        assert!(
            (refit - k * b).abs() <= 1e-9 * (1.0 + (k * b).abs()),
            "{cfg}"
        );
    }
    // The refitted config drives the samplers.
    ok(&[
        "generate",
        "--model",
        m,
        "--config",
        chained.join("model.json").to_str().unwrap(),
        "--n",
        "2",
        "--steps",
        "3",
        "--out",
        cf,
    ]);
    // The last-step calibration on fresh chains: only t = 1's intercept moves, by the
    // recorded shift, and the lines stay the chain fit's.
    let last = out.join("last");
    let lf = last.to_str().unwrap();
    let chained_cfg = chained.join("model.json");
    let text = ok(&[
        "fit-mean",
        "--model",
        m,
        "--config",
        chained_cfg.to_str().unwrap(),
        "--data",
        d,
        "--n",
        "0",
        "--keep-fit",
        "--last-step-chains",
        "4",
        "--chain-steps",
        "3",
        "--batch",
        "3",
        "--out",
        lf,
    ]);
    assert!(
        text.contains("last-step calibration: 4 fresh chains, 3 steps"),
        "{text}"
    );
    let calibrated: serde_json::Value =
        serde_json::from_slice(&std::fs::read(last.join("model.json")).unwrap()).unwrap();
    let (before, after) = (&cfg["mean_correction"], &calibrated["mean_correction"]);
    for key in ["t", "slope", "intercept", "chain"] {
        assert_eq!(before[key], after[key], "{key}: {calibrated}");
    }
    let record = &after["last_step"];
    assert_eq!(
        (record["chains"].as_u64(), record["steps"].as_u64()),
        (Some(4), Some(3)),
        "{calibrated}"
    );
    assert_eq!(record["seed"], 1u64 << 33, "{calibrated}");
    assert_eq!(record["shift"].as_array().unwrap().len(), 3, "{calibrated}");
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(last.join("mean_correction.json")).unwrap()).unwrap();
    assert_eq!(settings["last_step_calibration"]["chains"], 4, "{settings}");
    assert!(settings["chain_fit"].is_null(), "{settings}");
    fails(
        &[
            "fit-mean",
            "--model",
            m,
            "--data",
            d,
            "--last-step-chains",
            "2",
            "--chain-steps",
            "1",
            "--out",
            lf,
        ],
        "--chain-steps ≥ 2",
    );
    fails(
        &[
            "fit-mean",
            "--model",
            m,
            "--data",
            d,
            "--keep-fit",
            "--out",
            cf,
        ],
        "--keep-fit works on chains",
    );
    fails(
        &[
            "fit-mean",
            "--model",
            m,
            "--data",
            d,
            "--keep-fit",
            "--chains",
            "2",
            "--out",
            cf,
        ],
        "no mean correction to keep",
    );
    fails(
        &[
            "fit-mean",
            "--model",
            m,
            "--data",
            d,
            "--chain-variance",
            "--out",
            cf,
        ],
        "--chain-variance works on chains",
    );
    fails(
        &[
            "fit-mean",
            "--model",
            m,
            "--data",
            d,
            "--chains",
            "2",
            "--chain-steps",
            "0",
            "--out",
            cf,
        ],
        "--chain-steps",
    );
    fails(
        &[
            "fit-mean", "--model", m, "--data", d, "--t", "900,500", "--out", f,
        ],
        "increasing",
    );
    fails(
        &[
            "fit-mean", "--model", m, "--data", d, "--t", "1001", "--out", f,
        ],
        "--t 1001",
    );
    let rep = out.join("report");
    ok(&[
        "report",
        "--model",
        m,
        "--faces",
        data.to_str().unwrap(),
        "--n-faces",
        "2",
        "--steps",
        "2",
        "--n-samples",
        "2",
        "--out",
        rep.to_str().unwrap(),
    ]);
    let md = std::fs::read_to_string(rep.join("README.md")).unwrap();
    assert!(
        md.contains("Task 2")
            && md.contains("Tasks 4–6")
            && md.contains("measurement only")
            && md.contains("All restorations"),
        "{md}"
    );
    assert!(
        md.contains("DPS (preset dps)") && md.contains("DPS (preset sheet)"),
        "{md}"
    );
    assert!(
        rep.join("metrics.json").exists() && rep.join("figures/restore_inpaint-box.png").exists()
    );
}

/// The slopes at t = 900 of the `mean_correction` in the config at `path`.
fn cfg_slope_900(path: &std::path::Path) -> serde_json::Value {
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let table = &cfg["mean_correction"];
    let i = table["t"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t == 900)
        .unwrap();
    table["slope"][i].clone()
}

#[test]
fn bad_inputs_give_clear_errors() {
    let out = tmp("bad");
    let o = out.to_str().unwrap();
    fails(
        &with_model(vec!["denoise", "no/such/file.png"], o),
        "does not exist",
    );
    fails(&with_model(vec!["denoise", FACE, "--t", "0"], o), "--t 0");
    fails(
        &with_model(vec!["denoise", FACE, "--t", "5000"], o),
        "--t 5000",
    );
    fails(
        &with_model(vec!["restore", FACE, "--op", "blur-everything"], o),
        "invalid value 'blur-everything' for '--op",
    );
    fails(
        &with_model(vec!["restore", FACE, "--method", "magic"], o),
        "invalid value 'magic' for '--method",
    );
    fails(
        &with_model(
            vec!["restore", FACE, "--op", "inpaint-box", "--blur-sigma", "2"],
            o,
        ),
        "--blur-sigma does not apply to --op inpaint-box",
    );
    fails(
        &with_model(vec!["restore", FACE, "--preset", "paper"], o),
        "invalid value 'paper' for '--preset",
    );
    fails(
        &with_model(vec!["restore", FACE, "--zeta=-1"], o),
        "--zeta must be finite and ≥ 0",
    );
    // A mask whose size differs from the model resolution (32×32).
    let mask = out.join("mask.png");
    image::RgbImage::from_pixel(20, 20, image::Rgb([255, 255, 255]))
        .save(&mask)
        .unwrap();
    fails(
        &with_model(
            vec![
                "restore",
                FACE,
                "--op",
                "inpaint-mask",
                "--mask",
                mask.to_str().unwrap(),
                "--steps",
                "2",
            ],
            o,
        ),
        "20×20",
    );
    fails(
        &with_model(vec!["restore", FACE, "--steps", "0"], o),
        "--steps",
    );
    fails(
        &["generate", "--model", "missing.safetensors", "--out", o],
        "does not exist",
    );
    // A corrupt image and a mismatched metrics pair.
    let bad = out.join("bad.png");
    std::fs::write(&bad, b"not an image").unwrap();
    fails(
        &with_model(vec!["denoise", bad.to_str().unwrap()], o),
        "cannot decode",
    );
    let small = out.join("small.png");
    image::RgbImage::new(8, 8).save(&small).unwrap();
    fails(
        &["metrics", FACE, small.to_str().unwrap()],
        "sizes must match",
    );
    // A checkpoint that does not fit the config lists keys.
    fails(
        &[
            "generate",
            "--model",
            "tests/fixtures/adm/model.safetensors",
            "--config",
            "assets/../tests/fixtures/adm/ffhq_10m_keys.txt",
            "--out",
            o,
        ],
        "config",
    );
    fails(&["bench", "--only", "everything"], "unknown bench part");
    fails(&["bench", "--backend", "tpu"], "unknown backend");
}

#[test]
fn eval_shards_merge_into_the_same_table_as_one_job() {
    let out = tmp("eval");
    let data = out.join("faces");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["000444.jpg", "000719.jpg", "000878.jpg"] {
        std::fs::copy(root().join("assets/faces").join(f), data.join(f)).unwrap();
    }
    let d = data.to_str().unwrap();
    let args = |shard: &'static str, dir: &str| -> Vec<String> {
        let mut v: Vec<String> = [
            "eval",
            d,
            "--methods",
            "dps,sdedit",
            "--ops",
            "inpaint-box",
            "--steps",
            "2",
            "--t0",
            "50",
            "--shard",
            shard,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(MODEL.iter().map(|s| s.to_string()));
        v.extend(["--out".to_string(), dir.to_string()]);
        v
    };
    let whole = out.join("whole");
    let sharded = out.join("sharded");
    let run = |v: Vec<String>| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    run(args("0/1", whole.to_str().unwrap()));
    run(args("0/2", sharded.to_str().unwrap()));
    // One shard alone cannot be merged.
    fails(
        &[
            "merge",
            sharded.to_str().unwrap(),
            "--out",
            sharded.to_str().unwrap(),
        ],
        "missing",
    );
    run(args("1/2", sharded.to_str().unwrap()));
    ok(&[
        "merge",
        sharded.to_str().unwrap(),
        "--out",
        sharded.to_str().unwrap(),
    ]);
    let a = std::fs::read_to_string(whole.join("metrics.csv")).unwrap();
    let b = std::fs::read_to_string(sharded.join("metrics.csv")).unwrap();
    assert_eq!(a, b, "sharding changed the results");
    assert_eq!(a.lines().count(), 3, "{a}"); // header + 2 method×operator rows
    assert!(whole.join("metrics.md").exists() && whole.join("dps_inpaint-box/000719.png").exists());
    fails(
        &["eval", d, "--shard", "2/2", "--out", out.to_str().unwrap()],
        "0 ≤ i < n",
    );
}

/// The ADM fixture reproduces the reference output on `backend` within `tolerance`, and the
/// same seed gives the same samples on it as on the CPU backend (noise is drawn on the
/// host), within 2/255.
#[cfg(any(feature = "wgpu", feature = "libtorch"))]
fn backend_matches_the_reference_and_the_cpu_backend(backend: &str, tolerance: f32) {
    let text = ok(&["parity", "tests/fixtures/adm", "--backend", backend]);
    let errors: Vec<f32> = text
        .lines()
        .filter(|l| l.contains("max abs error"))
        .map(|l| l.split_whitespace().nth(4).unwrap().parse().unwrap())
        .collect();
    eprintln!("{backend} parity: {errors:?}");
    assert_eq!(errors.len(), 2, "{text}");
    assert!(errors.iter().all(|&e| e <= tolerance), "{text}");

    let (cpu, other) = (
        tmp(&format!("gen-cpu-{backend}")),
        tmp(&format!("gen-{backend}")),
    );
    for (dir, b) in [(&cpu, "cpu"), (&other, backend)] {
        let mut args = vec!["generate", "--n", "2", "--steps", "5", "--seed", "3"];
        args.extend(["--backend", b]);
        ok(&with_model(args, dir.to_str().unwrap()));
    }
    for name in ["sample_000.png", "sample_001.png"] {
        let a = image::open(cpu.join(name)).unwrap().to_rgb8();
        let b = image::open(other.join(name)).unwrap().to_rgb8();
        let worst = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(
            worst <= 2,
            "{name}: cpu and {backend} differ by {worst}/255"
        );
    }
}

/// Only in builds with the GPU path (`cargo test -p tweedie-cli --features wgpu`; on a
/// machine without a GPU, Mesa's lavapipe provides the Vulkan adapter).
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_backend_matches_the_reference_and_the_cpu_backend() {
    backend_matches_the_reference_and_the_cpu_backend("wgpu", 1e-4);
}

/// Only in builds with LibTorch (`--features libtorch`, see docs/backends.md): the UNet
/// fixture within 1e-5 (as flex), the same seeded samples as flex, and the DPS replay of
/// the official code's recorded runs (every one-step error within its tolerance, checked by
/// `parity-dps` itself).
#[cfg(feature = "libtorch")]
#[test]
fn libtorch_backend_matches_the_reference_and_the_cpu_backend() {
    backend_matches_the_reference_and_the_cpu_backend("libtorch", 1e-5);
    // Gate: 1e-4 per step, 1e-3 for the first two (as `tweedie`'s dps_parity test).
    let text = ok(&[
        "parity-dps",
        "tests/fixtures/adm",
        "tests/fixtures/dps",
        "--backend",
        "libtorch",
    ]);
    assert!(text.contains("all one-step errors within"), "{text}");
    eprintln!("{text}");
}

/// A folder of three faces (178×218) for the training tests below.
fn train_data(out: &Path) -> PathBuf {
    let data = out.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["000444.jpg", "000719.jpg", "000878.jpg"] {
        std::fs::copy(root().join("assets/faces").join(f), data.join(f)).unwrap();
    }
    data
}

/// `tweedie train` on `data` into `run` with a tiny network, plus `extra` flags.
fn train_args<'a>(data: &'a str, run: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--data",
        data,
        "--out",
        run,
        "--size",
        "16",
        "--channels",
        "32",
        "--mult",
        "1,1",
        "--attention",
        "8",
        "--batch",
        "2",
        "--checkpoint-every",
        "1",
    ];
    v.extend(extra);
    v
}

/// A second `train` into the same folder is refused unless `--resume` or `--force` says
/// what to do; `--force` starts over with one loss-log header; `--resume` recovers the
/// checkpoint an interrupted swap left in `checkpoint.tmp` and says so; a repeated flag's
/// last value wins.
#[test]
fn train_refuses_a_rerun_and_resumes_after_an_interrupted_save() {
    let out = tmp("train-rerun");
    let data = train_data(&out);
    let run = out.join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&train_args(d, r, &["--steps", "1"]));
    fails(&train_args(d, r, &["--steps", "2"]), r);
    fails(&train_args(d, r, &["--steps", "2"]), "--resume");
    fails(&train_args(d, r, &["--steps", "2"]), "--force");
    ok(&train_args(d, r, &["--steps", "2", "--force"]));
    let log = std::fs::read_to_string(run.join("loss.csv")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert_eq!(log.matches("step,loss").count(), 1, "{log}");
    // Killed between `checkpoint → checkpoint.old` and `checkpoint.tmp → checkpoint`.
    std::fs::rename(run.join("checkpoint"), run.join("checkpoint.tmp")).unwrap();
    let text = ok(&train_args(d, r, &["--steps", "3", "--resume"]));
    assert!(
        text.contains("recovered the checkpoint of step 2") && text.contains("checkpoint.tmp"),
        "{text}"
    );
    assert!(text.contains("trained 3 steps (1 this run"), "{text}");
    let log = std::fs::read_to_string(run.join("loss.csv")).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    // A repeated flag takes its last value, so `train.sh --resume --steps N` overrides the
    // script's own `--steps`.
    let text = ok(&train_args(
        d,
        r,
        &["--steps", "9", "--resume", "--steps", "4"],
    ));
    assert!(text.contains("trained 4 steps (1 this run"), "{text}");
}

/// `--crop 0` (an all-black ground truth before), a crop larger than the images, and a
/// gradient clip that is NaN or negative (clipping silently off before) are errors.
#[test]
fn train_and_evaluate_reject_bad_crops_and_grad_clips() {
    let out = tmp("train-crop");
    let data = train_data(&out);
    let run = out.join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    fails(
        &train_args(d, r, &["--steps", "1", "--crop", "0"]),
        "--crop must be ≥ 1",
    );
    fails(
        &train_args(d, r, &["--steps", "1", "--crop", "500"]),
        "invalid crop = 500: must fit inside the image (178×218)",
    );
    fails(
        &train_args(d, r, &["--steps", "1", "--grad-clip", "nan"]),
        "--grad-clip must be finite and ≥ 0",
    );
    fails(
        &train_args(d, r, &["--steps", "1", "--grad-clip=-1"]),
        "--grad-clip must be finite and ≥ 0",
    );
    assert!(!run.join("loss.csv").exists());
    let o = out.join("eval");
    let evaluate = |crop: &'static str| -> Vec<String> {
        let mut v: Vec<String> = ["evaluate", "--val", d, "--train", d, "--crop", crop]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(MODEL.iter().map(|s| s.to_string()));
        v.extend(["--out".into(), o.to_str().unwrap().into()]);
        v
    };
    let args = evaluate("0");
    fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "--crop must be ≥ 1",
    );
    let args = evaluate("500");
    fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "invalid crop = 500: must fit inside the image (178×218)",
    );
}

/// Reverse steps beyond T = 1000 (silently capped before) or 0 are refused as in `restore`.
#[test]
fn generate_and_evaluate_reject_steps_outside_1_to_t() {
    let out = tmp("gen-steps");
    let o = out.to_str().unwrap();
    for steps in ["1001", "100000", "0"] {
        fails(
            &with_model(vec!["generate", "--n", "1", "--steps", steps], o),
            "--steps must lie in 1..=1000",
        );
    }
    for (flag, value, needle) in [
        (
            "--sample-steps",
            "1001",
            "--sample-steps must lie in 1..=1000",
        ),
        ("--colour-t", "500,1001", "--colour-t 1001"),
    ] {
        fails(
            &with_model(
                vec![
                    "evaluate",
                    "--val",
                    "assets/faces",
                    "--train",
                    "assets/faces",
                    flag,
                    value,
                ],
                o,
            ),
            needle,
        );
    }
}

/// Shard files that do not fit together are clear errors, never a panic.
#[test]
fn merge_rejects_inconsistent_shard_files() {
    let out = tmp("merge-bad");
    let shard = |name: &str, shard: usize, shards: usize, records: &str| -> String {
        let p = out.join(name);
        std::fs::write(
            &p,
            format!(
                r#"{{"shard": {shard}, "shards": {shards}, "total_images": 4, "settings": {{}}, "records": [{records}]}}"#
            ),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let merge = |files: &[&str], needle: &str| {
        let mut v = vec!["merge"];
        v.extend(files);
        v.extend(["--out", out.to_str().unwrap()]);
        fails(&v, needle);
    };
    let a = shard("a.json", 3, 2, "");
    merge(&[&a], "shard 3 of 2 is out of range");
    let a = shard("a.json", 0, 0, "");
    merge(&[&a], "shard 0 of 0 is out of range");
    let (a, b) = (shard("a.json", 0, 2, ""), shard("b.json", 1, 3, ""));
    merge(&[&a, &b], "differently split");
    let (a, b) = (shard("a.json", 1, 2, ""), shard("b.json", 1, 2, ""));
    merge(&[&a, &b], "shard 1/2 given twice");
    let rec = r#"{"index": 1, "image": "x", "method": "DPS", "op": "inpaint-box", "scores": {"psnr": 1.0, "ssim": 0.5, "lpips": 0.1}}"#;
    let (a, b) = (shard("a.json", 0, 2, rec), shard("b.json", 1, 2, ""));
    merge(&[&a, &b], "does not belong to shard 0/2"); // A misspelled key is refused, not ignored.
    let p = out.join("typo.json");
    std::fs::write(
        &p,
        r#"{"shard": 0, "shards": 1, "total_images": 4, "settings": {}, "records": [], "skiped": []}"#,
    )
    .unwrap();
    merge(&[p.to_str().unwrap()], "unknown field `skiped`");
}

/// Calibration files (and the operator specs inside them) refuse unknown keys.
#[test]
fn calibration_files_refuse_unknown_keys() {
    let out = tmp("calibration-keys");
    let text = std::fs::read_to_string(root().join("docs/calibration_32px.json")).unwrap();
    for (from, to, needle) in [
        ("\"seed\"", "\"sede\"", "unknown key \"sede\""),
        ("\"pixel_scaled\"", "\"pixel_scale\"", "pixel_scale"),
    ] {
        assert!(text.contains(from), "{from}");
        let p = out.join("cal.json");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
        fails(
            &[
                "nfe",
                "--faces",
                "assets/faces",
                "--calibration",
                p.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            needle,
        );
    }
}

/// Shards run with other weights (e.g. another model under `TWEEDIE_ASSETS`, same
/// `--model embedded`) are refused by the weights' SHA-256, which every shard records.
#[test]
fn merge_refuses_shards_made_with_other_weights() {
    let out = tmp("merge-weights");
    let shard = |name: &str, shard: usize, weights: &str| -> String {
        let p = out.join(name);
        std::fs::write(
            &p,
            format!(
                r#"{{"shard": {shard}, "shards": 2, "total_images": 2, "settings": {{"model": "embedded", "network": {{"sha256": {{"weights": "{weights}"}}}}}}, "records": []}}"#
            ),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let (a, b) = (shard("a.json", 0, "aaaa"), shard("b.json", 1, "bbbb"));
    fails(
        &["merge", &a, &b, "--out", out.to_str().unwrap()],
        "other weights",
    );
}

/// Runs `tweedie` from the repository root with `args`; returns (success, stdout, stderr).
fn run_text(args: &[&str]) -> (bool, String, String) {
    let out = tweedie(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Copies the face `f` of `assets/faces` to `to`, re-encoded by extension (PNG or JPEG).
fn face_to(f: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    image::open(root().join("assets/faces").join(f))
        .unwrap()
        .to_rgb8()
        .save(to)
        .unwrap();
}

/// Issue item 3: `s1/face.jpg`, `s2/face.jpg` and `face.png` under one folder get one output
/// each (named by their path relative to the folder) in `restore`, `denoise` and `eval`;
/// inputs that would still share a name are refused, listing them.
#[test]
fn outputs_keep_relative_paths_and_same_names_are_refused() {
    let out = tmp("relpaths");
    let data = out.join("faces");
    face_to("000444.jpg", &data.join("s1/face.jpg"));
    face_to("000719.jpg", &data.join("s2/face.jpg"));
    face_to("000878.jpg", &data.join("face.png"));
    let d = data.to_str().unwrap();
    let r = out.join("restore");
    ok(&with_model(
        vec![
            "restore",
            d,
            "--method",
            "sdedit",
            "--op",
            "gaussian-blur",
            "--steps",
            "2",
            "--t0",
            "50",
        ],
        r.to_str().unwrap(),
    ));
    for name in ["s1/face", "s2/face", "face"] {
        assert!(r.join(format!("{name}_sdedit.png")).exists(), "{name}");
        assert!(r.join(format!("{name}_measurement.png")).exists(), "{name}");
        assert!(r.join(format!("{name}_kernel.npy")).exists(), "{name}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("sdedit_metrics.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["face", "s1/face", "s2/face"], "{json}");
    let dn = out.join("denoise");
    ok(&with_model(
        vec!["denoise", d, "--t", "30"],
        dn.to_str().unwrap(),
    ));
    for name in ["s1/face", "s2/face", "face"] {
        assert!(
            dn.join(format!("{name}_t30_denoised.png")).exists(),
            "{name}"
        );
    }
    let ev = out.join("eval");
    ok(&with_model(
        vec![
            "eval",
            d,
            "--methods",
            "sdedit",
            "--ops",
            "inpaint-box",
            "--steps",
            "2",
            "--t0",
            "50",
        ],
        ev.to_str().unwrap(),
    ));
    for name in ["s1/face", "s2/face", "face"] {
        assert!(
            ev.join(format!("sdedit_inpaint-box/{name}.png")).exists(),
            "{name}"
        );
    }
    // Two files given by name with the same stem, and face.jpg beside face.png.
    let (a, b) = (data.join("s1/face.jpg"), data.join("s2/face.jpg"));
    let o = out.join("dup");
    for cmd in ["restore", "denoise"] {
        fails(
            &with_model(
                vec![cmd, a.to_str().unwrap(), b.to_str().unwrap()],
                o.to_str().unwrap(),
            ),
            "s2/face.jpg",
        );
    }
    face_to("000444.jpg", &data.join("face.jpg"));
    for cmd in ["restore", "denoise", "eval"] {
        fails(&with_model(vec![cmd, d], o.to_str().unwrap()), "face.jpg");
    }
    assert!(!o.join("face_dps.png").exists());
}

/// Issue item 15: an unreadable image is skipped with a warning and a count in `denoise`,
/// `restore` and `eval`, the others are measured; `--strict` makes it an error, and so is a
/// run in which no image can be read.
#[test]
fn unreadable_images_are_skipped_and_counted() {
    let out = tmp("skip");
    let data = out.join("faces");
    face_to("000444.jpg", &data.join("a.jpg"));
    std::fs::write(data.join("b.png"), b"not an image").unwrap();
    face_to("000719.jpg", &data.join("c.jpg"));
    let d = data.to_str().unwrap();
    let o = out.join("o");
    let o = o.to_str().unwrap();
    let (good, _, err) = run_text(&with_model(
        vec![
            "restore", d, "--method", "sdedit", "--steps", "2", "--t0", "50",
        ],
        o,
    ));
    assert!(good, "{err}");
    assert!(
        err.contains("b.png") && err.contains("1 of 3 images skipped"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(o).join("sdedit_metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["results"].as_array().unwrap().len(), 2, "{json}");
    let (good, _, err) = run_text(&with_model(vec!["denoise", d, "--t", "30"], o));
    assert!(good, "{err}");
    assert!(err.contains("1 of 3 images skipped"), "{err}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(o).join("denoise_metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
    let (good, _, err) = run_text(&with_model(
        vec![
            "eval",
            d,
            "--methods",
            "sdedit",
            "--ops",
            "inpaint-box",
            "--steps",
            "2",
            "--t0",
            "50",
        ],
        o,
    ));
    assert!(good, "{err}");
    assert!(err.contains("1 of 3 images skipped"), "{err}");
    let csv = std::fs::read_to_string(Path::new(o).join("metrics.csv")).unwrap();
    assert!(csv.contains("SDEdit,inpaint-box,2,"), "{csv}");
    for cmd in ["restore", "denoise", "eval"] {
        fails(&with_model(vec![cmd, d, "--strict"], o), "b.png");
    }
    let bad = out.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("x.png"), b"not an image").unwrap();
    for cmd in ["restore", "denoise", "eval"] {
        fails(
            &with_model(vec![cmd, bad.to_str().unwrap()], o),
            "none of the 1 images",
        );
    }
}

/// Issue item 7: `generate` runs in batches of `--batch`; each image's noise comes from its
/// own seeded stream, so the samples do not depend on the batch size.
#[test]
fn generate_runs_in_batches_independent_of_the_batch_size() {
    let out = tmp("gen-batch");
    let mut dirs = Vec::new();
    for batch in ["2", "1", "3"] {
        let d = out.join(format!("b{batch}"));
        ok(&with_model(
            vec![
                "generate", "--n", "3", "--batch", batch, "--steps", "3", "--seed", "5",
            ],
            d.to_str().unwrap(),
        ));
        for i in 0..3 {
            assert!(d.join(format!("sample_{i:03}.png")).exists(), "{batch}");
        }
        assert!(!d.join("sample_003.png").exists() && d.join("grid.png").exists());
        dirs.push(d);
    }
    for i in 0..3 {
        let name = format!("sample_{i:03}.png");
        let a = image::open(dirs[0].join(&name)).unwrap().to_rgb8();
        for d in &dirs[1..] {
            let b = image::open(d.join(&name)).unwrap().to_rgb8();
            let worst = a
                .as_raw()
                .iter()
                .zip(b.as_raw())
                .map(|(x, y)| x.abs_diff(*y))
                .max()
                .unwrap();
            assert!(
                worst <= 1,
                "{name} differs by {worst}/255 across batch sizes"
            );
        }
    }
    fails(
        &with_model(
            vec!["generate", "--n", "3", "--batch", "0"],
            out.to_str().unwrap(),
        ),
        "--batch must be ≥ 1",
    );
}

/// Issue item 13: folders that match only in part name the unmatched files; an image under
/// 11 px has no SSIM, said so, and it does not spoil the mean.
#[test]
fn metrics_names_unmatched_files_and_skips_ssim_on_tiny_images() {
    let out = tmp("metrics-match");
    let (a, b) = (out.join("a"), out.join("b"));
    for d in [&a, &b] {
        face_to("000444.jpg", &d.join("face.png"));
        image::RgbImage::from_pixel(8, 8, image::Rgb([40, 90, 200]))
            .save(d.join("tiny.png"))
            .unwrap();
    }
    face_to("000719.jpg", &a.join("only_in_a.png"));
    face_to("000878.jpg", &b.join("only_in_b.png"));
    let (good, stdout, err) = run_text(&[
        "metrics",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(good, "{err}");
    assert!(
        err.contains("only_in_a.png") && err.contains("only_in_b.png") && err.contains("1 of 3"),
        "{err}"
    );
    assert!(stdout.contains("too small for SSIM"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(json["mean"]["ssim"], 1.0, "{json}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(!csv.contains("NaN"), "{csv}");
}

/// Issue item 19: a cause is printed once, not once in the message and again in the chain.
#[test]
fn errors_print_each_cause_once() {
    let (good, _, err) = run_text(&["metrics", "no/such.png", FACE]);
    assert!(!good);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("no/such.png"), "{err}");
}

/// Issue item 19: sizes are width×height everywhere, the mask's too.
#[test]
fn mask_size_errors_say_width_by_height() {
    let out = tmp("mask-wh");
    let mask = out.join("mask.png");
    image::RgbImage::from_pixel(20, 24, image::Rgb([255, 255, 255]))
        .save(&mask)
        .unwrap();
    fails(
        &with_model(
            vec![
                "restore",
                FACE,
                "--op",
                "inpaint-mask",
                "--mask",
                mask.to_str().unwrap(),
                "--steps",
                "2",
            ],
            out.to_str().unwrap(),
        ),
        "is 20×24",
    );
}

/// Issue item 19: an `--out` that cannot be written is found before any work, in every
/// command that writes outputs.
#[test]
fn unwritable_out_is_refused_up_front() {
    let out = tmp("unwritable");
    let file = out.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let o = file.join("sub");
    let o = o.to_str().unwrap();
    let data = train_data(&out);
    let d = data.to_str().unwrap();
    let needle = "cannot write to the output folder";
    fails(
        &with_model(vec!["generate", "--n", "1", "--steps", "2"], o),
        needle,
    );
    fails(&with_model(vec!["denoise", FACE], o), needle);
    fails(
        &with_model(vec!["restore", FACE, "--steps", "2"], o),
        needle,
    );
    fails(&with_model(vec!["eval", d, "--steps", "2"], o), needle);
    fails(
        &with_model(vec!["evaluate", "--val", d, "--train", d], o),
        needle,
    );
    fails(&["metrics", FACE, FACE, "--out", o], needle);
    fails(&train_args(d, o, &["--steps", "1"]), needle);
    fails(&["merge", d, "--out", o], needle);
}

/// Issue item 19: errors on resuming name the checkpoint file at fault.
#[test]
fn resume_errors_name_the_file() {
    let out = tmp("resume-bad");
    let data = train_data(&out);
    let run = out.join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&train_args(d, r, &["--steps", "1"]));
    std::fs::write(run.join("checkpoint/model.safetensors"), b"garbage").unwrap();
    fails(
        &train_args(d, r, &["--steps", "2", "--resume"]),
        "checkpoint/model.safetensors",
    );
}

/// Issue item 4: the default model and the LPIPS weights are inside the binary: a copy of
/// it, run from an empty folder without `TWEEDIE_ASSETS` (and, where a private mount
/// namespace is available, with the source tree hidden), generates and measures.
#[test]
fn the_binary_carries_its_model_and_lpips_weights() {
    let dir = tmp("standalone");
    let bin = dir.join("tweedie");
    std::fs::copy(env!("CARGO_BIN_EXE_tweedie"), &bin).unwrap();
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    face_to("000444.jpg", &work.join("a.png"));
    face_to("000444.jpg", &work.join("b.png"));
    let src = root().canonicalize().unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    // `unshare -rm`: a user and mount namespace in which an empty folder covers the tree.
    let hide = format!(
        "mount --bind '{}' '{}' && test ! -e '{}' && exec \"$0\" \"$@\"",
        empty.display(),
        src.display(),
        src.join("assets").display()
    );
    let hidden = Command::new("unshare")
        .args(["-rm", "sh", "-c", &hide, "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !hidden {
        eprintln!("no private mount namespace here: running without hiding the source tree");
    }
    let run = |args: &[&str]| -> String {
        let mut cmd = if hidden {
            let mut c = Command::new("unshare");
            c.args(["-rm", "sh", "-c", &hide]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let out = cmd
            .args(args)
            .current_dir(&work)
            .env_remove("TWEEDIE_ASSETS")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "tweedie {args:?} failed:\n{text}");
        text
    };
    run(&["generate", "--n", "1", "--steps", "2", "--out", "gen"]);
    assert!(work.join("gen/sample_000.png").exists());
    let text = run(&["metrics", "a.png", "b.png"]);
    assert!(
        text.contains("PSNR inf") && text.contains("LPIPS 0.0000"),
        "{text}"
    );
    // `TWEEDIE_ASSETS` still overrides the built-in files.
    let out = Command::new(&bin)
        .args(["generate", "--n", "1", "--steps", "2", "--out", "gen2"])
        .current_dir(&work)
        .env("TWEEDIE_ASSETS", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("TWEEDIE_ASSETS"),
        "{err}"
    );
}

/// A rerun into a folder that already holds results says so (nothing is deleted).
#[test]
fn a_rerun_into_a_used_out_folder_says_so() {
    let out = tmp("rerun-note");
    let o = out.to_str().unwrap();
    let first = ok(&with_model(vec!["generate", "--n", "2", "--steps", "2"], o));
    assert!(!first.contains("already holds"), "{first}");
    let second = ok(&with_model(vec!["generate", "--n", "1", "--steps", "2"], o));
    assert!(second.contains("already holds"), "{second}");
    assert!(out.join("sample_001.png").exists(), "nothing is deleted");
}

/// The face resized to `w × h` (no crop) as a PNG at `to`.
fn face_png(to: &Path, w: u32, h: u32) {
    image::open(root().join(FACE))
        .unwrap()
        .resize_exact(w, h, image::imageops::FilterType::Triangle)
        .to_rgb8()
        .save(to)
        .unwrap();
}

fn metrics_json(dir: &Path, method: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("{method}_metrics.json"))).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["results"][0].clone()
}

/// Issue "Restore your own photos": a measurement saved by a simulated run is restored with
/// `--measured` and the kernel that run saved; metrics appear only with `--reference`; random
/// operators are refused for a measured image.
#[test]
fn restore_measured_blur_with_the_saved_kernel() {
    let out = tmp("measured-blur");
    let sim = out.join("sim");
    ok(&with_model(
        vec!["restore", FACE, "--op", "motion-blur", "--steps", "2"],
        sim.to_str().unwrap(),
    ));
    let y = sim.join("000444_measurement.png");
    let kernel = sim.join("000444_kernel.npy");
    assert!(y.exists() && kernel.exists());
    let (y, kernel) = (y.to_str().unwrap(), kernel.to_str().unwrap());
    let m = out.join("m");
    let mo = m.to_str().unwrap();
    let measured = |extra: &[&str]| -> String {
        let mut args = vec![
            "restore",
            "--measured",
            y,
            "--op",
            "motion-blur",
            "--kernel",
            kernel,
            "--sigma",
            "0.05",
            "--steps",
            "3",
        ];
        args.extend(extra);
        ok(&with_model(args, mo))
    };
    // Without a reference: no metrics.
    let text = measured(&[]);
    assert!(
        !text.contains("PSNR") && text.contains("no --reference"),
        "{text}"
    );
    let r = metrics_json(&m, "dps");
    assert!(r.get("scores").is_none(), "{r}");
    assert_eq!(r["settings"]["op"]["op"], "kernel-blur", "{r}");
    assert_eq!(r["settings"]["sigma"], 0.05, "{r}");
    assert!(
        r["measured"]
            .as_str()
            .unwrap()
            .ends_with("000444_measurement.png")
    );
    assert!(m.join("000444_measurement_dps.png").exists() && m.join("dps_grid.png").exists());
    let restored = image::open(m.join("000444_measurement_dps.png")).unwrap();
    assert_eq!((restored.width(), restored.height()), (32, 32));
    // With the ground truth (fitted as the simulated run fitted it): metrics.
    let text = measured(&["--reference", FACE, "--fit", "crop"]);
    assert!(text.contains("PSNR"), "{text}");
    let r = metrics_json(&m, "dps");
    assert!(r["scores"]["psnr"].as_f64().unwrap() > 5.0, "{r}");
    // Random operators make no sense for a measured image.
    fails(
        &with_model(vec!["restore", "--measured", y, "--op", "motion-blur"], mo),
        "--kernel",
    );
    fails(
        &with_model(
            vec!["restore", "--measured", y, "--op", "inpaint-random"],
            mo,
        ),
        "--op inpaint-mask --mask",
    );
    // The mask of a simulated run drives an inpainting of its measurement.
    ok(&with_model(
        vec!["restore", FACE, "--op", "inpaint-box", "--steps", "2"],
        sim.to_str().unwrap(),
    ));
    let mask = sim.join("000444_mask.png");
    ok(&with_model(
        vec![
            "restore",
            "--measured",
            y,
            "--op",
            "inpaint-mask",
            "--mask",
            mask.to_str().unwrap(),
            "--method",
            "ald",
            "--steps",
            "2",
        ],
        mo,
    ));
    assert!(m.join("000444_measurement_ald.png").exists());
}

/// A measured image of another size is an error naming both sizes and `--fit`; `--fit`
/// fits it; SR takes the low-resolution image itself (8×8 for sr4 at 32 px).
#[test]
fn restore_measured_sizes_fit_and_super_resolution() {
    let out = tmp("measured-size");
    let o = out.to_str().unwrap();
    // The face is 178×218; the fixture model is 32×32.
    let fails_naming = |args: &[&str], needles: &[&str]| {
        let (good, _, err) = run_text(&with_model(args.to_vec(), o));
        assert!(
            !good && !err.contains("panicked"),
            "{args:?} should fail:\n{err}"
        );
        for n in needles {
            assert!(err.contains(n), "{args:?}: expected {n:?} in:\n{err}");
        }
    };
    fails_naming(
        &["restore", "--measured", FACE, "--op", "gaussian-blur"],
        &["178×218", "32×32", "--fit"],
    );
    for fit in ["crop", "resize"] {
        ok(&with_model(
            vec![
                "restore",
                "--measured",
                FACE,
                "--op",
                "gaussian-blur",
                "--fit",
                fit,
                "--steps",
                "2",
            ],
            o,
        ));
        assert!(out.join("000444_dps.png").exists());
    }
    // SR: the 8×8 low-resolution image is the measurement.
    let lr = out.join("lr.png");
    face_png(&lr, 8, 8);
    let text = ok(&with_model(
        vec![
            "restore",
            "--measured",
            lr.to_str().unwrap(),
            "--op",
            "sr4",
            "--method",
            "sdedit",
            "--t0",
            "200",
            "--steps",
            "3",
        ],
        o,
    ));
    assert!(text.contains("no --reference"), "{text}");
    let restored = image::open(out.join("lr_sdedit.png")).unwrap();
    assert_eq!((restored.width(), restored.height()), (32, 32));
    // A full-size image is not a ×4 measurement of a 32×32 image.
    let full = out.join("full.png");
    face_png(&full, 32, 32);
    fails_naming(
        &[
            "restore",
            "--measured",
            full.to_str().unwrap(),
            "--op",
            "sr4-box",
        ],
        &["32×32", "8×8", "--fit"],
    );
    // --reference and --fit belong to --measured; inputs and --measured exclude each other.
    fails(
        &with_model(vec!["restore", FACE, "--reference", FACE], o),
        "--measured",
    );
    fails(
        &with_model(vec!["restore", FACE, "--measured", FACE], o),
        "cannot be used with",
    );
    fails(
        &with_model(vec!["restore", "--measured", "no/such.png"], o),
        "does not exist",
    );
}

/// `--samples K`: K posterior samples of one measurement, their mean, a std heat map and a
/// figure; from a measured image and from a simulated one.
#[test]
fn restore_samples_write_mean_std_and_figure() {
    let out = tmp("samples");
    let o = out.to_str().unwrap();
    let y = out.join("y.png");
    face_png(&y, 32, 32);
    let text = ok(&with_model(
        vec![
            "restore",
            "--measured",
            y.to_str().unwrap(),
            "--op",
            "gaussian-blur",
            "--samples",
            "3",
            "--steps",
            "2",
        ],
        o,
    ));
    for f in [
        "y_dps_mean.png",
        "y_dps_std.png",
        "y_dps_samples.png",
        "y_dps_sample_000.png",
        "y_dps_sample_002.png",
        "dps_grid.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing:\n{text}");
    }
    assert!(!out.join("y_dps.png").exists());
    let r = metrics_json(&out, "dps");
    assert_eq!(r["samples"], 3, "{r}");
    let max = r["std"]["max"].as_f64().unwrap();
    assert!(
        max > 0.0 && r["std"]["mean"].as_f64().unwrap() <= max,
        "{r}"
    );
    let samples: Vec<Vec<u8>> = (0..3)
        .map(|k| {
            image::open(out.join(format!("y_dps_sample_{k:03}.png")))
                .unwrap()
                .to_rgb8()
                .into_raw()
        })
        .collect();
    assert!(
        samples[0] != samples[1] && samples[1] != samples[2],
        "samples differ"
    );
    // Simulated, with the ground truth: scores of the mean and of each sample.
    let sim = out.join("sim");
    ok(&with_model(
        vec![
            "restore",
            FACE,
            "--method",
            "ald",
            "--op",
            "inpaint-box",
            "--samples",
            "2",
            "--steps",
            "2",
        ],
        sim.to_str().unwrap(),
    ));
    let r = metrics_json(&sim, "ald");
    assert!(r["scores"]["psnr"].as_f64().is_some(), "{r}");
    assert_eq!(r["sample_scores"].as_array().unwrap().len(), 2, "{r}");
    assert!(sim.join("000444_ald_std.png").exists() && sim.join("000444_mask.png").exists());
    fails(
        &with_model(
            vec![
                "restore",
                "--measured",
                y.to_str().unwrap(),
                "--samples",
                "1",
            ],
            o,
        ),
        "--samples must be ≥ 2",
    );
}

/// The largest difference, in 1/255 steps, between two PNGs of the same size.
fn png_diff(a: &Path, b: &Path) -> u8 {
    let a = image::open(a).unwrap().to_rgb8();
    let b = image::open(b).unwrap().to_rgb8();
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

/// Three faces in a fresh folder under `out`.
fn three_faces(out: &Path) -> PathBuf {
    let data = out.join("faces");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["000444.jpg", "000719.jpg", "000878.jpg"] {
        std::fs::copy(root().join("assets/faces").join(f), data.join(f)).unwrap();
    }
    data
}

/// Issue "Restore your own photos", item 3: `restore --batch N` runs N images per chain and
/// gives image by image what `--batch 1` gives (each image's operator, measurement and
/// sampler noise come from its own seed), for an operator fully given by its spec and for a
/// random one (each image its own motion kernel).
#[test]
fn restore_in_batches_equals_one_image_at_a_time() {
    let out = tmp("restore-batch");
    let data = three_faces(&out);
    let d = data.to_str().unwrap();
    let names = ["000444", "000719", "000878"];
    for op in ["gaussian-blur", "motion-blur"] {
        let mut dirs = Vec::new();
        for batch in ["1", "3", "2"] {
            let dir = out.join(format!("{op}-b{batch}"));
            ok(&with_model(
                vec![
                    "restore", d, "--method", "dps", "--op", op, "--steps", "3", "--seed", "4",
                    "--batch", batch,
                ],
                dir.to_str().unwrap(),
            ));
            dirs.push(dir);
        }
        let all = |dir: &Path| -> serde_json::Value {
            let text = std::fs::read_to_string(dir.join("dps_metrics.json")).unwrap();
            serde_json::from_str(&text).unwrap()
        };
        let one = all(&dirs[0]);
        assert_eq!(one["results"].as_array().unwrap().len(), 3);
        for dir in &dirs[1..] {
            for n in names {
                for file in [format!("{n}_dps.png"), format!("{n}_measurement.png")] {
                    let e = png_diff(&dirs[0].join(&file), &dir.join(&file));
                    assert!(e <= 1, "{op} {}: {file} differs by {e}/255", dir.display());
                }
            }
            let other = all(dir);
            for (a, b) in one["results"]
                .as_array()
                .unwrap()
                .iter()
                .zip(other["results"].as_array().unwrap())
            {
                assert_eq!(a["image"], b["image"]);
                assert_eq!(a["settings"], b["settings"]);
                assert_eq!(a["operator"], b["operator"]);
                for k in ["psnr", "ssim", "lpips"] {
                    let (x, y) = (
                        a["scores"][k].as_f64().unwrap(),
                        b["scores"][k].as_f64().unwrap(),
                    );
                    assert!((x - y).abs() < 1e-3, "{op} {k}: {x} vs {y}");
                }
            }
        }
        if op == "motion-blur" {
            // Each image its own kernel, the same whatever the batch.
            let k =
                |dir: &Path, n: &str| std::fs::read(dir.join(format!("{n}_kernel.npy"))).unwrap();
            assert_ne!(k(&dirs[0], names[0]), k(&dirs[0], names[1]));
            assert_eq!(k(&dirs[0], names[2]), k(&dirs[1], names[2]));
        }
    }
    let o = out.to_str().unwrap();
    fails(
        &with_model(vec!["restore", d, "--batch", "0"], o),
        "--batch must be ≥ 1",
    );
    fails(
        &with_model(vec!["restore", d, "--batch", "2", "--samples", "2"], o),
        "--batch goes with single restorations",
    );
}

/// Issue "Restore your own photos", item 5: `--eta` (DDIM) for `restore` and `eval`,
/// recorded in the settings and the summary line, checked to lie in [0, 1]; and `eval`
/// prints plain progress lines with an ETA when stderr is not a terminal (a pipe here), and
/// gives the same scores with `--batch 2` as with `--batch 1`.
#[test]
fn restore_and_eval_take_eta_and_eval_reports_progress() {
    let out = tmp("eta");
    let data = three_faces(&out);
    let d = data.to_str().unwrap();
    let r = out.join("restore");
    ok(&with_model(
        vec![
            "restore", FACE, "--method", "dps", "--steps", "3", "--eta", "0",
        ],
        r.to_str().unwrap(),
    ));
    let rec = &metrics_json(&r, "dps");
    assert_eq!(rec["settings"]["eta"].as_f64(), Some(0.0), "{rec}");
    assert!(
        rec["summary"].as_str().unwrap().contains("DDIM η=0"),
        "{rec}"
    );
    let o = out.to_str().unwrap();
    for cmd in ["restore", "eval"] {
        let input = if cmd == "restore" { FACE } else { d };
        fails(
            &with_model(vec![cmd, input, "--eta", "1.5"], o),
            "--eta must lie in [0, 1]",
        );
    }
    let eval = |batch: &str| {
        let dir = out.join(format!("eval-b{batch}"));
        let text = ok(&with_model(
            vec![
                "eval",
                d,
                "--methods",
                "dps,sdedit",
                "--ops",
                "inpaint-box",
                "--steps",
                "3",
                "--t0",
                "50",
                "--eta",
                "0",
                "--batch",
                batch,
            ],
            dir.to_str().unwrap(),
        ));
        (dir, text)
    };
    let (one, text) = eval("1");
    assert!(
        text.lines()
            .any(|l| l.starts_with("eval shard 0/1: 1/6 (17%)") && l.contains("ETA")),
        "no progress line in:\n{text}"
    );
    assert!(text.contains("eval shard 0/1: 6/6 (100%)"), "{text}");
    let (two, _) = eval("2");
    let read = |dir: &Path| -> serde_json::Value {
        let shard = std::fs::read_to_string(dir.join("eval_shard_0_of_1.json")).unwrap();
        serde_json::from_str(&shard).unwrap()
    };
    let (a, b) = (read(&one), read(&two));
    assert_eq!(a["settings"]["eta"].as_f64(), Some(0.0));
    assert_eq!(a["settings"], b["settings"]);
    let (ra, rb) = (
        a["records"].as_array().unwrap(),
        b["records"].as_array().unwrap(),
    );
    assert_eq!(ra.len(), 6);
    for (x, y) in ra.iter().zip(rb) {
        assert_eq!((&x["image"], &x["method"]), (&y["image"], &y["method"]));
        let (p, q) = (
            x["scores"]["psnr"].as_f64().unwrap(),
            y["scores"]["psnr"].as_f64().unwrap(),
        );
        assert!((p - q).abs() < 1e-3, "{x} vs {y}");
    }
}

/// `generate` prints a plain progress line per batch with an ETA when stderr is not a
/// terminal.
#[test]
fn generate_reports_progress_per_batch() {
    let out = tmp("gen-progress");
    let text = ok(&with_model(
        vec!["generate", "--n", "3", "--batch", "2", "--steps", "2"],
        out.to_str().unwrap(),
    ));
    assert!(
        text.contains("generate: 2/4 (50%) steps; batch 1/2 done (images 0..1 of 3)")
            && text.contains("batch 2/2 done")
            && text.contains("ETA"),
        "{text}"
    );
}

/// `parity` reads its fixture with the safetensors crate: a corrupt or incomplete `io`
/// file is an error naming it, never a panic.
#[test]
fn parity_rejects_a_corrupt_fixture() {
    let dir = tmp("parity-bad");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(root().join("tests/fixtures/adm").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("io.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"x\": 1}",
    )
    .unwrap();
    fails(
        &["parity", dir.to_str().unwrap()],
        "io.safetensors: not a safetensors file",
    );
    // A valid file without the timesteps.
    let bytes = std::fs::read(root().join("tests/fixtures/adm/io.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let keep: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| n != "t").collect();
    safetensors::serialize_to_file(keep, None, &dir.join("io.safetensors")).unwrap();
    fails(&["parity", dir.to_str().unwrap()], "no tensor \"t\"");
}

/// `train --val` writes `eval.csv` with the EMA weights' validation loss and the FD of their
/// samples at every `--eval-every` steps and the last one.
#[test]
fn train_with_val_writes_eval_csv() {
    let out = tmp("train-val");
    let data = train_data(&out);
    let run = out.join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&train_args(
        d,
        r,
        &[
            "--steps",
            "3",
            "--val",
            d,
            "--eval-every",
            "2",
            "--eval-samples",
            "3",
            "--eval-sample-steps",
            "2",
        ],
    ));
    let csv = std::fs::read_to_string(run.join("eval.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0], "step,images_seen,train_seconds,val_loss,fd_alex,colour_fd",
        "{csv}"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].starts_with("2,4,") && lines[2].starts_with("3,6,"),
        "{csv}"
    );
    for l in &lines[1..] {
        let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        assert!(
            v.iter().all(|x| x.is_finite()) && v[3] > 0.0 && v[4] > 0.0,
            "{l}"
        );
    }
    // One sample cannot make a covariance: refused before training starts.
    fails(
        &train_args(
            d,
            out.join("run1").to_str().unwrap(),
            &["--steps", "1", "--val", d, "--eval-samples", "1"],
        ),
        "FD needs ≥ 2 samples",
    );
    fails(
        &train_args(
            d,
            out.join("run2").to_str().unwrap(),
            &[
                "--steps",
                "1",
                "--val",
                out.join("nowhere").to_str().unwrap(),
            ],
        ),
        "nowhere",
    );
}

/// `memorisation`: samples that are copies (one mirrored) of training images are flagged;
/// held-out faces as "samples" are not; a sample of the wrong size is reported and skipped.
#[test]
fn memorisation_flags_copies_of_training_images() {
    let out = tmp("memo");
    let faces: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("assets/faces"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    assert!(faces.len() >= 8, "assets/faces holds {} faces", faces.len());
    let (train, val, copies) = (out.join("train"), out.join("val"), out.join("copies"));
    for d in [&train, &val, &copies] {
        std::fs::create_dir_all(d).unwrap();
    }
    for f in &faces[..5] {
        std::fs::copy(f, train.join(f.file_name().unwrap())).unwrap();
    }
    for f in &faces[5..8] {
        std::fs::copy(f, val.join(f.file_name().unwrap())).unwrap();
    }
    // The "samples": 16×16 copies of three training faces, one mirrored, and a stray 8×8.
    for (i, f) in faces[..3].iter().enumerate() {
        let img = tweedie_io::load_image(f).unwrap();
        let mut s = tweedie_train::prepare(
            &img,
            &tweedie_train::DatasetOptions {
                size: 16,
                crop: None,
            },
        );
        if i == 1 {
            s = s.flip_horizontal();
        }
        tweedie_io::save_png(&s, copies.join(format!("s{i}.png"))).unwrap();
    }
    tweedie_io::save_png(
        &tweedie_io::Image::filled(8, 8, 0.0),
        copies.join("stray.png"),
    )
    .unwrap();
    let args = |samples: &Path, json: &Path| -> Vec<String> {
        [
            "memorisation",
            samples.to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--val",
            val.to_str().unwrap(),
            "--size",
            "16",
            "--lpips-candidates",
            "2",
            "--json",
            json.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let j1 = out.join("copies.json");
    let a1 = args(&copies, &j1);
    let text = ok(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        text.contains("stray.png") && text.contains("inspect the closest pairs"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&j1).unwrap()).unwrap();
    assert_eq!(v["samples"]["images"], 3);
    // Copies up to PNG rounding: RMSE < 1/255 after a resize round trip.
    assert!(
        v["samples"]["pixel"]["median"].as_f64().unwrap() < 0.01,
        "{v}"
    );
    assert_eq!(v["fraction_samples_below_val_p05"], 1.0);
    // Upside-down held-out faces as "samples": farther from the training set than the
    // held-out faces themselves, so no sign.
    let held = out.join("held");
    std::fs::create_dir_all(&held).unwrap();
    for f in &faces[5..8] {
        let img = tweedie_io::load_image(f).unwrap();
        let mut s = tweedie_train::prepare(
            &img,
            &tweedie_train::DatasetOptions {
                size: 16,
                crop: None,
            },
        );
        let upright = s.data.clone();
        for c in 0..3 {
            for y in 0..16 {
                let (dst, src) = (c * 256 + y * 16, c * 256 + (15 - y) * 16);
                s.data[dst..dst + 16].copy_from_slice(&upright[src..src + 16]);
            }
        }
        tweedie_io::save_png(&s, held.join(f.file_name().unwrap()).with_extension("png")).unwrap();
    }
    let j2 = out.join("held.json");
    let a2 = args(&held, &j2);
    let text = ok(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(text.contains("no sign of memorisation"), "{text}");
    // Samples of another size than --size: the error says which.
    fails(
        &[
            "memorisation",
            copies.to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--val",
            val.to_str().unwrap(),
            "--size",
            "24",
        ],
        "pass --size",
    );
    fails(
        &[
            "memorisation",
            out.join("nothing").to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--val",
            val.to_str().unwrap(),
        ],
        "not a folder",
    );
}

/// `fd`: a set against itself is ≈ 0; an image of another size in a set (like generate's
/// `grid.png`) is reported and skipped unless `--mixed-sizes`; a colour-shifted copy is
/// farther in colour-FD.
#[test]
fn fd_skips_odd_sizes_and_sees_colour_shifts() {
    let out = tmp("fd");
    let (a, shifted) = (out.join("a"), out.join("shifted"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&shifted).unwrap();
    for e in std::fs::read_dir(root().join("assets/faces")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let img = tweedie_io::load_image(&p).unwrap();
        tweedie_io::save_png(&img, a.join(format!("{name}.png"))).unwrap();
        let mut s = img.clone();
        let plane = s.width * s.height;
        for v in &mut s.data[..plane] {
            *v = (*v + 0.4).min(1.0); // a red cast
        }
        tweedie_io::save_png(&s, shifted.join(format!("{name}.png"))).unwrap();
    }
    tweedie_io::save_png(&tweedie_io::Image::filled(64, 64, 0.9), a.join("grid.png")).unwrap();
    let json = out.join("fd.json");
    let (sa, ss, sj) = (
        a.to_str().unwrap(),
        shifted.to_str().unwrap(),
        json.to_str().unwrap(),
    );
    let text = ok(&["fd", sa, sa, "--json", sj]);
    assert!(
        text.contains("grid.png") && text.contains("--mixed-sizes"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["a"]["images"], 8, "{v}");
    assert!(
        v["a"]["other_size"][0]
            .as_str()
            .unwrap()
            .ends_with("grid.png"),
        "{v}"
    );
    let (same_alex, same_colour) = (
        v["fd_alex"].as_f64().unwrap(),
        v["fd_colour"].as_f64().unwrap(),
    );
    assert!(same_alex.abs() < 1e-3 && same_colour.abs() < 1e-6, "{v}");
    ok(&["fd", sa, sa, "--mixed-sizes", "--json", sj]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["a"]["images"], 9, "{v}");
    let text = ok(&["fd", sa, ss, "--json", sj]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let fd = v["fd_colour"].as_f64().unwrap();
    assert!(fd > 0.01, "{v}");
    // The split: a red cast is mostly the mean term; the terms add up to colour-FD; the red
    // channel's mean is higher in the shifted set.
    let c = &v["colour"];
    let (mt, ct) = (
        c["mean_term"].as_f64().unwrap(),
        c["covariance_term"].as_f64().unwrap(),
    );
    assert!((mt + ct - fd).abs() < 1e-9 && mt > 10.0 * ct, "{c}");
    let red = |s: &str| c[s]["mean_rgb"][0].as_f64().unwrap();
    assert!(red("b") - red("a") > 0.1, "{c}");
    assert_eq!(c["a"]["std_rgb"].as_array().unwrap().len(), 3, "{c}");
    assert!(text.contains("(mean term: a cast)"), "{text}");
    // --split-floor: B (8 faces + their 8 shifted copies) split into |A| = 8 and the other 8.
    let both = out.join("both");
    std::fs::create_dir_all(&both).unwrap();
    for (dir, tag) in [(&a, "a"), (&shifted, "s")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap() != "grid.png" {
                let name = format!("{tag}_{}", p.file_name().unwrap().to_str().unwrap());
                std::fs::copy(&p, both.join(name)).unwrap();
            }
        }
    }
    let sb = both.to_str().unwrap();
    let text = ok(&["fd", sa, sb, "--split-floor", "4", "--json", sj]);
    assert!(text.contains("floor for 8 real images"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let f = &v["split_floor"];
    assert_eq!(
        (f["n"].as_u64(), f["rest"].as_u64(), f["draws"].as_u64()),
        (Some(8), Some(8), Some(4)),
        "{v}"
    );
    let band = &f["fd_colour"];
    let (lo, mid, hi) = (
        band["p05"].as_f64().unwrap(),
        band["median"].as_f64().unwrap(),
        band["p95"].as_f64().unwrap(),
    );
    assert!(0.0 <= lo && lo <= mid && mid <= hi, "{f}");
    // A set larger than B minus 2 cannot be split off: a clear error.
    fails(
        &["fd", sb, sa, "--split-floor", "2"],
        "split of 8 images into 16",
    );
    // --floor-from: |A| = 8 drawn from the 16 of `both` and scored against all of the 8
    // shifted copies. Draws from the pool hold on average half shifted images, so they score
    // below A (no shifted image) against B, and above 0.
    let text = ok(&[
        "fd",
        sa,
        ss,
        "--split-floor",
        "4",
        "--floor-from",
        sb,
        "--json",
        sj,
    ]);
    assert!(
        text.contains("floor for 8 real images (8 of the 16 images of"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let f = &v["split_floor"];
    assert_eq!(
        (
            f["n"].as_u64(),
            f["from"]["images"].as_u64(),
            f["draws"].as_u64()
        ),
        (Some(8), Some(16), Some(4)),
        "{v}"
    );
    let median = f["fd_colour"]["median"].as_f64().unwrap();
    let a_vs_b = v["fd_colour"].as_f64().unwrap();
    assert!(0.0 < median && median < a_vs_b, "{median} vs {a_vs_b}: {v}");
    let above = f["share_of_draws_above_a"]["fd_colour"].as_f64().unwrap();
    assert!(above <= 0.25, "{v}");
    // Without --split-floor, or with a pool no larger than |A|, it is a clear error.
    fails(
        &["fd", sa, ss, "--floor-from", sb],
        "--floor-from needs --split-floor",
    );
    fails(
        &["fd", sb, ss, "--split-floor", "2", "--floor-from", sa],
        "draws of 16 images from a pool of 8",
    );
}

/// `tweedie parity` recognises a diffusers folder and prints each weight file's error and the
/// scheduler's ᾱ error, for the flat, legacy-key and pipeline fixtures.
#[test]
fn parity_recognises_diffusers_folders() {
    for (dir, files) in [
        (
            "ddpm_flat",
            &[
                "diffusion_pytorch_model.safetensors",
                "diffusion_pytorch_model.bin",
            ][..],
        ),
        (
            "ddpm_flat_legacy_keys",
            &["diffusion_pytorch_model.bin"][..],
        ),
        (
            "pipeline_scale_shift",
            &["unet/diffusion_pytorch_model.safetensors"][..],
        ),
    ] {
        let text = ok(&["parity", &format!("tests/fixtures/diffusers/{dir}")]);
        for f in files {
            assert!(
                text.contains(&format!("{f}: max abs error")),
                "{dir}: {text}"
            );
        }
        assert!(text.contains("alphas_cumprod max abs error"), "{text}");
    }
}

/// A diffusers folder is a `--model` like any checkpoint: DPS and DiffPIR restore a face with
/// the `ddpm_flat` fixture, and the run's JSON records its scheduler.
#[test]
fn restore_runs_on_a_diffusers_model() {
    for (method, op) in [("dps", "inpaint-box"), ("diffpir", "gaussian-blur")] {
        let out = tmp(&format!("restore-diffusers-{method}"));
        let o = out.to_str().unwrap();
        let text = ok(&[
            "restore",
            FACE,
            "--model",
            "tests/fixtures/diffusers/ddpm_flat",
            "--method",
            method,
            "--op",
            op,
            "--steps",
            "3",
            "--out",
            o,
        ]);
        assert!(text.contains("PSNR"), "{text}");
        let json = std::fs::read_to_string(out.join(format!("{method}_metrics.json"))).unwrap();
        assert!(
            json.contains("diffusers UNet2DModel")
                && json.contains("fixed_small")
                && json.contains("sha256"),
            "{json}"
        );
    }
    fails(
        &[
            "restore",
            FACE,
            "--model",
            "tests/fixtures/diffusers/ddpm_flat",
            "--config",
            "tests/fixtures/adm/config.json",
        ],
        "carries its own config.json",
    );
    fails(
        &["restore", FACE, "--model", "tests/fixtures"],
        "not a diffusers model",
    );
}

/// Issue 35, item 16: a measured image and a mask given through a pipe (`/dev/stdin`) are
/// read (they failed with "Illegal seek", and `--measured` said the pipe did not exist); the
/// mask rule reads a 0/1 mask as 0/1, and the JSON says which rule it used.
#[cfg(target_os = "linux")]
#[test]
fn measured_image_and_mask_through_stdin() {
    let out = tmp("stdin-inputs");
    let o = out.to_str().unwrap();
    let sim = out.join("sim");
    ok(&with_model(
        vec!["restore", FACE, "--op", "inpaint-box", "--steps", "2"],
        sim.to_str().unwrap(),
    ));
    // The saved mask as 0/1 values, the usual NumPy uint8 mistake.
    let mask = image::open(sim.join("000444_mask.png")).unwrap().to_luma8();
    let zero_one = out.join("mask01.png");
    image::GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        image::Luma([u8::from(mask.get_pixel(x, y).0[0] > 127)])
    })
    .save(&zero_one)
    .unwrap();
    // A real pipe, as `cat FILE | tweedie …` gives (a file redirected with `<` is seekable).
    let piped = |args: Vec<&str>, file: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tweedie"))
            .current_dir(root())
            .args(with_model(args, o))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let bytes = std::fs::read(file).unwrap();
        let feed = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &bytes));
        let r = child.wait_with_output().unwrap();
        // (A command that fails early closes the pipe: its error text says why.)
        let _ = feed.join();
        let text = String::from_utf8_lossy(&r.stderr).into_owned();
        assert!(r.status.success(), "{text}");
        text
    };
    let y = sim.join("000444_measurement.png");
    let mask_arg = zero_one.to_str().unwrap();
    let base = ["--op", "inpaint-mask", "--method", "sdedit", "--steps", "2"];
    let mut measured = vec!["restore", "--measured", "/dev/stdin", "--mask", mask_arg];
    measured.extend(base);
    piped(measured, &y);
    let y = y.to_str().unwrap();
    let mut mask = vec!["restore", "--measured", y, "--mask", "/dev/stdin"];
    mask.extend(base);
    piped(mask, &zero_one);
    let json = std::fs::read_to_string(out.join("sdedit_metrics.json")).unwrap();
    assert!(
        json.contains("0/1 values") && json.contains("75.0% observed"),
        "{json}"
    );
}

/// A list flag naming one value twice is refused before any work (it would be counted twice:
/// "images 8" for 2 images), as is `--n-faces 0` (it said "no faces in DIR" of a folder with
/// faces).
#[test]
fn repeated_list_values_and_zero_faces_are_refused() {
    let out = tmp("repeats");
    let o = out.to_str().unwrap();
    for (args, needle) in [
        (
            vec![
                "eval",
                "assets/faces",
                "--methods",
                "sdedit,sdedit",
                "--ops",
                "inpaint-box",
            ],
            "--methods lists sdedit twice",
        ),
        (
            vec!["eval", "assets/faces", "--ops", "inpaint-box,inpaint-box"],
            "--ops lists inpaint-box twice",
        ),
        (vec!["denoise", FACE, "--t", "30,30"], "--t lists 30 twice"),
        (
            vec!["nfe", "--faces", "assets/faces", "--nfe-steps", "2,2"],
            "--nfe-steps lists 2 twice",
        ),
        (
            vec!["nfe", "--faces", "assets/faces", "--n-faces", "0"],
            "--n-faces must be ≥ 1",
        ),
    ] {
        let mut v = args;
        v.extend(["--out", o]);
        fails(&v, needle);
    }
}
