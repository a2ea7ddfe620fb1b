//! `cargo xtask bench --compare`: `tweedie bench` against PyTorch on the same ADM configs, in
//! one sitting, alternating the two per model and round, medians over rounds.
//!
//! The PyTorch side is `../shared/bench/pytorch_adm.py` (TorchScript exports of the configs in
//! `../shared/bench/models.json`, random weights) for the forward and training rows, and
//! `xtask/torch_dps.py` (the same TorchScript files) for the DPS step.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The measurements of one row, in table order: (key, label, unit, higher is better).
const MEASURES: [(&str, &str, &str, bool); 5] = [
    ("fwd1", "forward b1", "ms/img", false),
    ("fwd8", "forward b8", "ms/img", false),
    ("fwd32", "forward b32", "ms/img", false),
    ("dps", "DPS step b1", "ms", false),
    ("train", "train b32", "img/s", true),
];

/// One tweedie binary and backend to time.
pub struct Variant {
    /// Column name.
    pub label: String,
    /// The `tweedie` binary.
    pub bin: PathBuf,
    /// Its `--backend`.
    pub backend: String,
    /// Extra environment (LD_LIBRARY_PATH for LibTorch).
    pub env: Vec<(String, String)>,
}

/// Settings of a comparison run.
pub struct Options {
    pub root: PathBuf,
    pub python: Option<Python>,
    pub rounds: usize,
    pub threads: usize,
    pub reps: usize,
    pub models: Vec<String>,
    pub bench_dir: PathBuf,
    pub variants: Vec<Variant>,
    pub out: PathBuf,
}

/// A Python interpreter with torch.
#[derive(Clone)]
pub struct Python {
    pub exe: PathBuf,
    pub torch_version: String,
    /// torch's `lib` folder (libtorch for `--backend libtorch`).
    pub torch_lib: PathBuf,
}

/// `--python PATH`, else `$TWEEDIE_PYTHON`, else the first of the usual venv locations and
/// `python3` that imports torch. An explicit choice that cannot import torch is an error.
pub fn find_python(root: &Path, explicit: Option<String>) -> Result<Option<Python>> {
    let explicit = explicit.or_else(|| std::env::var("TWEEDIE_PYTHON").ok());
    if let Some(p) = explicit {
        return probe_python(Path::new(&p))
            .map(Some)
            .with_context(|| format!("{p} (from --python or TWEEDIE_PYTHON) cannot import torch"));
    }
    let candidates = [
        root.join("../torch-venv/bin/python"),
        root.join(".venv-torch/bin/python"),
        root.join("../shared/bench/.venv-torch/bin/python"),
        root.join(".venv/bin/python"),
        PathBuf::from("python3"),
    ];
    Ok(candidates.iter().find_map(|c| probe_python(c).ok()))
}

fn probe_python(exe: &Path) -> Result<Python> {
    let out = Command::new(exe)
        .args([
            "-c",
            "import os, torch; print(torch.__version__); print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    Ok(Python {
        exe: exe.to_path_buf(),
        torch_version: lines.next().unwrap_or_default().trim().to_string(),
        torch_lib: PathBuf::from(lines.next().unwrap_or_default().trim()),
    })
}

