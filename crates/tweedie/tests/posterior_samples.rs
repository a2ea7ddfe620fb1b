//! `tasks::restore_measured` and `tasks::posterior_samples` on the linear-Gaussian inpainting
//! problem of `tweedie-samplers/tests/analytic.rs`, whose posterior is exact per pixel: prior
//! N(μ, s² I), y = M x* + σ n; observed pixels have posterior std sσ/√(s² + σ²), missing ones
//! keep the prior's s.

use burn::tensor::{Device, Tensor};
use tweedie::core::priors::GaussianPrior;
use tweedie::core::tensor::to_vec;
use tweedie::core::{NoiseSource, Schedule};
use tweedie::operators::{Mask, Operator, OperatorSpec, measure};
use tweedie::samplers::Observer;
use tweedie::tasks::{
    self, Method, Observation, PosteriorSamples, Preset, RestoreSettings, TaskError,
};

fn dev() -> Device {
    Device::flex()
}

const S2: f64 = 0.25;
const SIGMA: f64 = 0.05;
const SIDE: usize = 8;
const HOLE: usize = 4;

struct Problem {
    prior: GaussianPrior,
    mask: Mask,
    /// `[1, 3, 8, 8]`.
    y: Tensor<4>,
    post_mean: Tensor<4>,
}

/// The same problem as `inpainting_problem` in analytic.rs (same seeds).
fn problem() -> Problem {
    let d = dev();
    let mean = NoiseSource::new(20)
        .normal([1, 3, SIDE, SIDE], &d)
        .mul_scalar(0.3);
    let prior = GaussianPrior::isotropic(mean, S2).unwrap();
    let mask = Mask::center_box(SIDE, SIDE, HOLE, &d).unwrap();
    let mut noise = NoiseSource::new(21);
    let x_star = prior.sample(1, &mut noise);
    let y = measure(&mask, x_star, SIGMA, &mut noise).unwrap();
    let m = mask.tensor().clone();
    let obs_mean = (y.clone().mul_scalar(S2) + prior.mean.clone().mul_scalar(SIGMA * SIGMA))
        .div_scalar(S2 + SIGMA * SIGMA);
    let post_mean = obs_mean * m.clone() + prior.mean.clone() * m.neg().add_scalar(1.0);
    Problem {
        prior,
        mask,
        y,
        post_mean,
    }
}

/// The exact posterior std of observed and of missing pixels.
fn exact_std() -> (f64, f64) {
    (
        (S2 * SIGMA * SIGMA / (S2 + SIGMA * SIGMA)).sqrt(),
        S2.sqrt(),
    )
}

fn settings(method: Method) -> RestoreSettings {
    RestoreSettings {
        sigma: SIGMA,
        steps: 1000,
        clip_x0: false,
        seed: 31,
        ..RestoreSettings::new(
            method,
            Preset::Sheet,
            OperatorSpec::InpaintBox {
                size: HOLE,
                random_margin: None,
            },
        )
    }
}

/// √(mean of std²) over the observed and over the missing values of a `[1, 3, H, W]` (or
/// `[1, 1, H, W]`) std tensor: the pooled spread of each region.
fn pooled(std: &Tensor<4>, mask: &Mask) -> (f64, f64) {
    let c = std.dims()[1];
    let m = to_vec(&mask.tensor().clone().repeat_dim(1, c));
    let v = to_vec(std);
    let (mut obs, mut mis, mut n_obs, mut n_mis) = (0.0, 0.0, 0.0, 0.0);
    for (s, m) in v.iter().zip(&m) {
        let s2 = (*s as f64).powi(2);
        if *m > 0.5 {
            obs += s2;
            n_obs += 1.0;
        } else {
            mis += s2;
            n_mis += 1.0;
        }
    }
    ((obs / n_obs).sqrt(), (mis / n_mis).sqrt())
}

/// |got/want − 1| for both regions.
fn relative_errors(got: (f64, f64), want: (f64, f64)) -> (f64, f64) {
    ((got.0 / want.0 - 1.0).abs(), (got.1 / want.1 - 1.0).abs())
}

