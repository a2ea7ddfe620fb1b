//! Training end to end on a tiny synthetic data set: loss log, outputs, exact resume.

use burn::tensor::Device;
use std::path::{Path, PathBuf};
use tweedie_io::{Image, save_png};
use tweedie_train::{Start, TrainOptions, recover_checkpoint, train};
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

    let full = train(&options(&root, "full", 4), Start::New, &device, &mut |_| {}).unwrap();
    assert_eq!(full.steps, 4);
    assert_eq!(full.images, 6);
    assert_eq!(full.skipped, 1);

    let first = train(
        &options(&root, "split", 2),
        Start::New,
        &device,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(first.steps, 2);
    let second = train(
        &options(&root, "split", 4),
        Start::Resume,
        &device,
        &mut |_| {},
    )
    .unwrap();
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
    let err = train(
        &options(&root, "fresh", 2),
        Start::Resume,
        &device,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no checkpoint"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn empty_data_folder_is_an_error() {
    let root = std::env::temp_dir().join(format!("tweedie-train-empty-{}", std::process::id()));
    std::fs::create_dir_all(root.join("data")).unwrap();
    let err = train(
        &options(&root, "o", 1),
        Start::New,
        &Device::flex(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no readable"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

/// The error and its causes, `: `-joined, as the CLI prints them.
fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

fn fresh_root(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("tweedie-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("data")).unwrap();
    dataset(&root.join("data"));
    root
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap().path();
        std::fs::copy(&e, to.join(e.file_name().unwrap())).unwrap();
    }
}

/// Every state a kill can leave during the checkpoint swap (simulated on disk) resumes from
/// the newest complete checkpoint; nothing complete is a clear error.
#[test]
fn an_interrupted_checkpoint_swap_is_recovered() {
    let root = fresh_root("swap");
    let device = Device::flex();
    let (out, aside) = (root.join("run"), root.join("aside"));
    let (ck, tmp, old) = (
        out.join("checkpoint"),
        out.join("checkpoint.tmp"),
        out.join("checkpoint.old"),
    );
    // Two complete checkpoints: step 2 (kept aside) and step 4.
    train(&options(&root, "run", 2), Start::New, &device, &mut |_| {}).unwrap();
    copy_dir(&ck, &aside.join("step2"));
    train(
        &options(&root, "run", 4),
        Start::Resume,
        &device,
        &mut |_| {},
    )
    .unwrap();
    copy_dir(&ck, &aside.join("step4"));
    let reset = || {
        for d in [&ck, &tmp, &old] {
            let _ = std::fs::remove_dir_all(d);
        }
    };
    let resume_to_6 = || {
        train(
            &options(&root, "run", 6),
            Start::Resume,
            &device,
            &mut |_| {},
        )
    };

    // Killed after `checkpoint → checkpoint.old`, before `checkpoint.tmp → checkpoint`.
    reset();
    copy_dir(&aside.join("step4"), &tmp);
    copy_dir(&aside.join("step2"), &old);
    let note = recover_checkpoint(&out).unwrap().unwrap();
    assert!(
        note.contains("step 4") && note.contains("checkpoint.tmp"),
        "{note}"
    );
    assert_eq!(recover_checkpoint(&out).unwrap(), None);
    reset();
    copy_dir(&aside.join("step4"), &tmp);
    copy_dir(&aside.join("step2"), &old);
    let s = resume_to_6().unwrap();
    assert!(
        s.recovered
            .as_deref()
            .unwrap_or("")
            .contains("checkpoint.tmp")
    );
    assert_eq!((s.steps, s.steps_this_run), (6, 2));
    assert!(ck.join("state.json").exists() && !tmp.exists() && !old.exists());

    // Killed while writing checkpoint.tmp with no `checkpoint` (only checkpoint.old whole).
    reset();
    copy_dir(&aside.join("step4"), &tmp);
    std::fs::remove_file(tmp.join("state.json")).unwrap();
    let _ = std::fs::remove_file(tmp.join("complete.json"));
    copy_dir(&aside.join("step2"), &old);
    let s = resume_to_6().unwrap();
    assert_eq!((s.steps, s.steps_this_run), (6, 4));
    assert!(s.recovered.unwrap().contains("checkpoint.old"));

    // A damaged `checkpoint` (a file lost) with a complete checkpoint.tmp.
    reset();
    copy_dir(&aside.join("step2"), &ck);
    std::fs::remove_file(ck.join("optim.bpk")).unwrap();
    copy_dir(&aside.join("step4"), &tmp);
    let s = resume_to_6().unwrap();
    assert_eq!((s.steps, s.steps_this_run), (6, 2));
    assert!(s.recovered.unwrap().contains("checkpoint.incomplete"));
    assert!(!out.join("checkpoint.incomplete/optim.bpk").exists());

    // A complete checkpoint with a stale checkpoint.old beside it is used as it is.
    reset();
    copy_dir(&aside.join("step4"), &ck);
    copy_dir(&aside.join("step2"), &old);
    let s = resume_to_6().unwrap();
    assert_eq!((s.steps_this_run, s.recovered), (2, None));

    // Nothing complete: an error naming the folder, and nothing is deleted.
    reset();
    copy_dir(&aside.join("step4"), &tmp);
    std::fs::remove_file(tmp.join("state.json")).unwrap();
    let err = resume_to_6().unwrap_err().to_string();
    assert!(err.contains("checkpoint.tmp"), "{err}");
    assert!(tmp.exists(), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

/// A second run into the same folder without resume is refused (naming the folder); forcing
/// it starts over with a fresh loss log.
#[test]
fn a_rerun_without_resume_is_refused() {
    let root = fresh_root("rerun");
    let device = Device::flex();
    train(&options(&root, "run", 2), Start::New, &device, &mut |_| {}).unwrap();
    let before = std::fs::read(root.join("run/checkpoint/state.json")).unwrap();
    let err = train(&options(&root, "run", 3), Start::New, &device, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&root.join("run").display().to_string())
            && err.contains("--resume")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(root.join("run/checkpoint/state.json")).unwrap(),
        before
    );
    // Also when only an interrupted save's folders are left.
    std::fs::rename(root.join("run/checkpoint"), root.join("run/checkpoint.tmp")).unwrap();
    std::fs::remove_file(root.join("run/loss.csv")).unwrap();
    std::fs::remove_file(root.join("run/model.safetensors")).unwrap();
    let err = train(&options(&root, "run", 3), Start::New, &device, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("checkpoint.tmp"), "{err}");
    assert!(root.join("run/checkpoint.tmp/state.json").exists());
    // Forcing starts over: one header, three steps.
    let s = train(
        &options(&root, "run", 3),
        Start::Overwrite,
        &device,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(s.steps_this_run, 3);
    let log = losses(&root.join("run"));
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(!root.join("run/checkpoint.tmp").exists());
    std::fs::remove_dir_all(&root).ok();
}

/// Resume refuses an EMA file without the network's tensors, and names every damaged file.
#[test]
fn resume_refuses_a_damaged_checkpoint_naming_the_file() {
    let root = fresh_root("damaged");
    let device = Device::flex();
    train(&options(&root, "run", 2), Start::New, &device, &mut |_| {}).unwrap();
    let ck = root.join("run/checkpoint");
    let good = root.join("good");
    copy_dir(&ck, &good);
    let resume = || {
        train(
            &options(&root, "run", 3),
            Start::Resume,
            &device,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string()
    };
    // An EMA file with only one of the tensors.
    let mut ema = WeightMap::load(ck.join("ema.safetensors")).unwrap();
    let (k, s) = ema
        .shapes()
        .next()
        .map(|(k, s)| (k.clone(), s.clone()))
        .unwrap();
    let v = ema.take(&k, &s).unwrap();
    let one = std::iter::once((k, (s, v))).collect();
    WeightMap::save_safetensors(&one, &ck.join("ema.safetensors")).unwrap();
    let err = resume();
    assert!(
        err.contains("ema.safetensors") && err.contains("missing"),
        "{err}"
    );
    // A broken state.json and optimizer file.
    copy_dir(&good, &ck);
    std::fs::write(ck.join("state.json"), b"{not json").unwrap();
    let err = resume();
    assert!(err.contains("state.json"), "{err}");
    copy_dir(&good, &ck);
    std::fs::write(ck.join("optim.bpk"), b"garbage").unwrap();
    let err = resume();
    assert!(err.contains("optim.bpk"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

/// A zero crop, a crop larger than an image, and a non-finite or negative gradient clip are
/// errors, not an all-black data set or silently disabled clipping.
#[test]
fn bad_crop_and_grad_clip_are_errors() {
    let root = fresh_root("crop");
    let device = Device::flex();
    let run = |f: &dyn Fn(&mut TrainOptions)| {
        let mut o = options(&root, "run", 1);
        f(&mut o);
        chain_text(&train(&o, Start::New, &device, &mut |_| {}).unwrap_err())
    };
    let err = run(&|o| o.crop = Some(0));
    assert!(err.contains("crop") && err.contains("≥ 1"), "{err}");
    let err = run(&|o| o.crop = Some(100));
    assert!(err.contains("100") && err.contains("40×36"), "{err}");
    for bad in [f64::NAN, -1.0, f64::INFINITY] {
        let err = run(&|o| o.grad_clip = Some(bad));
        assert!(err.contains("gradient clip"), "{bad}: {err}");
    }
    std::fs::remove_dir_all(&root).ok();
}

fn weights(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let mut w = WeightMap::load(path).unwrap();
    let shapes: Vec<(String, Vec<usize>)> =
        w.shapes().map(|(k, s)| (k.clone(), s.clone())).collect();
    shapes
        .into_iter()
        .map(|(k, s)| {
            let v = w.take(&k, &s).unwrap();
            (k, v)
        })
        .collect()
}

/// The EMA kept on the device follows θ̄_s = d_s·θ̄_{s−1} + (1 − d_s)·θ_s from θ̄_0 = θ_0, with
/// d_s = min(decay, (1 + s)/(10 + s)), and is what the checkpoint and model.safetensors hold.
#[test]
fn the_ema_follows_its_formula_step_by_step() {
    let root = fresh_root("ema");
    let device = Device::flex();
    let mut o1 = options(&root, "one", 1);
    o1.checkpoint_every = 1;
    train(&o1, Start::New, &device, &mut |_| {}).unwrap();
    let mut o2 = options(&root, "two", 2);
    o2.checkpoint_every = 1;
    train(&o2, Start::New, &device, &mut |_| {}).unwrap();
    let theta0 = tweedie_unet::UNet::init(&o1.unet, o1.seed, &device)
        .unwrap()
        .export();
    let theta1 = weights(&root.join("one/checkpoint/model.safetensors"));
    let ema1 = weights(&root.join("one/checkpoint/ema.safetensors"));
    let theta2 = weights(&root.join("two/checkpoint/model.safetensors"));
    let ema2 = weights(&root.join("two/checkpoint/ema.safetensors"));
    assert_eq!(ema2, weights(&root.join("two/model.safetensors")));
    let (d1, d2) = (0.9f64.min(2.0 / 11.0), 0.9f64.min(3.0 / 12.0));
    let (mut worst, mut moved) = (0f64, 0f64);
    for (k, (_, t0)) in &theta0 {
        for i in 0..t0.len() {
            let e1 = d1 * t0[i] as f64 + (1.0 - d1) * theta1[k][i] as f64;
            let e2 = d2 * e1 + (1.0 - d2) * theta2[k][i] as f64;
            worst = worst
                .max((ema1[k][i] as f64 - e1).abs())
                .max((ema2[k][i] as f64 - e2).abs());
            moved = moved.max((theta2[k][i] - t0[i]).abs() as f64);
        }
    }
    assert!(moved > 1e-4, "the weights did not change: {moved}");
    assert!(worst < 1e-6, "EMA off its formula by {worst}");
    std::fs::remove_dir_all(&root).ok();
}

/// With `learn_sigma` the network has 6 output channels, the loss log carries the VLB term,
/// the config and checkpoint record the setting, a resume continues exactly, and resuming
/// with the other setting is refused.
#[test]
fn learned_sigma_trains_records_and_resumes() {
    let root = fresh_root("sigma");
    let device = Device::flex();
    let sigma = |out: &str, steps: usize| {
        let mut o = options(&root, out, steps);
        o.unet.learn_sigma = true;
        o
    };
    train(&sigma("full", 4), Start::New, &device, &mut |_| {}).unwrap();
    let mut vlbs = Vec::new();
    train(&sigma("split", 2), Start::New, &device, &mut |r| {
        vlbs.push(r.vlb)
    })
    .unwrap();
    assert!(
        vlbs.iter()
            .all(|v| v.is_some_and(|v| v.is_finite() && v > 0.0)),
        "{vlbs:?}"
    );
    let state = std::fs::read_to_string(root.join("split/checkpoint/state.json")).unwrap();
    assert!(state.contains("\"learn_sigma\":true"), "{state}");
    // Resuming without learned sigma is refused, naming the setting.
    let err = train(
        &options(&root, "split", 4),
        Start::Resume,
        &device,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("learn_sigma") && err.contains("state.json"),
        "{err}"
    );
    train(&sigma("split", 4), Start::Resume, &device, &mut |_| {}).unwrap();
    let (a, b) = (losses(&root.join("full")), losses(&root.join("split")));
    assert_eq!(a[0], "step,loss,lr,vlb");
    assert_eq!(a.len(), 5, "{a:?}");
    for (la, lb) in a.iter().zip(&b).skip(1) {
        let cols =
            |l: &str| -> Vec<f64> { l.split(',').skip(1).map(|c| c.parse().unwrap()).collect() };
        let (va, vb) = (cols(la), cols(lb));
        assert_eq!(va.len(), 3, "{la}");
        for (x, y) in va.iter().zip(&vb) {
            assert!((x - y).abs() < 1e-4 * x.abs().max(1.0), "{la} vs {lb}");
        }
        // loss = MSE + (T/1000)·VLB with T = 1000: the loss exceeds the VLB term.
        assert!(va[0] > va[2], "{la}");
    }
    let cfg = UNetConfig::from_json_file(root.join("full/model.json")).unwrap();
    assert!(cfg.learn_sigma && cfg.out_channels() == 6);
    tweedie_unet::UNet::load(&cfg, root.join("full/model.safetensors"), &device).unwrap();
    std::fs::remove_dir_all(&root).ok();
}
