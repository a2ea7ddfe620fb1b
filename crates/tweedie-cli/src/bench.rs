//! `tweedie bench`: UNet forward, DPS-step and training-step timings.
//!
//! The UNet rows use the configs of `../shared/bench/models.json` (the PyTorch reference's
//! TorchScript exports, random weights) under the same names, batch sizes and measurements as
//! `../shared/bench/pytorch_adm.py`, so `cargo xtask bench --compare` can put the two side by
//! side: forward at batch 1, 8, 32 (per image), one DPS step (forward + backward through the
//! UNet with respect to its input, batch 1) and one Adam training step at batch 32.

use crate::model;
use anyhow::{Result, bail};
use burn::tensor::Tensor;
use clap::Args;
use serde_json::{Value, json};
use std::time::Instant;
use tweedie_core::NoiseSource;
use tweedie_unet::{UNet, UNetConfig};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// `cpu` (flex), `wgpu` or `libtorch` (builds with those features).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// UNet configs to time (comma-separated; names of `../shared/bench/models.json`):
    /// adm32_ch64, adm32_ch32_embedded, adm64_ch64. Default: all three.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Forward batch sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 32])]
    pub batches: Vec<usize>,
    /// Batch of the training step.
    #[arg(long, default_value_t = 32)]
    pub train_batch: usize,
    /// Also time the FFHQ-256 config's forward at batch 1 (93.6 M parameters; slow on CPU).
    #[arg(long)]
    pub ffhq: bool,
    /// Run only these parts (comma-separated: forward, dps, train, sampler, lpips); default all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// The benchmark configs, named as in `../shared/bench/models.json` (guided-diffusion
/// `create_model` arguments; parameter counts there: 5 660 867, 1 421 411, 7 829 443).
pub fn bench_configs() -> Vec<(&'static str, UNetConfig)> {
    vec![
        (
            "adm32_ch64",
            UNetConfig::small(32, 64, &[1.0, 2.0, 2.0], &[16, 8]),
        ),
        ("adm32_ch32_embedded", model::embedded_config()),
        (
            "adm64_ch64",
            UNetConfig::small(64, 64, &[1.0, 2.0, 2.0, 2.0], &[16, 8]),
        ),
    ]
}