/// Relative tolerance on the pooled sample std of each region. With K = 64 samples the
/// sampling error of the pooled std is ≈ 0.8 % (observed: 144 values × 63 d.o.f.) and ≈ 1.3 %
/// (missing: 48 × 63); the rest is Score-ALD's own error. Identical samples (std 0) are off by
/// 100 %, a std over the wrong axis (channels, pixels) by far more than this (asserted below).
const STD_TOLERANCE: f64 = 0.10;
const K: usize = 64;

fn draw(method: Method) -> PosteriorSamples {
    let p = problem();
    tasks::posterior_samples(
        &p.prior,
        &Schedule::linear_default(),
        Observation::Measured {
            y: &p.y,
            image_size: [SIDE, SIDE],
        },
        &settings(method),
        K,
        &dev(),
        &mut Observer::default(),
    )
    .unwrap()
}

/// Score-ALD's samples spread like the exact posterior on observed (std ≈ 0.0498) and missing
/// (std 0.5) pixels, and their mean approaches the exact posterior mean. Measured (K = 64,
/// 1000 steps, seed 31): observed 0.0487 (−2.0 %), missing 0.5049 (+1.0 %).
#[test]
fn score_ald_posterior_samples_have_the_exact_per_pixel_std() {
    let p = problem();
    let out = draw(Method::ScoreAld);
    assert_eq!(out.samples.dims(), [K, 3, SIDE, SIDE]);
    assert_eq!(out.mean.dims(), [1, 3, SIDE, SIDE]);
    assert_eq!(out.std.dims(), [1, 3, SIDE, SIDE]);
    assert_eq!(out.std_map().dims(), [1, 1, SIDE, SIDE]);
    let want = exact_std();
    let got = pooled(&out.std, &p.mask);
    let (e_obs, e_mis) = relative_errors(got, want);
    eprintln!(
        "Score-ALD, K = {K}: sample std observed {:.4} (exact {:.4}, {:+.1} %), missing {:.4} (exact {:.4}, {:+.1} %)",
        got.0,
        want.0,
        (got.0 / want.0 - 1.0) * 100.0,
        got.1,
        want.1,
        (got.1 / want.1 - 1.0) * 100.0
    );
    assert!(
        e_obs < STD_TOLERANCE,
        "observed pixels: sample std {} vs exact {}",
        got.0,
        want.0
    );
    assert!(
        e_mis < STD_TOLERANCE,
        "missing pixels: sample std {} vs exact {}",
        got.1,
        want.1
    );
    // The channel-averaged map keeps the regions apart too.
    let map = pooled(&out.std_map(), &p.mask);
    assert!(map.0 < 1.5 * want.0 && map.1 > 0.8 * want.1, "{map:?}");

    // The mean: within 4 standard errors (std/√K) of the exact posterior mean (Score-ALD's
    // own bias on the observed pixels is ≈ 2.4 of them; a mean that ignores y is ≈ 0.5 off).
    let err = |region: bool| {
        let m = to_vec(&p.mask.tensor().clone().repeat_dim(1, 3));
        let d = to_vec(&(out.mean.clone() - p.post_mean.clone()));
        let v: Vec<f64> = d
            .iter()
            .zip(&m)
            .filter(|(_, m)| (**m > 0.5) == region)
            .map(|(d, _)| (*d as f64).powi(2))
            .collect();
        (v.iter().sum::<f64>() / v.len() as f64).sqrt()
    };
    let (m_obs, m_mis) = (err(true), err(false));
    eprintln!(
        "mean's RMSE to the exact posterior mean: observed {m_obs:.4} (std/√K = {:.4}), missing {m_mis:.4} (std/√K = {:.4})",
        want.0 / (K as f64).sqrt(),
        want.1 / (K as f64).sqrt()
    );
    assert!(m_obs < 4.0 * want.0 / (K as f64).sqrt(), "{m_obs}");
    assert!(m_mis < 4.0 * want.1 / (K as f64).sqrt(), "{m_mis}");

    // What broken implementations would report fails the same tolerance:
    // all samples identical (one chain repeated) …
    let first = out.samples.clone().narrow(0, 0, 1).repeat_dim(0, K);
    let same = pooled(&first.var(0).sqrt(), &p.mask);
    let (a, b) = relative_errors(same, want);
    assert!(
        a > STD_TOLERANCE && b > STD_TOLERANCE,
        "identical: {same:?}"
    );
    // … the std over the channels of each sample (then averaged over the samples) …
    let over_channels = out.samples.clone().var(1).sqrt().mean_dim(0);
    let wrong = pooled(&over_channels, &p.mask);
    let (a, b) = relative_errors(wrong, want);
    eprintln!(
        "std over the channels instead: observed {:.4}, missing {:.4}",
        wrong.0, wrong.1
    );
    assert!(
        a > STD_TOLERANCE || b > STD_TOLERANCE,
        "channels: {wrong:?}"
    );
    // … and the std over the pixels of each sample, broadcast to every pixel.
    let [k, c, h, w] = out.samples.dims();
    let over_pixels = out
        .samples
        .clone()
        .reshape([k, c, h * w])
        .var(2)
        .sqrt()
        .mean_dim(0)
        .reshape([1, c, 1, 1])
        .repeat_dim(2, h)
        .repeat_dim(3, w);
    let wrong = pooled(&over_pixels, &p.mask);
    let (a, b) = relative_errors(wrong, want);
    eprintln!(
        "std over the pixels instead: observed {:.4}, missing {:.4}",
        wrong.0, wrong.1
    );
    assert!(a > STD_TOLERANCE || b > STD_TOLERANCE, "pixels: {wrong:?}");
}

