//! The periodic evaluation: `eval.csv` rows at the right steps, a validation loss that is a
//! deterministic function of the network (and equals a hand computation), the callback's
//! columns, and a resume that drops the rows after its checkpoint.

use burn::tensor::Device;
use std::path::{Path, PathBuf};
use tweedie_core::{NoiseSource, Schedule};
use tweedie_io::{Image, save_png};
use tweedie_train::{
    Dataset, DatasetOptions, EvalPoint, Evaluation, Start, TrainOptions, train_with_eval,
    validation_loss,
};
use tweedie_unet::{UNet, UNetConfig};

fn dataset(dir: &Path, n: usize, offset: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let mut img = Image::filled(20, 20, 0.0);
        for (j, v) in img.data.iter_mut().enumerate() {
            *v = ((((j + offset) * (i + 3)) % 13) as f32 / 6.5) - 1.0;
        }
        save_png(&img, dir.join(format!("img{i}.png"))).unwrap();
    }
}

fn options(root: &Path, out: &str, steps: usize) -> TrainOptions {
    TrainOptions {
        data: root.join("train"),
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
        seed: 3,
    }
}

fn rows(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("eval.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

#[test]
fn eval_csv_has_val_loss_and_callback_columns_and_survives_resume() {
    let root: PathBuf =
        std::env::temp_dir().join(format!("tweedie-train-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    dataset(&root.join("train"), 5, 0);
    dataset(&root.join("val"), 3, 7);
    let device = Device::flex();
    let val = Dataset::load(
        &root.join("val"),
        &DatasetOptions {
            size: 16,
            crop: None,
        },
    )
    .unwrap();

    // The callback sees the EMA network at each evaluated step.
    let mut seen = Vec::new();
    let mut extra = |p: &EvalPoint| -> Result<Vec<(String, f64)>, tweedie_train::BoxedSource> {
        seen.push((p.step, p.images_seen));
        Ok(vec![("custom".into(), p.step as f64 * 10.0)])
    };
    train_with_eval(
        &options(&root, "run", 5),
        Start::New,
        &device,
        &mut |_| {},
        Some(Evaluation {
            every: 2,
            val: Some(&val),
            extra: Some(&mut extra),
        }),
    )
    .unwrap();
    assert_eq!(
        seen,
        vec![(2, 4), (4, 8), (5, 10)],
        "every 2 steps and the last"
    );
    let r = rows(&root.join("run"));
    assert_eq!(
        r[0],
        ["step", "images_seen", "train_seconds", "val_loss", "custom"]
    );
    assert_eq!(r.len(), 4);
    let steps: Vec<&str> = r[1..].iter().map(|x| x[0].as_str()).collect();
    assert_eq!(steps, ["2", "4", "5"]);
    assert_eq!(r[3][4].parse::<f64>().unwrap(), 50.0);
    let val_losses: Vec<f64> = r[1..].iter().map(|x| x[3].parse().unwrap()).collect();
    assert!(val_losses.iter().all(|v| v.is_finite() && *v > 0.0));
    // Training seconds accumulate.
    let secs: Vec<f64> = r[1..].iter().map(|x| x[2].parse().unwrap()).collect();
    assert!(secs[0] > 0.0 && secs[0] <= secs[1] && secs[1] <= secs[2]);

    // The last row's val loss is the shipped EMA weights' validation loss.
    let shipped = UNet::load(
        &options(&root, "run", 5).unet,
        root.join("run/model.safetensors"),
        &device,
    )
    .unwrap();
    let schedule = Schedule::linear_default();
    let again = validation_loss(&shipped, &val, &schedule, &device).unwrap();
    assert!(
        (again - val_losses[2]).abs() < 1e-5,
        "{again} vs {}",
        val_losses[2]
    );

    // A run of 4 steps resumed to 5: the resumed run writes the row of step 5.
    let ck4 = root.join("run4");
    train_with_eval(
        &options(&root, "run4", 4),
        Start::New,
        &device,
        &mut |_| {},
        Some(Evaluation {
            every: 2,
            val: Some(&val),
            extra: None,
        }),
    )
    .unwrap();
    assert_eq!(rows(&ck4).len(), 3);
    // Rows after the checkpoint (left by a run killed after evaluating) are dropped on resume.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(ck4.join("eval.csv"))
            .unwrap();
        writeln!(f, "5,99,99,99").unwrap();
        writeln!(f, "9,99,99,99").unwrap();
    }
    train_with_eval(
        &options(&root, "run4", 5),
        Start::Resume,
        &device,
        &mut |_| {},
        Some(Evaluation {
            every: 2,
            val: Some(&val),
            extra: None,
        }),
    )
    .unwrap();
    let r4 = rows(&ck4);
    assert_eq!(r4.len(), 4, "{r4:?}");
    assert_eq!(r4[3][0], "5");
    // Same weights (exact resume) → the same val loss as the uninterrupted run.
    let v5: f64 = r4[3][3].parse().unwrap();
    assert!(
        (v5 - val_losses[2]).abs() < 1e-5,
        "{v5} vs {}",
        val_losses[2]
    );

    // Resuming with other evaluation columns is refused (the checkpoint stays).
    let mut other = |_: &EvalPoint| -> Result<Vec<(String, f64)>, tweedie_train::BoxedSource> {
        Ok(vec![("fd_alex".into(), 1.0)])
    };
    let err = train_with_eval(
        &options(&root, "run4", 6),
        Start::Resume,
        &device,
        &mut |_| {},
        Some(Evaluation {
            every: 2,
            val: Some(&val),
            extra: Some(&mut other),
        }),
    )
    .unwrap_err();
    assert!(err.to_string().contains("same evaluation options"), "{err}");
    assert!(ck4.join("checkpoint").is_dir());

    // A zero interval is refused.
    let err = train_with_eval(
        &options(&root, "zero", 1),
        Start::New,
        &device,
        &mut |_| {},
        Some(Evaluation {
            every: 0,
            val: Some(&val),
            extra: None,
        }),
    )
    .unwrap_err();
    assert!(err.to_string().contains("evaluation interval"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

/// `validation_loss` is the formula: stratified t_i = 1 + ⌊(i + ½)T/n⌋, noise from its fixed
/// seed in one draw per 64 images, mean over images of the per-image ε-MSE.
#[test]
fn validation_loss_equals_a_hand_computation() {
    let root: PathBuf =
        std::env::temp_dir().join(format!("tweedie-train-valloss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    dataset(&root.join("val"), 3, 1);
    let device = Device::flex();
    let val = Dataset::load(
        &root.join("val"),
        &DatasetOptions {
            size: 16,
            crop: None,
        },
    )
    .unwrap();
    let cfg = UNetConfig::small(16, 32, &[1.0, 1.0], &[8]);
    let net = UNet::init(&cfg, 1, &device).unwrap();
    let schedule = Schedule::linear_default();
    let got = validation_loss(&net, &val, &schedule, &device).unwrap();

    let mut rng = NoiseSource::new(0x7661_6c5f_6c6f_7373);
    let eps = tweedie_core::tensor::to_vec(&rng.normal([3, 3, 16, 16], &device));
    let mut total = 0.0f64;
    // t_i = 1 + ⌊(i + ½)·1000/3⌋.
    for (i, (img, t)) in val.images().iter().zip([167, 501, 834]).enumerate() {
        let (a, s) = (
            schedule.sqrt_alpha_bar[t],
            schedule.sqrt_one_minus_alpha_bar[t],
        );
        let e = &eps[i * 768..(i + 1) * 768];
        let x_t: Vec<f32> = img
            .data
            .iter()
            .zip(e)
            .map(|(x, n)| (a * *x as f64 + s * *n as f64) as f32)
            .collect();
        let x = tweedie_core::tensor::from_vec(x_t, [1, 3, 16, 16], &device);
        let pred = tweedie_core::tensor::to_vec(&net.forward(x, &[(t - 1) as f32]));
        let mse = pred
            .iter()
            .zip(e)
            .map(|(p, n)| ((p - n) as f64).powi(2))
            .sum::<f64>()
            / 768.0;
        total += mse;
    }
    let want = total / 3.0;
    assert!((got - want).abs() < 1e-5 * want.max(1.0), "{got} vs {want}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A run trained with other GroupNorm groups is not resumed with the default (the weights
/// would load, as a different function).
#[test]
fn resume_refuses_other_norm_groups() {
    let root: PathBuf =
        std::env::temp_dir().join(format!("tweedie-train-groups-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    dataset(&root.join("train"), 3, 0);
    let device = Device::flex();
    let mut opts = options(&root, "run", 1);
    opts.unet.norm_groups = 8;
    tweedie_train::train(&opts, Start::New, &device, &mut |_| {}).unwrap();
    let mut again = options(&root, "run", 2);
    let err = tweedie_train::train(&again, Start::Resume, &device, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("norm_groups = 8"), "{err}");
    again.unet.norm_groups = 8;
    tweedie_train::train(&again, Start::Resume, &device, &mut |_| {}).unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
