//! Difficulty-matched operator calibration (`tweedie::calibrate`) on small synthetic images,
//! plus an ignored test printing the real FFHQ-256 vs CelebA-32 table when the data exist.

use burn::tensor::{Device, Tensor};
use std::path::PathBuf;
use tweedie::calibrate::{
    CalibrationError, Knob, calibrate, gaussian_blur_spec, measurement_image, measurement_psnr,
    search, table,
};
use tweedie::core::NoiseSource;
use tweedie::operators::{
    Blur, DPS_OPERATOR_NAMES, Mask, Operator, OperatorSpec, Resizer, build, measure,
};

const SIGMA: f64 = 0.05;

/// `n` smooth random `[1, 3, side, side]` images in [−1, 1]: white noise blurred (σ = side/8)
/// and stretched, then clamped.
fn smooth_images(n: usize, side: usize, seed: u64) -> Vec<Tensor<4>> {
    let d = Device::flex();
    let mut noise = NoiseSource::new(seed);
    let s = side as f64 / 8.0;
    let blur = Blur::gaussian(gaussian_size(s, side), s).unwrap();
    (0..n)
        .map(|_| {
            let w = noise.normal([1, 3, side, side], &d);
            blur.forward(w).mul_scalar(3.0 * s).clamp(-1.0, 1.0)
        })
        .collect()
}

fn gaussian_size(sigma: f64, side: usize) -> usize {
    match gaussian_blur_spec(sigma, side) {
        OperatorSpec::GaussianBlur { size, .. } => size,
        _ => unreachable!(),
    }
}

#[test]
fn identity_without_noise_is_perfect_and_gaussian_psnr_falls_with_sigma() {
    let d = Device::flex();
    let imgs = smooth_images(3, 16, 1);
    let p = measurement_psnr(&OperatorSpec::Identity, &imgs, 0.0, 0, &d).unwrap();
    assert!(p.is_infinite() || p > 100.0, "{p}");
    // σ_y = 0.05 alone: ≈ 10·log10(1/0.025²) = 32 dB (a little more after clamping).
    let noisy = measurement_psnr(&OperatorSpec::Identity, &imgs, SIGMA, 0, &d).unwrap();
    assert!((31.5..34.0).contains(&noisy), "{noisy}");
    let mut last = f64::INFINITY;
    for s in [0.3, 0.6, 1.0, 1.5, 2.5, 4.0] {
        let p = measurement_psnr(&gaussian_blur_spec(s, 16), &imgs, SIGMA, 0, &d).unwrap();
        assert!(p < last, "σ = {s}: {p} dB not below {last}");
        last = p;
    }
}

#[test]
fn gaussian_blur_spec_follows_truncate_four_and_the_cap() {
    assert_eq!(
        gaussian_blur_spec(3.0, 256),
        OperatorSpec::GaussianBlur {
            size: 25,
            sigma: 3.0
        }
    );
    assert_eq!(gaussian_size(0.1, 32), 1);
    assert_eq!(gaussian_size(0.375, 32), 5); // ⌊1.5 + 0.5⌋ = 2
    assert_eq!(gaussian_size(0.3, 32), 3);
    assert_eq!(gaussian_size(10.0, 16), 31); // radius 40 capped at 15
}

#[test]
fn measurement_image_uses_the_pseudo_inverse_for_masks_and_sr_and_y_for_blurs() {
    let d = Device::flex();
    let x = smooth_images(1, 16, 2).remove(0);
    let dims = x.dims();
    let mut noise = NoiseSource::new(3);
    let mask = Mask::center_box(16, 16, 8, &d).unwrap();
    let y = measure(&mask, x.clone(), SIGMA, &mut noise).unwrap();
    let v = measurement_image(&mask, y.clone(), dims);
    // Inside the hole the noise is gone: A⁺y = m ⊙ y.
    let diff = tweedie::core::tensor::to_vec(&(v - mask.forward(y)).abs().max())[0];
    assert!(diff < 1e-7);
    let sr = Resizer::new(16, 16, 4).unwrap();
    let y = measure(&sr, x.clone(), SIGMA, &mut noise).unwrap();
    assert_eq!(y.dims(), [1, 3, 4, 4]);
    assert_eq!(measurement_image(&sr, y, dims).dims(), dims);
    let blur = Blur::gaussian(5, 1.0).unwrap();
    let y = measure(&blur, x, SIGMA, &mut noise).unwrap();
    let v = measurement_image(&blur, y.clone(), dims);
    let diff = tweedie::core::tensor::to_vec(&(v - y).abs().max())[0];
    assert_eq!(diff, 0.0);
}

