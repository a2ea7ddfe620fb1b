//! `tweedie eval` (every method × operator over a folder, shardable) and `tweedie merge`.
//!
//! Each image gets the seed `seed + its index in the sorted folder`, so results do not depend
//! on how the folder is split into shards: `--shard i/n` processes the images with index ≡ i
//! (mod n) and writes `eval_shard_i_of_n.json`; `merge` combines a complete set of shards into
//! `metrics.json`, `metrics.csv` and `metrics.md`.

use crate::args::value_name;
use crate::model;
use crate::output::check_out;
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tweedie::tasks::{self, Method, Scores};
use tweedie_io::{Grid, GridCell};
use tweedie_metrics::Lpips;
use tweedie_operators::OperatorSpec;
use tweedie_samplers::{Observer, StepInfo};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub common: crate::args::Common,
    #[command(flatten)]
    pub solver: crate::args::SolverArgs,
    /// Folder of ground-truth images.
    pub folder: PathBuf,
    /// Methods to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sdedit,ald,dps"
    )]
    pub methods: Vec<tweedie_samplers::Method>,
    /// Operators (DPS settings scaled to the model resolution).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "inpaint-box,gaussian-blur"
    )]
    pub ops: Vec<crate::operator_args::OpArg>,
    #[command(flatten)]
    pub operator: crate::operator_args::OperatorArgs,
    /// This job's shard, `i/n` (0-based i), e.g. from a Slurm array index.
    #[arg(long, default_value = "0/1")]
    pub shard: String,
    /// Centre-crop side before resizing.
    #[arg(long)]
    pub crop: Option<usize>,
    /// Fail on an unreadable image instead of skipping it with a warning.
    #[arg(long)]
    pub strict: bool,
    /// Images restored at once, in one batched chain. The results do not depend on it: each
    /// image draws its operator, measurement noise and sampler noise from its own seed.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Shard files or folders holding `eval_shard_*_of_*.json`.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write metrics.json / .csv / .md.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
}

/// One image's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    index: usize,
    /// The image's path relative to the folder, without the extension (`s1/face`).
    image: String,
    method: String,
    op: String,
    scores: Scores,
}

/// A shard's output file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardFile {
    shard: usize,
    shards: usize,
    total_images: usize,
    settings: serde_json::Value,
    records: Vec<Record>,
    /// This shard's images that could not be read (skipped).
    #[serde(default)]
    skipped: Vec<String>,
}

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .context("--shard must look like i/n, e.g. 0/4")?;
    let (i, n): (usize, usize) = (
        i.trim().parse().context("shard index")?,
        n.trim().parse().context("shard count")?,
    );
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 ≤ i < n");
    }
    Ok((i, n))
}

