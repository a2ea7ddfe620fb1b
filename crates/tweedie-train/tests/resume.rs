//! Training end to end on a tiny synthetic data set: loss log, outputs, exact resume.

use burn::tensor::Device;
use std::path::{Path, PathBuf};
use tweedie_io::{Image, save_png};
use tweedie_train::{TrainOptions, train};
use tweedie_unet::{UNetConfig, WeightMap};

fn dataset(dir: &Path) {
    for i in 0..6 {
        let mut img = Image::filled(40, 36, 0.0);
        for (j, v) in img.data.iter_mut().enumerate() {
            *v = (((j * (i + 3)) % 17) as f32 / 8.5) - 1.0;
        }
        save_png(&img, dir.join(format!("img{i}.png"))).unwrap();
    }
    std::fs::write(dir.join("broken.png"), b"not a png").unwrap();
}

fn options(root: &Path, out: &str, steps: usize) -> TrainOptions {
    TrainOptions {
        data: root.join("data"),
        out: root.join(out),
        unet: UNetConfig::small(16, 32, &[1.0, 1.0], &[8]),
        crop: None,
        batch_size: 2,
        steps,
        lr: 1e-3,
        warmup: 2,
        ema_decay: 0.9,
        grad_clip: Some(1.0),
        checkpoint_every: 2,
        seed: 5,
    }
}

fn losses(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("loss.csv"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn resume_continues_exactly_like_an_uninterrupted_run() {
    let root: PathBuf = std::env::temp_dir().join(format!("tweedie-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("data")).unwrap();
    dataset(&root.join("data"));
    let device = Device::flex();

    let full = train(&options(&root, "full", 4), false, &device, &mut |_| {}).unwrap();
    assert_eq!(full.steps, 4);
    assert_eq!(full.images, 6);
    assert_eq!(full.skipped, 1);

    let first = train(&options(&root, "split", 2), false, &device, &mut |_| {}).unwrap();
    assert_eq!(first.steps, 2);
    let second = train(&options(&root, "split", 4), true, &device, &mut |_| {}).unwrap();
    assert_eq!((second.steps, second.steps_this_run), (4, 2));

    let (a, b) = (losses(&root.join("full")), losses(&root.join("split")));
    assert_eq!(a.len(), 5, "{a:?}");
    for (la, lb) in a.iter().zip(&b).skip(1) {
        let va: f64 = la.split(',').nth(1).unwrap().parse().unwrap();
        let vb: f64 = lb.split(',').nth(1).unwrap().parse().unwrap();
        assert!((va - vb).abs() < 1e-4 * va.abs().max(1.0), "{la} vs {lb}");
    }
    // Final EMA weights agree to float noise.
    let wa = WeightMap::load(root.join("full/model.safetensors")).unwrap();
    let mut wb = WeightMap::load(root.join("split/model.safetensors")).unwrap();
    let mut worst = 0f32;
    for (k, s) in wa.shapes() {
        let vb = wb.take(k, s).unwrap();
        let mut wa2 = wa.clone();
        let va = wa2.take(k, s).unwrap();
        worst = va
            .iter()
            .zip(&vb)
            .map(|(x, y)| (x - y).abs())
            .fold(worst, f32::max);
    }
    assert!(worst < 1e-5, "max weight difference {worst}");
    // The saved model loads with its config.
    let cfg = UNetConfig::from_json_file(root.join("full/model.json")).unwrap();
    tweedie_unet::UNet::load(&cfg, root.join("full/model.safetensors"), &device).unwrap();
    // Resume without a checkpoint is a clear error.
    let err = train(&options(&root, "fresh", 2), true, &device, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("no checkpoint"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn empty_data_folder_is_an_error() {
    let root = std::env::temp_dir().join(format!("tweedie-train-empty-{}", std::process::id()));
    std::fs::create_dir_all(root.join("data")).unwrap();
    let err = train(&options(&root, "o", 1), false, &Device::flex(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("no readable"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}
