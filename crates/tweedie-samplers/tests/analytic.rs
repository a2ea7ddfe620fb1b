//! Samplers checked against analytic priors whose scores and posteriors are exact.

use burn::tensor::{Device, Tensor};
use tweedie_core::diffusion::StepVariance;
use tweedie_core::priors::GaussianPrior;
use tweedie_core::tensor::to_vec;
use tweedie_core::{EpsModel, NoiseLevel, NoiseSource, Schedule};
use tweedie_operators::{Blur, Downsample, Identity, Mask, Operator, measure};
use tweedie_samplers::*;

fn dev() -> Device {
    Device::flex()
}

/// Moments of (x − μ)/s over all values: should be N(0, 1) for exact prior samples.
fn standardized_moments(x: &Tensor<4>, prior: &GaussianPrior) -> (f64, f64, usize) {
    let z = to_vec(&((x.clone() - prior.mean.clone()) / prior.var.clone().sqrt()));
    let n = z.len();
    let mean = z.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
    let var = z.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var, n)
}

fn assert_matches_prior(x: &Tensor<4>, prior: &GaussianPrior, what: &str) {
    let (mean, var, n) = standardized_moments(x, prior);
    let se_mean = 1.0 / (n as f64).sqrt();
    let se_var = (2.0 / (n - 1) as f64).sqrt();
    eprintln!(
        "{what}: standardized mean {mean:.4} (4 SE = {:.4}), var {var:.4} (4 SE = {:.4}), n = {n}",
        4.0 * se_mean,
        4.0 * se_var
    );
    assert!(mean.abs() < 4.0 * se_mean, "{what}: mean {mean}");
    assert!((var - 1.0).abs() < 4.0 * se_var, "{what}: var {var}");
}

fn gaussian_prior(shape: [usize; 4], var: f64, seed: u64) -> GaussianPrior {
    let mean = NoiseSource::new(seed).normal(shape, &dev()).mul_scalar(0.3);
    GaussianPrior::isotropic(mean, var).unwrap()
}

fn unclipped(steps: usize) -> ChainOptions {
    ChainOptions {
        steps,
        clip_x0: false,
        ..Default::default()
    }
}

#[test]
fn generation_with_exact_score_reproduces_gaussian_prior() {
    let schedule = Schedule::linear_default();
    let prior = gaussian_prior([1, 1, 8, 8], 0.25, 1);
    let mut noise = NoiseSource::new(2);
    let out = generate(
        &Denoiser::new(&prior, &schedule),
        [64, 1, 8, 8],
        &unclipped(1000),
        &mut noise,
        &dev(),
        &mut Observer::default(),
    )
    .unwrap();
    assert_matches_prior(&out.x0, &prior, "ancestral T=1000");
}

#[test]
fn posterior_variance_chain_and_ddim_also_reproduce_the_prior() {
    let schedule = Schedule::linear_default();
    let prior = gaussian_prior([1, 1, 8, 8], 0.25, 3);
    let opts = ChainOptions {
        variance: StepVariance::Posterior,
        ..unclipped(1000)
    };
    let out = generate(
        &Denoiser::new(&prior, &schedule),
        [64, 1, 8, 8],
        &opts,
        &mut NoiseSource::new(4),
        &dev(),
        &mut Observer::default(),
    )
    .unwrap();
    assert_matches_prior(&out.x0, &prior, "ancestral β̃ T=1000");
    // DDIM (η = 0, deterministic) with 100 strided steps: the probability-flow ODE.
    let opts = ChainOptions {
        eta: Some(0.0),
        ..unclipped(100)
    };
    let out = generate(
        &Denoiser::new(&prior, &schedule),
        [64, 1, 8, 8],
        &opts,
        &mut NoiseSource::new(5),
        &dev(),
        &mut Observer::default(),
    )
    .unwrap();
    assert_matches_prior(&out.x0, &prior, "DDIM η=0, 100 steps");
}

#[test]
fn sdedit_from_t_max_is_unconditional_generation() {
    let schedule = Schedule::linear_default();
    let prior = gaussian_prior([1, 1, 8, 8], 0.25, 6);
    let init = Tensor::<4>::ones([64, 1, 8, 8], &dev()); // any start: ᾱ_T ≈ 4e-5 erases it
    let out = sdedit(
        &Denoiser::new(&prior, &schedule),
        init,
        1000,
        &unclipped(1000),
        &mut NoiseSource::new(7),
        &mut Observer::default(),
    )
    .unwrap();
    assert_matches_prior(&out.x0, &prior, "SDEdit t0=T");
}