#[test]
fn gaussian_search_round_trips_a_known_sigma() {
    let d = Device::flex();
    let imgs = smooth_images(3, 16, 4);
    let known = 1.3;
    let target = measurement_psnr(&gaussian_blur_spec(known, 16), &imgs, SIGMA, 7, &d).unwrap();
    let found = search(Knob::GaussianSigma, &imgs, target, SIGMA, 7, &d).unwrap();
    assert!(
        (found.psnr - target).abs() < 0.1,
        "{} dB vs target {target}",
        found.psnr
    );
    let s = found.value.unwrap();
    assert!((s - known).abs() < 0.2, "σ = {s}");
    assert_eq!(found.spec, Some(gaussian_blur_spec(s, 16)));
    // A target above the reachable range gives the weakest blur, below it the strongest.
    let weak = search(Knob::GaussianSigma, &imgs, 200.0, SIGMA, 7, &d).unwrap();
    assert_eq!(weak.value, Some(tweedie::calibrate::SIGMA_MIN));
    let strong = search(Knob::GaussianSigma, &imgs, 0.0, SIGMA, 7, &d).unwrap();
    assert_eq!(strong.value, Some(16.0));
}

#[test]
fn scans_pick_the_known_box_side_motion_size_and_resize_output() {
    let d = Device::flex();
    let imgs = smooth_images(3, 16, 5);
    let boxed = OperatorSpec::InpaintBox {
        size: 6,
        random_margin: None,
    };
    let target = measurement_psnr(&boxed, &imgs, SIGMA, 9, &d).unwrap();
    let found = search(Knob::CentredBoxSide, &imgs, target, SIGMA, 9, &d).unwrap();
    assert_eq!(found.spec, Some(boxed));
    assert_eq!(found.value, Some(6.0));
    assert_eq!(found.psnr, target);

    let motion = OperatorSpec::MotionBlur {
        size: 7,
        intensity: tweedie::calibrate::MOTION_INTENSITY,
    };
    let target = measurement_psnr(&motion, &imgs, SIGMA, 9, &d).unwrap();
    let found = search(Knob::MotionSize, &imgs, target, SIGMA, 9, &d).unwrap();
    assert_eq!(found.spec, Some(motion));

    let sr = OperatorSpec::SuperResolution { factor: 4 };
    let target = measurement_psnr(&sr, &imgs, SIGMA, 9, &d).unwrap();
    let found = search(Knob::ResizeOutput, &imgs, target, SIGMA, 9, &d).unwrap();
    assert_eq!(found.value, Some(4.0));
    assert_eq!(found.spec, Some(sr));
    assert!((found.psnr - target).abs() < 1e-3);
}

#[test]
fn empty_lists_and_bad_inputs_are_errors() {
    let d = Device::flex();
    let imgs = smooth_images(1, 16, 6);
    let e = measurement_psnr(&OperatorSpec::Identity, &[], SIGMA, 0, &d).unwrap_err();
    assert!(matches!(e, CalibrationError::NoImages(_)), "{e}");
    assert!(search(Knob::BoxFactor, &[], 20.0, SIGMA, 0, &d).is_err());
    assert!(calibrate(&[], &imgs, &["gaussian-blur"], SIGMA, 0, &d).is_err());
    assert!(calibrate(&imgs, &[], &["gaussian-blur"], SIGMA, 0, &d).is_err());
    // Unknown operator, bad σ, a NaN target, a one-channel image.
    let e = calibrate(&imgs, &imgs, &["nope"], SIGMA, 0, &d).unwrap_err();
    assert!(matches!(e, CalibrationError::Operator(_)), "{e}");
    assert!(measurement_psnr(&OperatorSpec::Identity, &imgs, -1.0, 0, &d).is_err());
    assert!(search(Knob::CentredBoxSide, &imgs, f64::NAN, SIGMA, 0, &d).is_err());
    let gray = vec![Tensor::<4>::zeros([1, 1, 8, 8], &d)];
    let e = measurement_psnr(&OperatorSpec::Identity, &gray, SIGMA, 0, &d).unwrap_err();
    assert!(
        matches!(e, CalibrationError::BadImage { index: 0, .. }),
        "{e}"
    );
    // A spec the small images cannot take is an operator error, not a panic.
    let big = OperatorSpec::GaussianBlur {
        size: 61,
        sigma: 3.0,
    };
    assert!(matches!(
        measurement_psnr(&big, &imgs, SIGMA, 0, &d).unwrap_err(),
        CalibrationError::Operator(_)
    ));
}