fn machine() -> String {
    let out = Command::new("lscpu").output().ok();
    out.and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_string()))
    })
    .unwrap_or_else(|| "unknown CPU".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs `tweedie bench` for one model; returns measure → value.
fn run_tweedie(o: &Options, v: &Variant, model: &str) -> Result<BTreeMap<String, f64>> {
    let json_path = o.root.join("target/bench_compare_tmp.json");
    let _ = std::fs::remove_file(&json_path);
    let threads = o.threads.to_string();
    let out = Command::new(&v.bin)
        .current_dir(&o.root)
        .args(["bench", "--backend", &v.backend, "--models", model])
        .args(["--only", "forward,dps,train", "--batches", "1,8,32"])
        .args(["--train-batch", "32", "--reps", &o.reps.to_string()])
        .arg("--json")
        .arg(&json_path)
        .env("RAYON_NUM_THREADS", &threads)
        .env("OMP_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads)
        .envs(v.env.iter().map(|(k, v)| (k, v)))
        .output()
        .with_context(|| format!("running {}", v.bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} bench --backend {} failed:\n{}{}",
            v.bin.display(),
            v.backend,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    let mut out = BTreeMap::new();
    for r in doc["rows"].as_array().into_iter().flatten() {
        let (kind, b) = (r["kind"].as_str().unwrap_or(""), r["batch"].as_u64());
        let (key, value) = match (kind, b) {
            ("forward", Some(b)) => (format!("fwd{b}"), r["ms_per_image"].as_f64()),
            ("dps", _) => ("dps".to_string(), r["ms"].as_f64()),
            ("train", _) => ("train".to_string(), r["images_per_s"].as_f64()),
            _ => continue,
        };
        if let Some(v) = r["min_ms"].as_f64() {
            out.insert(format!("{key}_min_ms"), v);
        }
        if let Some(value) = value {
            out.insert(key, value);
        }
        if let Some(p) = r["params"].as_u64() {
            out.insert("params".into(), p as f64);
        }
    }
    Ok(out)
}

/// Runs the PyTorch reference for one model; returns measure → value.
fn run_torch(o: &Options, py: &Python, model: &str) -> Result<BTreeMap<String, f64>> {
    let threads = o.threads.to_string();
    let script = o.bench_dir.join("pytorch_adm.py");
    let out = Command::new(&py.exe)
        .arg(&script)
        .args(["--threads", &threads, "--only", model])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{model} (")))
        .with_context(|| {
            format!(
                "no line for {model} in the output of {}: {text}",
                script.display()
            )
        })?;
    let mut m = BTreeMap::new();
    // "NAME (1.42 M): fwd b1 8.8 ms/img, fwd b8 6.2 ms/img, fwd b32 6.6 ms/img, train b32 62.7 img/s"
    let body = line.split_once("): ").map(|x| x.1).unwrap_or("");
    for item in body.split(", ") {
        let t: Vec<&str> = item.split_whitespace().collect();
        if let [what, batch, value, _unit] = t[..] {
            let v: f64 = value.parse().with_context(|| format!("parsing {item:?}"))?;
            match what {
                "fwd" => m.insert(format!("fwd{}", batch.trim_start_matches('b')), v),
                "train" => m.insert("train".into(), v),
                _ => None,
            };
        }
    }
    let dps_script = o.root.join("xtask/torch_dps.py");
    let out = Command::new(&py.exe)
        .arg(&dps_script)
        .args(["--threads", &threads, "--only", model, "--bench-dir"])
        .arg(&o.bench_dir)
        .output()
        .with_context(|| format!("running {}", dps_script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            dps_script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(v) = serde_json::from_str::<Value>(l)
            && let Some(ms) = v["dps_ms"].as_f64()
        {
            m.insert("dps".into(), ms);
        }
    }
    Ok(m)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Some(v[v.len() / 2])
}

/// Runs the comparison, prints the table and writes the JSON.
pub fn compare(o: Options) -> Result<()> {
    // The reference configs; without the bench folder, tweedie's own rows of the same names.
    let meta_path = o.bench_dir.join("models.json");
    let mut o = o;
    let meta: Value = match std::fs::read_to_string(&meta_path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", meta_path.display()))?,
        Err(_) => {
            if o.python.take().is_some() {
                println!(
                    "{} not found: the PyTorch reference needs ../shared/bench (or --bench-dir DIR); timing tweedie only",
                    meta_path.display()
                );
            }
            json!({"adm32_ch64": {}, "adm32_ch32_embedded": {}, "adm64_ch64": {}})
        }
    };
    let models: Vec<String> = if o.models.is_empty() {
        meta.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    } else {
        o.models.clone()
    };
    let cpu = machine();
    let load_before = loadavg();
    println!(
        "machine: {cpu}; {} threads; {} rounds; load average {load_before}",
        o.threads, o.rounds
    );
    match &o.python {
        Some(py) => println!("PyTorch {} ({})", py.torch_version, py.exe.display()),
        None => println!("PyTorch: no Python with torch found, timing tweedie only"),
    }
    // samples[model][column][measure] = one value per round.
    type Samples = BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>>;
    let mut samples: Samples = BTreeMap::new();
    let mut runs = Vec::new();
    for round in 1..=o.rounds {
        for model in &models {
            // tweedie, torch, tweedie, torch… (each tweedie column, then PyTorch).
            for v in &o.variants {
                eprintln!("round {round}/{}: {model}: tweedie {}", o.rounds, v.label);
                let r = run_tweedie(&o, v, model)?;
                runs.push(json!({"round": round, "model": model, "column": v.label, "values": r}));
                let col = samples
                    .entry(model.clone())
                    .or_default()
                    .entry(v.label.clone())
                    .or_default();
                for (k, x) in r {
                    col.entry(k).or_default().push(x);
                }
            }
            if let Some(py) = &o.python {
                eprintln!("round {round}/{}: {model}: PyTorch", o.rounds);
                let r = run_torch(&o, py, model)?;
                runs.push(
                    json!({"round": round, "model": model, "column": "pytorch", "values": r}),
                );
                let col = samples
                    .entry(model.clone())
                    .or_default()
                    .entry("pytorch".into())
                    .or_default();
                for (k, x) in r {
                    col.entry(k).or_default().push(x);
                }
            }
        }
    }
    let load_after = loadavg();
    // Medians and the table.
    let mut medians: BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>> = BTreeMap::new();
    for (model, cols) in &samples {
        for (col, ms) in cols {
            for (k, v) in ms {
                if let Some(m) = median(v.clone()) {
                    medians
                        .entry(model.clone())
                        .or_default()
                        .entry(col.clone())
                        .or_default()
                        .insert(k.clone(), m);
                }
            }
        }
    }
    let mut header = format!("{:<22} {:<22}", "model", "measure");
    if o.python.is_some() {
        header += &format!(" {:>10}", "PyTorch");
    }
    for v in &o.variants {
        header += &format!(" {:>12}", v.label);
        if o.python.is_some() {
            header += &format!(" {:>7}", "ratio");
        }
    }
    println!("\n{header}");
    println!("{}", "-".repeat(header.chars().count()));
    let mut table = Vec::new();
    for model in &models {
        let Some(cols) = medians.get(model) else {
            continue;
        };
        if let (Some(expected), Some(first)) = (
            meta[model]["params"].as_u64(),
            o.variants
                .first()
                .and_then(|v| cols.get(&v.label))
                .and_then(|c| c.get("params")),
        ) && expected as f64 != *first
        {
            println!("warning: {model}: tweedie has {first} parameters, models.json {expected}");
        }
        for (key, label, unit, higher_better) in MEASURES {
            let torch = cols.get("pytorch").and_then(|c| c.get(key)).copied();
            let mut line = format!("{:<22} {:<22}", model, format!("{label} ({unit})"));
            if o.python.is_some() {
                line += &torch.map_or(format!(" {:>10}", "—"), |t| format!(" {t:>10.2}"));
            }
            let mut entry = json!({"model": model, "measure": key, "unit": unit, "pytorch": torch});
            for v in &o.variants {
                let ours = cols.get(&v.label).and_then(|c| c.get(key)).copied();
                line += &ours.map_or(format!(" {:>12}", "—"), |x| format!(" {x:>12.2}"));
                // Ratio > 1: tweedie is that many times slower than PyTorch.
                let ratio = match (ours, torch) {
                    (Some(x), Some(t)) if higher_better => Some(t / x),
                    (Some(x), Some(t)) => Some(x / t),
                    _ => None,
                };
                if o.python.is_some() {
                    line += &ratio.map_or(format!(" {:>7}", "—"), |r| format!(" {r:>6.2}×"));
                }
                entry[&v.label] = json!(ours);
                entry[format!("{}_ratio", v.label)] = json!(ratio);
            }
            println!("{line}");
            table.push(entry);
        }
    }
    if o.python.is_some() {
        println!(
            "\nratio = tweedie time / PyTorch time (training: PyTorch img/s / tweedie img/s); > 1 means slower than PyTorch. Medians of {} alternating rounds; load average {load_before} before, {load_after} after.",
            o.rounds
        );
    } else {
        println!(
            "\nNo PyTorch to compare with. Install it (CPU wheels are enough) and rerun:\n  python3 -m venv /work/torch-venv && /work/torch-venv/bin/pip install torch==2.9.0 numpy\n  cargo xtask bench --compare --python /work/torch-venv/bin/python   (or set TWEEDIE_PYTHON)"
        );
    }
    let doc = json!({
        "machine": cpu,
        "threads": o.threads,
        "rounds": o.rounds,
        "reps": o.reps,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "pytorch": o.python.as_ref().map(|p| json!({"version": p.torch_version, "python": p.exe.display().to_string()})),
        "columns": o.variants.iter().map(|v| json!({"label": v.label, "bin": v.bin.display().to_string(), "backend": v.backend})).collect::<Vec<_>>(),
        "table": table,
        "medians": medians,
        "runs": runs,
    });
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", o.out.display()))?;
    println!("wrote {}", o.out.display());
    Ok(())
}