const PARTS: [&str; 5] = ["forward", "dps", "train", "sampler", "lpips"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn sync(x: &Tensor<4>) {
    // Reading one value forces the (possibly asynchronous) backend to finish.
    let _ = tweedie_core::tensor::to_vec(&x.clone().slice([0..1, 0..1, 0..1, 0..1]));
}

/// Seconds of `f` over `reps` calls after one warm-up call: (median, fastest).
fn timed(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    (median(times), min)
}

/// The worker threads the CPU backends use: `RAYON_NUM_THREADS` (flex) when set, else the
/// available cores.
fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let device = model::device(&a.backend)?;
    for part in &a.only {
        if !PARTS.contains(&part.as_str()) {
            bail!(
                "unknown bench part {part:?}: expected one of {}",
                PARTS.join(", ")
            );
        }
    }
    let wants = |part: &str| a.only.is_empty() || a.only.iter().any(|p| p == part);
    let all = bench_configs();
    for m in &a.models {
        if !all.iter().any(|(n, _)| n == m) {
            let names: Vec<_> = all.iter().map(|(n, _)| *n).collect();
            bail!("unknown bench model {m:?}: expected {}", names.join(", "));
        }
    }
    let configs: Vec<_> = all
        .into_iter()
        .filter(|(n, _)| a.models.is_empty() || a.models.iter().any(|m| m == n))
        .collect();
    println!("backend {}, {} threads", a.backend, threads());
    let mut rows: Vec<Value> = Vec::new();
    for (name, cfg) in &configs {
        let params = cfg.parameter_count()? as usize;
        let s = cfg.image_size;
        if wants("forward") || wants("dps") {
            let net = UNet::init(cfg, 0, &device)?;
            if wants("forward") {
                for &b in &a.batches {
                    let x = NoiseSource::new(1).normal([b, 3, s, s], &device);
                    let ts = vec![500.0f32; b];
                    let (m, fastest) = timed(a.reps, || sync(&net.forward(x.clone(), &ts)));
                    println!(
                        "{name} ({:.2} M): forward batch {b}: {:.1} ms/batch, {:.2} ms/image",
                        params as f64 / 1e6,
                        m * 1e3,
                        m * 1e3 / b as f64
                    );
                    rows.push(row(name, params, "forward", b, m, fastest));
                }
            }
            if wants("dps") {
                // DPS's gradient: ∇_x of a squared norm of the UNet output, the network's
                // parameters untracked (as `tweedie_samplers::dps_step` runs it).
                let b = 1;
                let x0 = NoiseSource::new(2).normal([b, 3, s, s], &device);
                let ts = vec![500.0f32; b];
                let (m, fastest) = timed(a.reps, || {
                    let x = x0.clone().autodiff().require_grad();
                    let loss = net
                        .forward(x.clone(), &ts)
                        .narrow(1, 0, 3)
                        .powf_scalar(2.0)
                        .sum();
                    let g = x.grad(&loss.backward()).expect("x requires grad");
                    sync(&g);
                });
                println!(
                    "{name} ({:.2} M): DPS step (forward + input gradient) batch {b}: {:.1} ms",
                    params as f64 / 1e6,
                    m * 1e3
                );
                rows.push(row(name, params, "dps", b, m, fastest));
            }
        }
        if wants("train") {
            let b = a.train_batch;
            let (m, fb, fastest) = train_step_time(cfg, b, a.reps, &device)?;
            println!(
                "{name} ({:.2} M): train step batch {b}: {:.0} ms (forward+backward {:.0} ms) → {:.1} images/s",
                params as f64 / 1e6,
                m * 1e3,
                fb * 1e3,
                b as f64 / m
            );
            let mut r = row(name, params, "train", b, m, fastest);
            r["forward_backward_ms"] = json!(fb * 1e3);
            rows.push(r);
        }
    }
    if a.ffhq && wants("forward") {
        let cfg = UNetConfig::ffhq256();
        let net = UNet::init(&cfg, 0, &device)?;
        let params = cfg.parameter_count()? as usize;
        let x = NoiseSource::new(1).normal([1, 3, 256, 256], &device);
        let (m, fastest) = timed(a.reps, || sync(&net.forward(x.clone(), &[500.0])));
        println!(
            "ffhq256 ({:.2} M): forward batch 1: {:.0} ms",
            params as f64 / 1e6,
            m * 1e3
        );
        rows.push(row("ffhq256", params, "forward", 1, m, fastest));
    }
    // Time per step of each sampler on the ADM fixture's config (32×32, 1.4 M parameters).
    if wants("sampler") {
        use tweedie::tasks::{Method, Preset, RestoreSettings};
        use tweedie_operators::OperatorSpec;
        use tweedie_samplers::{ChainOptions, Observer};
        let cfg: UNetConfig = serde_json::from_str(
            r#"{"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2,2", "attention_resolutions": "16,8",
                "num_head_channels": 16, "use_scale_shift_norm": true, "resblock_updown": true, "learn_sigma": true}"#,
        )?;
        let net = tweedie_unet::UNetEps {
            net: UNet::init(&cfg, 0, &device)?,
        };
        let schedule = tweedie_core::Schedule::linear_default();
        let steps = 20;
        let x = NoiseSource::new(3)
            .normal([1, 3, 32, 32], &device)
            .clamp(-1.0, 1.0);
        let t0 = Instant::now();
        let opts = ChainOptions {
            steps,
            ..Default::default()
        };
        let out = tweedie_samplers::generate(
            &tweedie_samplers::Denoiser::new(&net, &schedule),
            [1, 3, 32, 32],
            &opts,
            &mut NoiseSource::new(0),
            &device,
            &mut Observer::default(),
        )?;
        sync(&out.x0);
        let ms = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
        println!("sampler step, fixture UNet 32×32, batch 1: ancestral (generate) {ms:.1} ms/step");
        rows.push(json!({"kind": "sampler", "sampler": "generate", "ms_per_step": ms}));
        for &method in Method::ALL {
            let op = OperatorSpec::InpaintBox {
                size: 16,
                random_margin: None,
            };
            let knobs = tweedie::tasks::Knobs {
                t0: Some(1000),
                ..tweedie::tasks::Knobs::new(Preset::Dps, op, steps)
            };
            let settings = RestoreSettings::configure(method, &knobs)?;
            let t0 = Instant::now();
            let r = tweedie::tasks::restore(
                &net,
                &schedule,
                &x,
                &settings,
                &device,
                &mut Observer::default(),
            )?;
            sync(&r.reconstruction);
            let ms = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
            println!(
                "sampler step, fixture UNet 32×32, batch 1: {method} (inpainting) {ms:.1} ms/step"
            );
            rows.push(json!({"kind": "sampler", "sampler": method.to_string(), "ms_per_step": ms}));
        }
    }
    // LPIPS-alex on one 256×256 pair (weights loaded once, outside the timing).
    if wants("lpips") {
        let lpips = tweedie_metrics::Lpips::alex_default(&device)?;
        let mut n = NoiseSource::new(5);
        let x = n.normal([1, 3, 256, 256], &device).clamp(-1.0, 1.0);
        let y = n.normal([1, 3, 256, 256], &device).clamp(-1.0, 1.0);
        let (m, _) = timed(a.reps.max(3), || {
            let _ = lpips.distance(&x, &y);
        });
        println!("LPIPS-alex, one 256×256 pair: {:.1} ms", m * 1e3);
        rows.push(json!({"kind": "lpips", "lpips_alex_256_pair_ms": m * 1e3}));
    }
    if let Some(p) = &a.json {
        let doc = json!({"backend": a.backend, "threads": threads(), "reps": a.reps, "rows": rows});
        tweedie_io::write_atomic(p, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}

/// One UNet measurement: `seconds` (median) and `fastest` for one call at batch `b`.
fn row(model: &str, params: usize, kind: &str, b: usize, seconds: f64, fastest: f64) -> Value {
    json!({
        "model": model,
        "params": params,
        "kind": kind,
        "batch": b,
        "ms": seconds * 1e3,
        "ms_per_image": seconds * 1e3 / b as f64,
        "images_per_s": b as f64 / seconds,
        "min_ms": fastest * 1e3,
    })
}

/// Median wall time of one training step (ε-MSE, forward + backward + Adam), of its
/// forward + backward part, and the fastest step, over `reps` steps after one warm-up step.
fn train_step_time(
    cfg: &UNetConfig,
    b: usize,
    reps: usize,
    device: &burn::tensor::Device,
) -> Result<(f64, f64, f64)> {
    use burn::optim::{AdamConfig, GradientsParams};
    let ad = device.clone().autodiff();
    let mut net = UNet::init(cfg, 0, &ad)?;
    let mut optim = AdamConfig::new().init();
    let s = cfg.image_size;
    let (mut times, mut fwd_bwd) = (Vec::new(), Vec::new());
    for i in 0..=reps.max(1) {
        let x = NoiseSource::new(i as u64).normal([b, 3, s, s], &ad);
        let eps = NoiseSource::new(100 + i as u64).normal([b, 3, s, s], &ad);
        let t0 = Instant::now();
        let loss = (net.forward(x, &vec![300.0; b]).narrow(1, 0, 3) - eps)
            .powf_scalar(2.0)
            .mean();
        let grads = loss.backward();
        let t1 = t0.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(grads, &net);
        net = optim.step(1e-4, net, grads);
        // The step is done when the updated parameters can be read (asynchronous backends).
        let _ = net.export().len();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
            fwd_bwd.push(t1);
        }
    }
    let fastest = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((median(times), median(fwd_bwd), fastest))
}