#[test]
fn calibrate_covers_every_dps_operator_and_does_no_worse_than_pixel_scaling() {
    let d = Device::flex();
    let reference = smooth_images(2, 64, 10);
    let small = smooth_images(3, 16, 11);
    let cals = calibrate(&reference, &small, DPS_OPERATOR_NAMES, SIGMA, 3, &d).unwrap();
    assert_eq!(cals.len(), DPS_OPERATOR_NAMES.len());
    for c in &cals {
        assert_eq!(
            c.reference.spec,
            Some(OperatorSpec::dps_default(&c.name, 64).unwrap())
        );
        assert_eq!(
            c.pixel_scaled.spec,
            Some(OperatorSpec::dps_default(&c.name, 16).unwrap())
        );
        assert_eq!((c.reference.side, c.chosen.side), (64, 16));
        assert_eq!((c.reference.images, c.chosen.images), (2, 3));
        let target = c.reference.psnr;
        let (e_chosen, e_naive) = (
            (c.chosen.psnr - target).abs(),
            (c.pixel_scaled.psnr - target).abs(),
        );
        match c.knob {
            None => assert_eq!(c.chosen, c.pixel_scaled, "{}", c.name),
            Some(_) => assert!(
                e_chosen <= e_naive + 0.1,
                "{}: matched off by {e_chosen}, pixel scaling by {e_naive}",
                c.name
            ),
        }
        assert_eq!(c.integer_factor.is_some(), c.name == "sr4", "{}", c.name);
        // Every expressible choice builds at the small size.
        if let Some(spec) = &c.chosen.spec {
            build(spec, 16, 16, &mut NoiseSource::new(0), &d).unwrap();
        }
    }
    let json = serde_json::to_string(&cals).unwrap();
    let back: Vec<tweedie::calibrate::Calibration> = serde_json::from_str(&json).unwrap();
    assert_eq!(back.len(), cals.len());
    let t = table(&cals);
    assert_eq!(t.lines().count(), 2 + cals.len());
    assert!(t.contains("gaussian-blur"));
}

/// The workspace's `../shared/data` (beside the workspace root).
fn shared_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

#[test]
#[ignore = "slow: the real FFHQ-256 vs CelebA-32 calibration table"]
fn real_ffhq256_vs_celeba32_table() {
    use tweedie::io::{Image, list_images, load_image, load_image_sized, to_tensor};
    let (ffhq, celeba) = (
        shared_data().join("ffhq256"),
        shared_data().join("celeba/val"),
    );
    if !ffhq.is_dir() || !celeba.is_dir() {
        eprintln!(
            "skipped: {} or {} missing",
            ffhq.display(),
            celeba.display()
        );
        return;
    }
    let d = Device::flex();
    let tensor = |img: Image| to_tensor(&[img], &d).unwrap();
    let reference: Vec<Tensor<4>> = list_images(&ffhq)
        .unwrap()
        .into_iter()
        .map(|p| tensor(load_image_sized(p, 256).unwrap()))
        .collect();
    // As tweedie_train::prepare with DatasetOptions { size: 32, crop: Some(140) }.
    let small: Vec<Tensor<4>> = list_images(&celeba)
        .unwrap()
        .into_iter()
        .take(32)
        .map(|p| {
            let img = load_image(p).unwrap();
            let c = 140.min(img.width).min(img.height);
            let sq = img.crop((img.width - c) / 2, (img.height - c) / 2, c, c);
            tensor(sq.resize(32, 32))
        })
        .collect();
    let start = std::time::Instant::now();
    let cals = calibrate(&reference, &small, DPS_OPERATOR_NAMES, SIGMA, 0, &d).unwrap();
    println!(
        "{} FFHQ-256 images vs {} CelebA-32 faces, σ_y = {SIGMA}, seed 0 ({:.0} s)\n",
        reference.len(),
        small.len(),
        start.elapsed().as_secs_f64()
    );
    println!("{}", table(&cals));
    for c in &cals {
        println!("{}: {}", c.name, c.note);
    }
    println!("\n{}", serde_json::to_string_pretty(&cals).unwrap());
}