/// DPS's samples are distinct (per-item noise and per-item residual rule) and the observed
/// pixels are pulled to y: their spread is far below the prior's while the missing pixels keep
/// a spread of the prior's order.
#[test]
fn dps_posterior_samples_are_distinct_and_pulled_to_y() {
    let p = problem();
    let mut s = settings(Method::Dps);
    s.steps = 200;
    let out = tasks::posterior_samples(
        &p.prior,
        &Schedule::linear_default(),
        Observation::Measured {
            y: &p.y,
            image_size: [SIDE, SIDE],
        },
        &s,
        8,
        &dev(),
        &mut Observer::default(),
    )
    .unwrap();
    let (obs, mis) = pooled(&out.std, &p.mask);
    eprintln!("DPS, K = 8, 200 steps: sample std observed {obs:.4}, missing {mis:.4}");
    assert!(obs > 0.0 && obs < 0.5 * S2.sqrt(), "{obs}");
    assert!(mis > 0.5 * S2.sqrt() && mis < 1.5 * S2.sqrt(), "{mis}");
}

/// With σ = 0 the simulated measurement draws no noise, so restoring y = A(x) as a measured
/// image continues the same noise stream and gives the same result as `restore` from x: the
/// two share the operator and the sampler dispatch.
#[test]
fn restore_measured_matches_restore_on_the_same_measurement() {
    let p = problem();
    let schedule = Schedule::linear_default();
    let x = p.prior.sample(1, &mut NoiseSource::new(5));
    for method in [Method::Sdedit, Method::ScoreAld, Method::Dps] {
        let s = with_t0(
            RestoreSettings {
                sigma: 0.0,
                steps: 20,
                ..settings(method)
            },
            300,
        );
        let a = tasks::restore(
            &p.prior,
            &schedule,
            &x,
            &s,
            &dev(),
            &mut Observer::default(),
        )
        .unwrap();
        // The masked pixels are whatever they are: x itself here, dropped by y ← A(y).
        let b = tasks::restore_measured(
            &p.prior,
            &schedule,
            &x,
            [SIDE, SIDE],
            &s,
            &dev(),
            &mut Observer::default(),
        )
        .unwrap();
        let diff = to_vec(&(a.reconstruction.clone() - b.reconstruction).abs().max())[0];
        assert!(diff < 1e-6, "{method}: {diff}");
        let dy = to_vec(&(a.measurement - b.measurement).abs().max())[0];
        assert!(dy < 1e-6, "{method}: measurement {dy}");
        assert_eq!(a.description, b.description);
    }
}

