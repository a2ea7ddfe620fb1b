//! `tweedie bench`: UNet forward and training-step timings.

use crate::model;
use anyhow::Result;
use burn::tensor::Tensor;
use clap::Args;
use serde_json::json;
use std::time::Instant;
use tweedie_core::NoiseSource;
use tweedie_unet::{UNet, UNetConfig};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// `cpu` or `wgpu`.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Also time the FFHQ-256 config (93.6 M parameters; slow on CPU).
    #[arg(long)]
    pub ffhq: bool,
    /// Run only these parts (comma-separated: forward, train, sampler, lpips); default all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn sync(x: &Tensor<4>) {
    // Reading one value forces the (possibly asynchronous) backend to finish.
    let _ = tweedie_core::tensor::to_vec(&x.clone().slice([0..1, 0..1, 0..1, 0..1]));
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let device = model::device(&a.backend)?;
    let mut configs = vec![
        (
            "adm32 (train config: 64ch, mult 1,2,2, attn 16,8)",
            UNetConfig::small(32, 64, &[1.0, 2.0, 2.0], &[16, 8]),
            vec![1usize, 8, 32],
        ),
        (
            "adm64 (64ch, mult 1,2,2,2, attn 16,8)",
            UNetConfig::small(64, 64, &[1.0, 2.0, 2.0, 2.0], &[16, 8]),
            vec![1, 8],
        ),
    ];
    if a.ffhq {
        configs.push((
            "ffhq256 (DPS FFHQ checkpoint config)",
            UNetConfig::ffhq256(),
            vec![1],
        ));
    }
    for part in &a.only {
        if !["forward", "train", "sampler", "lpips"].contains(&part.as_str()) {
            anyhow::bail!("unknown bench part {part:?}: expected forward, train, sampler or lpips");
        }
    }
    let wants = |part: &str| a.only.is_empty() || a.only.iter().any(|p| p == part);
    if !wants("forward") {
        configs.clear();
    }
    let mut rows = Vec::new();
    for (name, cfg, batches) in configs {
        let net = UNet::init(&cfg, 0, &device)?;
        let params = net.num_parameters();
        for b in batches {
            let x = NoiseSource::new(1).normal([b, 3, cfg.image_size, cfg.image_size], &device);
            let ts = vec![500.0f32; b];
            sync(&net.forward(x.clone(), &ts)); // warm-up
            let times: Vec<f64> = (0..a.reps)
                .map(|_| {
                    let t0 = Instant::now();
                    sync(&net.forward(x.clone(), &ts));
                    t0.elapsed().as_secs_f64()
                })
                .collect();
            let m = median(times);
            println!(
                "{name}: {:.2} M params, batch {b}: forward {:.1} ms/batch, {:.1} ms/image",
                params as f64 / 1e6,
                m * 1e3,
                m * 1e3 / b as f64
            );
            rows.push(json!({"config": name, "params": params, "batch": b, "forward_ms_per_batch": m * 1e3, "forward_ms_per_image": m * 1e3 / b as f64}));
        }
    }
    // One training step (forward + backward + Adam): the issue's reference config at batch 32
    // and the shipped embedded model's config at its training batch (16).
    let mut train_configs = vec![(
        "adm32 train step".to_string(),
        UNetConfig::small(32, 64, &[1.0, 2.0, 2.0], &[16, 8]),
        32usize,
    )];
    if let Ok(text) = std::fs::read_to_string(model::assets_dir().join("model.json")) {
        train_configs.push((
            "embedded-model train step".to_string(),
            serde_json::from_str(&text)?,
            16,
        ));
    }
    if !wants("train") {
        train_configs.clear();
    }
    for (name, cfg, b) in train_configs {
        let (m, fb, params) = train_step_time(&cfg, b, a.reps, &device)?;
        println!(
            "{name} ({:.2} M params) batch {b}: {:.0} ms (forward+backward {:.0} ms) → {:.1} images/s",
            params as f64 / 1e6,
            m * 1e3,
            fb * 1e3,
            b as f64 / m
        );
        rows.push(json!({"config": name, "batch": b, "step_ms": m * 1e3, "forward_backward_ms": fb * 1e3, "images_per_sec": b as f64 / m}));
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
            &net,
            &schedule,
            [1, 3, 32, 32],
            &opts,
            &mut NoiseSource::new(0),
            &device,
            &mut Observer::default(),
        )?;
        sync(&out.x0);
        let ms = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
        println!("sampler step, fixture UNet 32×32, batch 1: ancestral (generate) {ms:.1} ms/step");
        rows.push(json!({"sampler": "generate", "ms_per_step": ms}));
        for method in [Method::Sdedit, Method::Ald, Method::Dps] {
            let op = OperatorSpec::InpaintBox {
                size: 16,
                random_margin: None,
            };
            let settings = RestoreSettings {
                steps,
                t0: 1000,
                ..RestoreSettings::new(method, Preset::Dps, op)
            };
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
            rows.push(json!({"sampler": method.to_string(), "ms_per_step": ms}));
        }
    }
    // LPIPS-alex on one 256×256 pair (weights loaded once, outside the timing).
    if wants("lpips") {
        let lpips = tweedie_metrics::Lpips::alex_default(&device)?;
        let mut n = NoiseSource::new(5);
        let x = n.normal([1, 3, 256, 256], &device).clamp(-1.0, 1.0);
        let y = n.normal([1, 3, 256, 256], &device).clamp(-1.0, 1.0);
        lpips.distance(&x, &y)?;
        let times: Vec<f64> = (0..a.reps.max(3))
            .map(|_| {
                let t0 = Instant::now();
                let _ = lpips.distance(&x, &y);
                t0.elapsed().as_secs_f64()
            })
            .collect();
        let m = median(times);
        println!("LPIPS-alex, one 256×256 pair: {:.1} ms", m * 1e3);
        rows.push(json!({"lpips_alex_256_pair_ms": m * 1e3}));
    }
    if let Some(p) = &a.json {
        tweedie_io::write_atomic(p, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(())
}

/// Median wall time of one training step (forward + backward + Adam) and of its
/// forward + backward part, over `reps` steps after one warm-up step, and the parameter count.
fn train_step_time(
    cfg: &UNetConfig,
    b: usize,
    reps: usize,
    device: &burn::tensor::Device,
) -> Result<(f64, f64, usize)> {
    use burn::optim::{AdamConfig, GradientsParams};
    let ad = device.clone().autodiff();
    let mut net = UNet::init(cfg, 0, &ad)?;
    let params = net.num_parameters();
    let mut optim = AdamConfig::new().init();
    let s = cfg.image_size;
    let (mut times, mut fwd_bwd) = (Vec::new(), Vec::new());
    for i in 0..=reps {
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
        let _ = net.export().len();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
            fwd_bwd.push(t1);
        }
    }
    Ok((median(times), median(fwd_bwd), params))
}