pub fn run(a: EvalArgs) -> Result<()> {
    let c = &a.common;
    let (shard, shards) = parse_shard(&a.shard)?;
    let methods: Vec<Method> = a.methods.clone();
    crate::args::refuse_repeats("--methods", &methods, crate::args::value_name)?;
    crate::args::refuse_repeats("--ops", &a.ops, crate::args::value_name)?;
    a.solver.validate()?;
    if a.batch == 0 {
        bail!("--batch must be ≥ 1");
    }
    let inputs = crate::inputs::named_inputs(std::slice::from_ref(&a.folder))?;
    check_out(&c.out)?;
    let device = model::device(c.backend.as_str())?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let schedule = net.schedule().clone();
    let size = net.image_size();
    let specs: Vec<(String, OperatorSpec)> = a
        .ops
        .iter()
        .map(|&o| Ok((o.name(), a.operator.spec(o, size)?)))
        .collect::<Result<_>>()?;
    let lpips = Lpips::alex_default(&device)?;
    // Indices (and so seeds and shards) count every image, readable or not.
    let (mine, skipped) = crate::inputs::readable(
        inputs
            .iter()
            .enumerate()
            .filter(|(i, _)| i % shards == shard)
            .collect(),
        a.strict,
        |p| crate::inputs::load_cropped(p, a.crop, size),
    )?;
    let mut records = Vec::new();
    // Without a terminal, a line per image × method × operator with an ETA.
    let mut progress = Progress::new(
        mine.len() * methods.len() * specs.len(),
        &format!("eval shard {shard}/{shards}"),
    );
    for &method in &methods {
        for (op_name, spec) in &specs {
            let mut grid = Grid::new(96).with_titles(&["ground truth", "measured", "restored"]);
            for chunk in mine.chunks(a.batch) {
                let mut imgs = Vec::with_capacity(chunk.len());
                for (_, input) in chunk {
                    imgs.push(crate::inputs::load_cropped(&input.path, a.crop, size)?);
                }
                let x = tweedie_io::to_tensor(&imgs, &device)?;
                let seeds: Vec<u64> = chunk
                    .iter()
                    .map(|&(index, _)| c.seed.wrapping_add(index as u64))
                    .collect();
                let settings = a
                    .solver
                    .settings(method, spec.clone(), seeds[0], c.variance)?
                    .for_model(&net);
                let rs = tasks::restore_each(
                    &net,
                    &schedule,
                    &x,
                    &settings,
                    &seeds,
                    &device,
                    &mut Observer::with_progress(|_: StepInfo| {}),
                )?;
                for ((r, img), &(index, input)) in rs.into_iter().zip(imgs).zip(chunk) {
                    let truth = tweedie_io::to_tensor(std::slice::from_ref(&img), &device)?;
                    let s = tasks::score(&lpips, &r.reconstruction, &truth)?[0];
                    let name = input.name.clone();
                    let rec = tweedie_io::from_tensor(&r.reconstruction)?.remove(0);
                    let dir = c
                        .out
                        .join(format!("{}_{op_name}", method.to_string().to_lowercase()));
                    tweedie_io::save_png(&rec, dir.join(format!("{name}.png")))?;
                    // The kernel or mask this image was measured with, beside its result.
                    if let Some(parent) = dir.join(&name).parent() {
                        std::fs::create_dir_all(parent)
                            .with_context(|| format!("creating {}", parent.display()))?;
                    }
                    r.operator.save_params(&dir, &name)?;
                    grid.push_row(vec![
                        GridCell::new(img, ""),
                        GridCell::new(tweedie_io::from_tensor(&r.measurement_image)?.remove(0), ""),
                        GridCell::new(rec, &s.caption()),
                    ]);
                    progress.inc(
                        1,
                        &format!("{method} {op_name} {name}: PSNR {:.2} dB", s.psnr),
                    );
                    records.push(Record {
                        index,
                        image: name,
                        method: method.to_string(),
                        op: op_name.clone(),
                        scores: s,
                    });
                }
            }
            grid.save(c.out.join(format!(
                "grid_{}_{op_name}_shard{shard}.png",
                method.to_string().to_lowercase()
            )))?;
        }
    }
    progress.finish();
    let settings = serde_json::json!({"model": c.model, "network": net.describe(), "steps": a.solver.steps, "sigma": a.solver.sigma, "t0": a.solver.t0, "preset": value_name(&a.solver.preset), "zeta": a.solver.zeta, "dps_step": a.solver.dps_step.as_ref().map(value_name), "variance": c.variance.as_ref().map(value_name), "ald_rule": a.solver.ald_rule.as_ref().map(value_name), "lambda": a.solver.lambda, "ald_scale": a.solver.ald_scale, "eta": a.solver.eta, "seed": c.seed, "crop": a.crop, "methods": a.methods.iter().map(value_name).collect::<Vec<_>>(), "ops": specs, "folder": a.folder});
    let file = ShardFile {
        shard,
        shards,
        total_images: inputs.len(),
        settings,
        records,
        skipped: skipped
            .iter()
            .map(|s| s.path.display().to_string())
            .collect(),
    };
    let path = c.out.join(format!("eval_shard_{shard}_of_{shards}.json"));
    tweedie_io::write_atomic(&path, serde_json::to_string_pretty(&file)?.as_bytes())?;
    println!("wrote {}", path.display());
    if shards > 1 && !skipped.is_empty() {
        eprintln!(
            "warning: {} of {} images of shard {shard}/{shards} skipped (unreadable): {}",
            skipped.len(),
            skipped.len() + mine.len(),
            crate::inputs::first_ten(&file.skipped)
        );
    }
    if shards == 1 {
        merge(MergeArgs {
            inputs: vec![path],
            out: c.out.clone(),
        })?;
    }
    Ok(())
}