#[test]
fn tweedie_denoising_returns_exact_posterior_mean() {
    let schedule = Schedule::linear_default();
    let prior = gaussian_prior([1, 3, 8, 8], 0.2, 8);
    let x0 = prior.sample(4, &mut NoiseSource::new(9));
    for t in [30usize, 100, 300] {
        let d = denoise(&prior, &schedule, x0.clone(), t, &mut NoiseSource::new(10)).unwrap();
        let exact = prior.posterior_mean(d.x_t.clone(), schedule.alpha_bar[t]);
        let err = to_vec(&(d.x0_hat - exact).abs().max())[0];
        assert!(err < 1e-5, "t={t}: {err}");
    }
    assert!(denoise(&prior, &schedule, x0.clone(), 0, &mut NoiseSource::new(1)).is_err());
    assert!(denoise(&prior, &schedule, x0, 5000, &mut NoiseSource::new(1)).is_err());
}

#[test]
fn autodiff_gradient_is_twice_adjoint_residual_for_every_operator() {
    let d = dev();
    let mut noise = NoiseSource::new(11);
    let ops: Vec<Box<dyn Operator>> = vec![
        Box::new(Identity),
        Box::new(Mask::random_pixels(16, 16, 0.5, &mut noise, &d).unwrap()),
        Box::new(Mask::center_box(16, 16, 8, &d).unwrap()),
        Box::new(Blur::gaussian(7, 1.5).unwrap()),
        Box::new(Blur::motion(9, 0.5, &mut noise).unwrap()),
        Box::new(Downsample::new(4).unwrap()),
    ];
    for op in ops {
        let x = noise.normal([2, 3, 16, 16], &d);
        let y = noise.normal(op.forward(x.clone()).dims(), &d);
        let g = measurement_gradient(op.as_ref(), x.clone(), y.clone());
        let want = op.adjoint(op.forward(x) - y).mul_scalar(2.0);
        let err = to_vec(&(g - want.clone()).abs().max())[0];
        let scale = to_vec(&want.abs().max())[0];
        assert!(err <= 1e-5 * scale.max(1.0), "{}: {err}", op.describe());
    }
}