/// A measurement of the wrong size names both sizes; random operators and K < 2 are refused;
/// SR takes the low-resolution image.
#[test]
fn measured_inputs_are_checked() {
    let p = problem();
    let schedule = Schedule::linear_default();
    let run = |y: &Tensor<4>, op: OperatorSpec, size: usize| {
        let s = RestoreSettings {
            steps: 3,
            ..RestoreSettings::new(Method::Dps, Preset::Dps, op)
        };
        tasks::restore_measured(
            &p.prior,
            &schedule,
            y,
            [size, size],
            &s,
            &dev(),
            &mut Observer::default(),
        )
    };
    let y16 = NoiseSource::new(1).normal([1, 3, 16, 16], &dev());
    let err = run(
        &y16,
        OperatorSpec::GaussianBlur {
            size: 3,
            sigma: 0.5,
        },
        SIDE,
    )
    .err()
    .unwrap();
    assert!(matches!(err, TaskError::MeasurementSize { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("16×16") && text.contains("8×8"), "{text}");
    // ×4 SR of 32×32 images measures 8×8: the 8×8 y runs, a 32×32 one is refused.
    let prior32 = GaussianPrior::isotropic(Tensor::zeros([1, 3, 32, 32], &dev()), S2).unwrap();
    let sr = |y: &Tensor<4>| {
        let s = RestoreSettings {
            steps: 3,
            ..RestoreSettings::new(
                Method::Dps,
                Preset::Dps,
                OperatorSpec::SuperResolution { factor: 4 },
            )
        };
        tasks::restore_measured(
            &prior32,
            &schedule,
            y,
            [32, 32],
            &s,
            &dev(),
            &mut Observer::default(),
        )
    };
    let r = sr(&p.y).unwrap();
    assert_eq!(r.reconstruction.dims(), [1, 3, 32, 32]);
    assert_eq!(r.measurement.dims(), [1, 3, 8, 8]);
    let text = sr(&Tensor::zeros([1, 3, 32, 32], &dev()))
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("32×32") && text.contains("8×8"), "{text}");
    // Random operators cannot describe a measured image.
    for op in [
        OperatorSpec::MotionBlur {
            size: 3,
            intensity: 0.5,
        },
        OperatorSpec::InpaintRandom { drop: 0.5 },
        OperatorSpec::InpaintBox {
            size: 4,
            random_margin: Some(1),
        },
    ] {
        assert!(tasks::is_random(&op));
        let err = run(&p.y, op, SIDE).err().unwrap();
        assert!(matches!(err, TaskError::Measured(_)), "{err}");
    }
    assert!(!tasks::is_random(&OperatorSpec::GaussianBlur {
        size: 3,
        sigma: 0.5
    }));
    // K < 2 and a batch of measurements are refused by posterior_samples.
    let k1 = tasks::posterior_samples(
        &p.prior,
        &schedule,
        Observation::Measured {
            y: &p.y,
            image_size: [SIDE, SIDE],
        },
        &settings(Method::ScoreAld),
        1,
        &dev(),
        &mut Observer::default(),
    );
    assert!(k1.is_err());
    let two = p.y.clone().repeat_dim(0, 2);
    let batch = tasks::posterior_samples(
        &p.prior,
        &schedule,
        Observation::Measured {
            y: &two,
            image_size: [SIDE, SIDE],
        },
        &settings(Method::ScoreAld),
        2,
        &dev(),
        &mut Observer::default(),
    );
    assert!(batch.is_err());
    // For masks only the observed pixels of y count.
    let a = tasks::measured(&p.y, [SIDE, SIDE], &settings(Method::ScoreAld), &dev()).unwrap();
    let b = tasks::measured(
        &p.y.clone().add_scalar(5.0),
        [SIDE, SIDE],
        &settings(Method::ScoreAld),
        &dev(),
    )
    .unwrap();
    let masked = p.mask.forward(p.y.clone());
    assert!(to_vec(&(a.y.clone() - masked).abs().max())[0] < 1e-6);
    let diff = to_vec(&(a.y - b.y).abs())
        .iter()
        .filter(|v| **v > 1e-6)
        .count();
    assert_eq!(
        diff,
        3 * (SIDE * SIDE - HOLE * HOLE),
        "only observed pixels move"
    );
}

/// The settings with SDEdit's t0 set (other methods have none).
fn with_t0(mut s: RestoreSettings, t0: usize) -> RestoreSettings {
    if let tweedie::tasks::Settings::Sdedit(sdedit) = &mut s.solver {
        sdedit.t0 = t0;
    }
    s
}
