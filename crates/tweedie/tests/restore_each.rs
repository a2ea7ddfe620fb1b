//! `tasks::restore_each`: a batch restored in one chain equals each image restored alone by
//! `tasks::restore` with its own seed, for every method, for operators fully given by their
//! spec (applied to the batch at once) and for random ones (drawn and applied per item).

use burn::tensor::{Device, Tensor};
use tweedie::core::priors::GaussianPrior;
use tweedie::core::tensor::to_vec;
use tweedie::core::{NoiseSource, Schedule};
use tweedie::operators::OperatorSpec;
use tweedie::samplers::Observer;
use tweedie::tasks::{self, Method, Preset, RestoreSettings};

fn max_diff(a: &Tensor<4>, b: &Tensor<4>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    to_vec(a)
        .iter()
        .zip(to_vec(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn a_batched_restore_equals_each_image_restored_alone() {
    let d = Device::flex();
    let mean = NoiseSource::new(20)
        .normal([1, 3, 8, 8], &d)
        .mul_scalar(0.3);
    let prior = GaussianPrior::isotropic(mean, 0.25).unwrap();
    let x = prior.sample(3, &mut NoiseSource::new(1));
    let schedule = Schedule::linear_default();
    let seeds = [7u64, 8, 12];
    let ops = [
        OperatorSpec::InpaintBox {
            size: 4,
            random_margin: None,
        },
        OperatorSpec::GaussianBlur {
            size: 5,
            sigma: 1.0,
        },
        // Random: each item draws its own mask.
        OperatorSpec::InpaintRandom { drop: 0.5 },
    ];
    for op in ops {
        for method in [Method::Sdedit, Method::ScoreAld, Method::Dps] {
            for eta in [None, Some(0.0)] {
                let settings = with_t0(
                    RestoreSettings {
                        steps: 10,
                        clip_x0: false,
                        eta,
                        ..RestoreSettings::new(method, Preset::Dps, op.clone())
                    },
                    300,
                );
                let batched = tasks::restore_each(
                    &prior,
                    &schedule,
                    &x,
                    &settings,
                    &seeds,
                    &d,
                    &mut Observer::default(),
                )
                .unwrap();
                assert_eq!(batched.len(), 3);
                for (i, b) in batched.iter().enumerate() {
                    let alone = tasks::restore(
                        &prior,
                        &schedule,
                        &x.clone().narrow(0, i, 1),
                        &RestoreSettings {
                            seed: seeds[i],
                            ..settings.clone()
                        },
                        &d,
                        &mut Observer::default(),
                    )
                    .unwrap();
                    let what = format!("{method} {op:?} η={eta:?} item {i}");
                    for (name, got, want) in [
                        ("y", &b.measurement, &alone.measurement),
                        ("init", &b.initialisation, &alone.initialisation),
                        ("x̂", &b.reconstruction, &alone.reconstruction),
                    ] {
                        let e = max_diff(got, want);
                        assert!(e < 1e-5, "{what}: {name} differs by {e}");
                    }
                    assert_eq!(b.description, alone.description);
                }
                // The items differ (their own noise, and masks for the random operator).
                assert!(max_diff(&batched[0].reconstruction, &batched[1].reconstruction) > 1e-3);
            }
        }
    }
    let settings = RestoreSettings::new(
        Method::Dps,
        Preset::Dps,
        OperatorSpec::InpaintBox {
            size: 4,
            random_margin: None,
        },
    );
    assert!(
        tasks::restore_each(
            &prior,
            &schedule,
            &x,
            &settings,
            &seeds[..2],
            &d,
            &mut Observer::default()
        )
        .is_err()
    );
}

/// The settings with SDEdit's t0 set (other methods have none).
fn with_t0(mut s: RestoreSettings, t0: usize) -> RestoreSettings {
    if let tweedie::tasks::Settings::Sdedit(sdedit) = &mut s.solver {
        sdedit.t0 = t0;
    }
    s
}