#[test]
fn same_seed_same_output_and_progress_is_reported() {
    let schedule = Schedule::linear_default();
    let prior = gaussian_prior([1, 3, 4, 4], 0.25, 12);
    let run = |seed| {
        let mut steps = Vec::new();
        let out = {
            let mut obs = Observer::with_progress(|i: StepInfo| steps.push(i.step));
            let opts = ChainOptions {
                snapshot_every: 5,
                ..unclipped(20)
            };
            generate(
                &Denoiser::new(&prior, &schedule),
                [2, 3, 4, 4],
                &opts,
                &mut NoiseSource::new(seed),
                &dev(),
                &mut obs,
            )
            .unwrap()
        };
        assert_eq!(steps, (1..=20).collect::<Vec<_>>());
        assert_eq!(out.snapshots.len(), 4);
        to_vec(&out.x0)
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// A model whose prediction turns NaN below some timestep.
struct Exploding;
impl EpsModel for Exploding {
    fn predict_eps(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4> {
        if level.t < 500 {
            x_t.mul_scalar(f64::NAN)
        } else {
            x_t.zeros_like()
        }
    }
}

#[test]
fn divergence_is_reported_with_the_step() {
    let schedule = Schedule::linear_default();
    let err = generate(
        &Denoiser::new(&Exploding, &schedule),
        [1, 3, 4, 4],
        &unclipped(10),
        &mut NoiseSource::new(1),
        &dev(),
        &mut Observer::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("step 6 of 10") && err.contains("NaN"), "{err}");
    let bad = ChainOptions {
        eta: Some(2.0),
        ..unclipped(10)
    };
    assert!(
        generate(
            &Denoiser::new(&Exploding, &schedule),
            [1, 3, 4, 4],
            &bad,
            &mut NoiseSource::new(1),
            &dev(),
            &mut Observer::default()
        )
        .is_err()
    );
}

/// Linear-Gaussian inpainting: prior N(μ, s² I), y = M x* + σ n. The posterior factorises per
/// pixel: observed pixels have mean (s² y + σ² μ)/(s² + σ²) and variance s²σ²/(s² + σ²),
/// missing ones keep the prior N(μ, s²).
struct InpaintingProblem {
    prior: GaussianPrior,
    mask: Mask,
    y: Tensor<4>,
    post_mean: Tensor<4>,
    post_var: Tensor<4>,
    sigma: f64,
}

fn inpainting_problem(batch: usize) -> InpaintingProblem {
    let d = dev();
    let (s2, sigma) = (0.25, 0.05);
    let prior = gaussian_prior([1, 3, 8, 8], s2, 20);
    let mask = Mask::center_box(8, 8, 4, &d).unwrap();
    let mut noise = NoiseSource::new(21);
    let x_star = prior.sample(1, &mut noise);
    let y1 = measure(&mask, x_star, sigma, &mut noise).unwrap();
    let m = mask.tensor().clone();
    let obs_mean = (y1.clone().mul_scalar(s2) + prior.mean.clone().mul_scalar(sigma * sigma))
        .div_scalar(s2 + sigma * sigma);
    let post_mean = obs_mean * m.clone() + prior.mean.clone() * m.clone().neg().add_scalar(1.0);
    let post_var = m
        .clone()
        .mul_scalar(s2 * sigma * sigma / (s2 + sigma * sigma))
        + m.neg().add_scalar(1.0).mul_scalar(s2);
    let y = y1.repeat_dim(0, batch);
    InpaintingProblem {
        prior,
        mask,
        y,
        post_mean,
        post_var: post_var.repeat_dim(1, 3),
        sigma,
    }
}

/// Mean squared distance of samples to the exact posterior mean, divided by the exact posterior
/// variance: 1 for exact posterior samples, ≫ 1 for samples that ignore y.
fn normalised_error(x: &Tensor<4>, p: &InpaintingProblem) -> f64 {
    let e = to_vec(&((x.clone() - p.post_mean.clone()).powf_scalar(2.0)));
    let v = to_vec(&p.post_var.clone().repeat_dim(0, x.dims()[0]));
    let mean_e: f64 = e.iter().map(|a| *a as f64).sum::<f64>() / e.len() as f64;
    let mean_v: f64 = v.iter().map(|a| *a as f64).sum::<f64>() / v.len() as f64;
    mean_e / mean_v
}

/// Same, restricted to the observed pixels (where y should pull the samples).
fn observed_rmse(x: &Tensor<4>, p: &InpaintingProblem) -> f64 {
    let m = p.mask.tensor().clone();
    let e = to_vec(&((x.clone() - p.post_mean.clone()) * m.clone()).powf_scalar(2.0));
    let count = to_vec(&m).iter().map(|a| *a as f64).sum::<f64>() * 3.0 * x.dims()[0] as f64;
    (e.iter().map(|a| *a as f64).sum::<f64>() / count).sqrt()
}

#[test]
fn dps_and_score_ald_approach_the_posterior_and_beat_sdedit() {
    let schedule = Schedule::linear_default();
    let batch = 32;
    let p = inpainting_problem(batch);
    let shape = [batch, 3, 8, 8];
    let chain = unclipped(1000);

    let den = Denoiser::new(&p.prior, &schedule);
    let problem = Problem::new(&p.mask, p.y.clone(), p.sigma);
    let dps = Dps {
        step: DpsStep::Residual { zeta: 0.5 },
    };
    let x_dps = dps
        .solve(
            &den,
            &problem,
            shape,
            &chain,
            &mut NoiseSource::new(30),
            &mut Observer::default(),
        )
        .unwrap()
        .output
        .x0;
    let x_ald = ScoreAld::default()
        .solve(
            &den,
            &problem,
            shape,
            &chain,
            &mut NoiseSource::new(31),
            &mut Observer::default(),
        )
        .unwrap()
        .output
        .x0;
    let init = p.mask.initialise(p.y.clone());
    let x_sde = sdedit(
        &Denoiser::new(&p.prior, &schedule),
        init,
        500,
        &chain,
        &mut NoiseSource::new(32),
        &mut Observer::default(),
    )
    .unwrap()
    .x0;

    let (e_dps, e_ald, e_sde) = (
        normalised_error(&x_dps, &p),
        normalised_error(&x_ald, &p),
        normalised_error(&x_sde, &p),
    );
    let (o_dps, o_ald, o_sde) = (
        observed_rmse(&x_dps, &p),
        observed_rmse(&x_ald, &p),
        observed_rmse(&x_sde, &p),
    );
    let post_std_obs = (0.25f64 * 0.0025 / 0.2525).sqrt();
    eprintln!(
        "normalised error (1 = exact posterior): DPS {e_dps:.3}, ALD {e_ald:.3}, SDEdit {e_sde:.3}"
    );
    eprintln!(
        "observed-pixel RMSE to posterior mean (posterior std {post_std_obs:.4}): DPS {o_dps:.4}, ALD {o_ald:.4}, SDEdit {o_sde:.4}"
    );
    for (name, e, o) in [("DPS", e_dps, o_dps), ("Score-ALD", e_ald, o_ald)] {
        assert!(e < 1.5, "{name}: normalised error {e}");
        assert!(o < 3.0 * post_std_obs, "{name}: observed RMSE {o}");
        assert!(e < e_sde && o < o_sde, "{name} must beat SDEdit");
    }
}

/// A model with a constant learned-variance output `v` on top of an exact prior.
struct WithVariance<'a> {
    prior: &'a GaussianPrior,
    v: f64,
}
impl EpsModel for WithVariance<'_> {
    fn predict_eps(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4> {
        self.prior.predict_eps(x_t, level)
    }
    fn predict_eps_and_variance(
        &self,
        x_t: Tensor<4>,
        level: NoiseLevel,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        let eps = self.prior.predict_eps(x_t, level);
        let v = eps.zeros_like().add_scalar(self.v);
        (eps, Some(v))
    }
    fn has_learned_variance(&self) -> bool {
        true
    }
}

/// guided-diffusion's learned_range: v = −1 is σ² = β̃ and v = +1 is σ² = β, on the strided
/// chain's own β, so the learned chain equals the fixed ones draw for draw; v = 0 lies between.
#[test]
fn learned_variance_interpolates_the_fixed_chains() {
    let schedule = Schedule::linear_default();
    let prior = gaussian_prior([1, 1, 8, 8], 0.25, 5);
    let run = |model: &dyn EpsModel, variance: StepVariance| {
        let opts = ChainOptions {
            variance,
            ..unclipped(50)
        };
        let out = generate(
            &Denoiser::new(model, &schedule),
            [4, 1, 8, 8],
            &opts,
            &mut NoiseSource::new(9),
            &dev(),
            &mut Observer::default(),
        )
        .unwrap();
        to_vec(&out.x0)
    };
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let beta = run(&prior, StepVariance::Beta);
    let post = run(&prior, StepVariance::Posterior);
    let lo = run(
        &WithVariance {
            prior: &prior,
            v: -1.0,
        },
        StepVariance::Learned,
    );
    let hi = run(
        &WithVariance {
            prior: &prior,
            v: 1.0,
        },
        StepVariance::Learned,
    );
    let mid = run(
        &WithVariance {
            prior: &prior,
            v: 0.0,
        },
        StepVariance::Learned,
    );
    assert!(
        max_diff(&lo, &post) < 1e-4,
        "v = −1 vs β̃: {}",
        max_diff(&lo, &post)
    );
    assert!(
        max_diff(&hi, &beta) < 1e-4,
        "v = +1 vs β: {}",
        max_diff(&hi, &beta)
    );
    assert!(
        max_diff(&beta, &post) > 1e-2,
        "β and β̃ chains should differ"
    );
    assert!(max_diff(&mid, &beta) > 1e-3 && max_diff(&mid, &post) > 1e-3);
    // Without a variance output, learned runs as fixed_large (σ² = β).
    let fallback = run(&prior, StepVariance::Learned);
    assert_eq!(fallback, beta);
}

/// The sheet's literal Score-ALD step 1/(2(σ² + γ_t²)) diverges for σ = 0.05 (the step exceeds
/// 2/L of the quadratic term at small t), while the stabilised one converges: the divergence
/// is reproducible with `AldRule::Sheet`.
#[test]
fn sheet_literal_score_ald_diverges_and_the_stabilised_one_does_not() {
    let schedule = Schedule::linear_default();
    let batch = 4;
    let p = inpainting_problem(batch);
    let run = |rule: AldRule| {
        let ald = ScoreAld {
            rule,
            ..Default::default()
        };
        ald.solve(
            &Denoiser::new(&p.prior, &schedule),
            &Problem::new(&p.mask, p.y.clone(), p.sigma),
            [batch, 3, 8, 8],
            &unclipped(100),
            &mut NoiseSource::new(40),
            &mut Observer::default(),
        )
    };
    let err = run(AldRule::Sheet).unwrap_err();
    assert!(matches!(err, SampleError::Diverged { .. }), "{err}");
    eprintln!("sheet-literal Score-ALD: {err}");
    run(AldRule::Stabilised).unwrap();
}

/// A huge guidance step saturates the state without ever producing NaN: it is caught as a
/// blow-up (|x| > DIVERGENCE_BOUND) instead of being returned as a result.
#[test]
fn a_blown_up_chain_is_reported_before_any_nan() {
    let schedule = Schedule::linear_default();
    let p = inpainting_problem(1);
    let dps = Dps {
        step: DpsStep::Residual { zeta: 1e12 },
    };
    let err = dps
        .solve(
            &Denoiser::new(&p.prior, &schedule),
            &Problem::new(&p.mask, p.y.clone(), p.sigma),
            [1, 3, 8, 8],
            &unclipped(10),
            &mut NoiseSource::new(3),
            &mut Observer::default(),
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("step 1 of 10") && text.contains("exceeds"),
        "{text}"
    );
}