fn shard_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            for e in std::fs::read_dir(p).with_context(|| format!("reading {}", p.display()))? {
                let e = e?.path();
                let name = e
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if name.starts_with("eval_shard_") && name.ends_with(".json") {
                    out.push(e);
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn read_shard(p: &Path) -> Result<ShardFile> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not an eval shard file", p.display()))
}

/// Checks shard files before they are merged: each has `shard < shards`, all come from one
/// job (the same `shards`, settings and image count), no shard is given twice or missing, and
/// every record's image index belongs to its file's shard. Returns the number of shards.
fn check_shards(shards: &[(PathBuf, ShardFile)]) -> Result<usize> {
    let (first_path, first) = &shards[0];
    let n = first.shards;
    let mut seen: Vec<Option<&Path>> = vec![None; n];
    for (p, s) in shards {
        if s.shard >= s.shards {
            bail!(
                "{}: shard {} of {} is out of range: a shard file needs 0 ≤ shard < shards",
                p.display(),
                s.shard,
                s.shards
            );
        }
        if s.shards != n {
            bail!(
                "{} is shard {}/{} but {} is shard {}/{n}: the files come from differently split jobs",
                p.display(),
                s.shard,
                s.shards,
                first_path.display(),
                first.shard
            );
        }
        let weights = |f: &ShardFile| f.settings["network"]["sha256"]["weights"].clone();
        if weights(s) != weights(first) {
            bail!(
                "{} (shard {}/{n}) was made with other weights than {} (shard {}/{n}): weights SHA-256 {} vs {}",
                p.display(),
                s.shard,
                first_path.display(),
                first.shard,
                weights(s),
                weights(first)
            );
        }
        if s.settings != first.settings || s.total_images != first.total_images {
            bail!(
                "{} (shard {}/{n}) was made with other settings or images than {} (shard {}/{n})",
                p.display(),
                s.shard,
                first_path.display(),
                first.shard
            );
        }
        if let Some(prev) = seen[s.shard].replace(p) {
            bail!(
                "shard {}/{n} given twice: {} and {}",
                s.shard,
                prev.display(),
                p.display()
            );
        }
        if let Some(r) = s
            .records
            .iter()
            .find(|r| r.index >= s.total_images || r.index % n != s.shard)
        {
            bail!(
                "{}: the record of image {} (index {}) does not belong to shard {}/{n} of {} images",
                p.display(),
                r.image,
                r.index,
                s.shard,
                s.total_images
            );
        }
    }
    if let Some(missing) = seen.iter().position(|s| s.is_none()) {
        bail!("shard {missing}/{n} is missing: merge needs all {n} shards");
    }
    Ok(n)
}

pub fn merge(a: MergeArgs) -> Result<()> {
    check_out(&a.out)?;
    let files = shard_files(&a.inputs)?;
    if files.is_empty() {
        bail!("no eval_shard_*.json files in the inputs");
    }
    let shards: Vec<(PathBuf, ShardFile)> = files
        .into_iter()
        .map(|p| read_shard(&p).map(|s| (p, s)))
        .collect::<Result<_>>()?;
    let n = check_shards(&shards)?;
    let total_images = shards[0].1.total_images;
    let skipped: Vec<String> = shards
        .iter()
        .flat_map(|(_, s)| s.skipped.iter().cloned())
        .collect();
    let mut records: Vec<Record> = shards.into_iter().flat_map(|(_, s)| s.records).collect();
    records.sort_by(|x, y| (&x.method, &x.op, x.index).cmp(&(&y.method, &y.op, y.index)));
    let mut groups: Vec<((String, String), Vec<Scores>)> = Vec::new();
    for r in &records {
        let key = (r.method.clone(), r.op.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r.scores),
            None => groups.push((key, vec![r.scores])),
        }
    }
    let mut csv = String::from("method,operator,images,psnr,ssim,lpips\n");
    let mut md = String::from(
        "| method | operator | images | PSNR (dB) | SSIM | LPIPS |\n|---|---|---|---|---|---|\n",
    );
    let mut table = Vec::new();
    for ((method, op), v) in &groups {
        let m = Scores::mean(v);
        csv.push_str(&format!(
            "{method},{op},{},{:.4},{:.5},{:.5}\n",
            v.len(),
            m.psnr,
            m.ssim,
            m.lpips
        ));
        md.push_str(&format!(
            "| {method} | {op} | {} | {:.2} | {:.3} | {:.4} |\n",
            v.len(),
            m.psnr,
            m.ssim,
            m.lpips
        ));
        table.push(serde_json::json!({"method": method, "op": op, "images": v.len(), "mean": m}));
    }
    let json = serde_json::json!({"table": table, "records": records, "skipped": skipped});
    tweedie_io::write_atomic(
        &a.out.join("metrics.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    tweedie_io::write_atomic(&a.out.join("metrics.csv"), csv.as_bytes())?;
    tweedie_io::write_atomic(&a.out.join("metrics.md"), md.as_bytes())?;
    print!("{md}");
    println!("merged {} shard(s) into {}", n, a.out.display());
    if !skipped.is_empty() {
        eprintln!(
            "warning: {} of {total_images} images skipped (unreadable): {}",
            skipped.len(),
            crate::inputs::first_ten(&skipped)
        );
    }
    Ok(())
}
