//! DiffPIR and DDNM / DDNM+ against the exact posterior of a linear-Gaussian problem.
//!
//! Prior N(μ, s² I) over `[3, 8, 8]` images, y = A x* + σ n with a channel-wise linear A, so
//! the posterior is Gaussian with, per channel,
//! mean m = μ + s² Aᵀ K⁻¹ (y − A μ) and covariance Σ = s² I − s⁴ Aᵀ K⁻¹ A, K = s² A Aᵀ + σ² I
//! (computed here densely in f64 from A's columns). The score model is the prior's exact
//! ε-predictor, so everything a sampler gets wrong is its own doing.
//!
//! The measure is the error of the batch mean x̄ of B samples against m, relative to the
//! Monte-Carlo error an exact posterior sampler would have:
//! R = mean_i (x̄_i − m_i)² / mean_i (Σ_ii / B). An exact sampler gives R ≈ 1; a sampler that
//! ignores y (the unguided chain) gives R of 20–200 here. The spread S (squared error of the
//! single samples over the posterior variance; 1 + 1/B when exact) is printed for information
//! only: both methods under-disperse on a 100-step chain (S ≈ 0.4–0.9).

use burn::tensor::{Device, Tensor};
use tweedie_core::priors::GaussianPrior;
use tweedie_core::tensor::{from_vec, max_abs, to_vec};
use tweedie_core::{NoiseSource, Schedule};
use tweedie_operators::{Blur, Downsample, Mask, Operator, OperatorSpec, Padding, measure};
use tweedie_samplers::*;

const SIDE: usize = 8;
const PIXELS: usize = SIDE * SIDE;
const CHANNELS: usize = 3;
const PRIOR_VAR: f64 = 0.25;
const SIGMA: f64 = 0.05;
const BATCH: usize = 64;
const STEPS: usize = 100;
/// R below this passes (exact posterior samples: R ≈ 1).
const THRESHOLD: f64 = 2.0;

fn dev() -> Device {
    Device::flex()
}

fn chain() -> ChainOptions {
    ChainOptions {
        steps: STEPS,
        clip_x0: false,
        ..Default::default()
    }
}

/// The linear-Gaussian problem and its exact posterior (flattened `[C, H, W]`, f64).
struct Exact {
    prior: GaussianPrior,
    /// y repeated over the batch.
    y: Tensor<4>,
    post_mean: Vec<f64>,
    post_var: Vec<f64>,
    prior_mean: Vec<f64>,
}

/// A as a dense `m × 64` matrix (row-major), from its responses to the 64 one-hot images of
/// one channel (A acts on each channel alike).
fn dense(op: &dyn Operator) -> (usize, Vec<f64>) {
    let mut basis = vec![0.0f32; PIXELS * PIXELS];
    for j in 0..PIXELS {
        basis[j * PIXELS + j] = 1.0;
    }
    let e = from_vec(basis, [PIXELS, 1, SIDE, SIDE], &dev());
    let cols = to_vec(&op.forward(e));
    let m = cols.len() / PIXELS;
    let mut a = vec![0.0; m * PIXELS];
    for j in 0..PIXELS {
        for i in 0..m {
            a[i * PIXELS + j] = cols[j * m + i] as f64;
        }
    }
    (m, a)
}

/// Solves K X = B for an SPD `n × n` K (row-major) and `k` right-hand sides (B `n × k`,
/// row-major), by Cholesky.
fn spd_solve(kmat: &[f64], n: usize, b: &[f64], k: usize) -> Vec<f64> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|p| l[i * n + p] * l[j * n + p]).sum();
            if i == j {
                let d = kmat[i * n + i] - s;
                assert!(d > 0.0, "K is not positive definite");
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (kmat[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    let mut x = b.to_vec();
    for c in 0..k {
        for i in 0..n {
            let s: f64 = (0..i).map(|p| l[i * n + p] * x[p * k + c]).sum();
            x[i * k + c] = (x[i * k + c] - s) / l[i * n + i];
        }
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|p| l[p * n + i] * x[p * k + c]).sum();
            x[i * k + c] = (x[i * k + c] - s) / l[i * n + i];
        }
    }
    x
}

/// The problem for `op` at noise level `sigma` (σ = 0: without the posterior).
fn exact(op: &dyn Operator, sigma: f64, seed: u64) -> Exact {
    let d = dev();
    let mean = NoiseSource::new(seed)
        .normal([1, CHANNELS, SIDE, SIDE], &d)
        .mul_scalar(0.3);
    let prior = GaussianPrior::isotropic(mean, PRIOR_VAR).unwrap();
    let mut noise = NoiseSource::new(seed + 1);
    let x_star = prior.sample(1, &mut noise);
    let y1 = measure(op, x_star, sigma, &mut noise).unwrap();
    let mu: Vec<f64> = to_vec(&prior.mean).iter().map(|v| *v as f64).collect();
    if sigma == 0.0 {
        // No posterior needed (and K may be singular): the noise-free tests check y itself.
        return Exact {
            prior,
            y: y1.repeat_dim(0, BATCH),
            post_mean: Vec::new(),
            post_var: Vec::new(),
            prior_mean: mu,
        };
    }
    let (m, a) = dense(op);
    let s2 = PRIOR_VAR;
    // K = s² A Aᵀ + σ² I.
    let mut kmat = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..m {
            let dot: f64 = (0..PIXELS)
                .map(|p| a[i * PIXELS + p] * a[j * PIXELS + p])
                .sum();
            kmat[i * m + j] = s2 * dot + if i == j { sigma * sigma } else { 0.0 };
        }
    }
    // diag(Σ) = s² − s⁴ diag(Aᵀ K⁻¹ A), the same for every channel.
    let kinv_a = spd_solve(&kmat, m, &a, PIXELS);
    let var: Vec<f64> = (0..PIXELS)
        .map(|j| {
            s2 - s2
                * s2
                * (0..m)
                    .map(|i| a[i * PIXELS + j] * kinv_a[i * PIXELS + j])
                    .sum::<f64>()
        })
        .collect();
    let yv: Vec<f64> = to_vec(&y1).iter().map(|v| *v as f64).collect();
    let mut post_mean = Vec::with_capacity(CHANNELS * PIXELS);
    for c in 0..CHANNELS {
        let mu_c = &mu[c * PIXELS..(c + 1) * PIXELS];
        let r: Vec<f64> = (0..m)
            .map(|i| {
                yv[c * m + i]
                    - (0..PIXELS)
                        .map(|p| a[i * PIXELS + p] * mu_c[p])
                        .sum::<f64>()
            })
            .collect();
        let w = spd_solve(&kmat, m, &r, 1);
        post_mean.extend(
            (0..PIXELS)
                .map(|j| mu_c[j] + s2 * (0..m).map(|i| a[i * PIXELS + j] * w[i]).sum::<f64>()),
        );
    }
    Exact {
        prior,
        y: y1.repeat_dim(0, BATCH),
        post_mean,
        post_var: var.repeat(CHANNELS),
        prior_mean: mu,
    }
}

impl Exact {
    /// R = mean (x̄ − m)² / mean (Σ_ii / B): ≈ 1 for exact posterior samples.
    fn ratio(&self, x: &Tensor<4>) -> f64 {
        let b = x.dims()[0];
        let v = to_vec(x);
        let n = CHANNELS * PIXELS;
        let err: f64 = (0..n)
            .map(|i| {
                let xbar = (0..b).map(|k| v[k * n + i] as f64).sum::<f64>() / b as f64;
                (xbar - self.post_mean[i]).powi(2)
            })
            .sum::<f64>()
            / n as f64;
        let mc = self.post_var.iter().sum::<f64>() / n as f64 / b as f64;
        err / mc
    }

    /// S = mean (x − m)² / mean Σ_ii over all samples: 1 + 1/B for exact posterior samples
    /// (spread and bias together).
    fn spread(&self, x: &Tensor<4>) -> f64 {
        let b = x.dims()[0];
        let v = to_vec(x);
        let n = CHANNELS * PIXELS;
        let err: f64 = (0..b * n)
            .map(|k| (v[k] as f64 - self.post_mean[k % n]).powi(2))
            .sum::<f64>()
            / (b * n) as f64;
        err / (self.post_var.iter().sum::<f64>() / n as f64)
    }

    /// R of the prior mean itself (what a sampler that ignores y converges to).
    fn prior_ratio(&self) -> f64 {
        let n = CHANNELS * PIXELS;
        let err: f64 = (0..n)
            .map(|i| (self.prior_mean[i] - self.post_mean[i]).powi(2))
            .sum::<f64>()
            / n as f64;
        err / (self.post_var.iter().sum::<f64>() / n as f64 / BATCH as f64)
    }
}

fn solve(
    settings: &impl Solver,
    p: &Exact,
    op: &dyn Operator,
    sigma: f64,
    seed: u64,
    observer: &mut Observer,
) -> Result<Tensor<4>, SampleError> {
    let schedule = Schedule::linear_default();
    let den = Denoiser::new(&p.prior, &schedule);
    let problem = Problem::new(op, p.y.clone(), sigma);
    Ok(settings
        .solve(
            &den,
            &problem,
            [BATCH, CHANNELS, SIDE, SIDE],
            &chain(),
            &mut NoiseSource::new(seed),
            observer,
        )?
        .output
        .x0)
}

fn run(settings: &impl Solver, p: &Exact, op: &dyn Operator, sigma: f64, seed: u64) -> Tensor<4> {
    solve(settings, p, op, sigma, seed, &mut Observer::default()).unwrap()
}

/// The unguided chain from the same start: it ignores y.
fn unguided(p: &Exact, seed: u64) -> Tensor<4> {
    let schedule = Schedule::linear_default();
    let den = Denoiser::new(&p.prior, &schedule);
    let mut noise = NoiseSource::new(seed);
    let x_t = noise.normal([BATCH, CHANNELS, SIDE, SIDE], &dev());
    reverse_chain(
        &den,
        x_t,
        1000,
        &chain(),
        &mut noise,
        &mut Observer::default(),
    )
    .unwrap()
    .x0
}

fn mask() -> Mask {
    Mask::center_box(SIDE, SIDE, 4, &dev()).unwrap()
}

/// A 5×5 Gaussian blur (σ = 1 px), circular, so that A⁺ and `prox_l2` are the FFT closed forms.
fn blur() -> Blur {
    Blur::gaussian(5, 1.0)
        .unwrap()
        .with_padding(Padding::Circular)
}

fn downsample() -> Downsample {
    Downsample::new(2).unwrap()
}

/// A wrapper whose A⁺ is `scale · A⁺` (`scale = 0` drops DDNM's range-space correction).
struct ScaledPinv<O> {
    inner: O,
    scale: f64,
}

impl<O: Operator> Operator for ScaledPinv<O> {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.inner.forward(x)
    }
    fn adjoint(&self, y: Tensor<4>) -> Tensor<4> {
        self.inner.adjoint(y)
    }
    fn pseudo_inverse(&self, y: Tensor<4>) -> Tensor<4> {
        self.inner.pseudo_inverse(y).mul_scalar(self.scale)
    }
    fn prox_l2(&self, z: Tensor<4>, y: Tensor<4>, gamma: f64) -> Tensor<4> {
        self.inner.prox_l2(z, y, gamma)
    }
    fn describe(&self) -> String {
        format!("{} with A⁺ × {}", self.inner.describe(), self.scale)
    }
}

fn diffpir_for(spec: OperatorSpec) -> DiffPir {
    let knobs = Knobs::new(Preset::Dps, spec, STEPS);
    DiffPir::configure(&knobs, &mut Vec::new()).unwrap()
}

/// DiffPIR with the official defaults for `spec` passes; the same sampler with λ × 10⁴ (the
/// data step all but switched off) and the unguided chain fail. Returns (R, R of λ × 10⁴).
fn check_diffpir(name: &str, spec: OperatorSpec, op: &dyn Operator, want: DiffPir) -> (f64, f64) {
    let settings = diffpir_for(spec);
    assert_eq!(settings, want, "{name}: defaults");
    let p = exact(op, SIGMA, 50);
    let x = run(&settings, &p, op, SIGMA, 2);
    let r = p.ratio(&x);
    eprintln!("{name}: DiffPIR spread S = {:.3}", p.spread(&x));
    let weak = DiffPir {
        lambda: settings.lambda * 1e4,
        ..settings
    };
    let r_weak = p.ratio(&run(&weak, &p, op, SIGMA, 2));
    let r_unguided = p.ratio(&unguided(&p, 2));
    eprintln!(
        "{name}: DiffPIR {} R = {r:.2} (threshold {THRESHOLD}); λ × 1e4: R = {r_weak:.1}; unguided: R = {r_unguided:.1}; prior mean: R = {:.1}",
        settings.summary(),
        p.prior_ratio()
    );
    assert!(r < THRESHOLD, "{name}: DiffPIR R = {r}");
    assert!(
        r_weak > 3.0 * THRESHOLD,
        "{name}: λ × 1e4 should fail, R = {r_weak}"
    );
    assert!(
        r_unguided > 3.0 * THRESHOLD,
        "{name}: unguided R = {r_unguided}"
    );
    (r, r_weak)
}

#[test]
fn diffpir_inpainting_mean_matches_the_exact_posterior() {
    check_diffpir(
        "inpainting",
        OperatorSpec::InpaintBox {
            size: 4,
            random_margin: None,
        },
        &mask(),
        DiffPir {
            lambda: 1.0,
            zeta: 1.0,
        },
    );
}

#[test]
fn diffpir_deblurring_mean_matches_the_exact_posterior() {
    check_diffpir(
        "gaussian blur",
        OperatorSpec::GaussianBlur {
            size: 5,
            sigma: 1.0,
        },
        &blur(),
        DiffPir {
            lambda: 7.0,
            zeta: 0.3,
        },
    );
    // Trusting y far too much (λ / 10⁴, γ = 1/ρ × 10⁴) deconvolves the noise: R explodes.
    let p = exact(&blur(), SIGMA, 50);
    let strong = DiffPir {
        lambda: 7e-4,
        zeta: 0.3,
    };
    let r = p.ratio(&run(&strong, &p, &blur(), SIGMA, 2));
    eprintln!("gaussian blur: DiffPIR λ = 7e-4: R = {r:.1}");
    assert!(r > 3.0 * THRESHOLD, "λ / 1e4 should fail, R = {r}");
}

#[test]
fn diffpir_super_resolution_mean_matches_the_exact_posterior() {
    check_diffpir(
        "2× box SR",
        OperatorSpec::SuperResolutionBox { factor: 2 },
        &downsample(),
        DiffPir {
            lambda: 7.0,
            zeta: 0.25,
        },
    );
}

/// σ = 0: DiffPIR clamps σ to 0.002 (the official 0.001 in [0, 1] units), so ρ_t > 0 and
/// γ = 1/ρ_t is finite; the observed pixels end up at y within the last step's noise.
#[test]
fn diffpir_noiseless_inpainting_runs_and_fits_y() {
    let m = mask();
    let p = exact(&m, 0.0, 60);
    let x = run(
        &diffpir_for(OperatorSpec::InpaintBox {
            size: 4,
            random_margin: None,
        }),
        &p,
        &m,
        0.0,
        4,
    );
    // The last step skips the data step (as the official code does), so the observed pixels
    // keep the noise of x_1, √(1 − ᾱ_1) = 0.01, through Tweedie's shrinkage.
    let resid = (x - p.y.clone()) * m.tensor().clone();
    let worst = max_abs(&resid);
    let observed = to_vec(m.tensor()).iter().sum::<f32>() as f64 * (CHANNELS * BATCH) as f64;
    let rms = (to_vec(&resid.powf_scalar(2.0))
        .iter()
        .map(|v| *v as f64)
        .sum::<f64>()
        / observed)
        .sqrt();
    eprintln!("noise-free DiffPIR: observed pixels − y: RMS {rms:.4}, max {worst:.4}");
    assert!(rms < 0.015 && worst < 0.1, "RMS {rms}, max {worst}");
}

/// A named operator and its broken twin.
type Case = (&'static str, Box<dyn Operator>, Box<dyn Operator>);

/// DDNM+ (σ = 0.05) passes on inpainting and 2× box SR; dropping its range-space correction
/// (A⁺ → 0, through an operator wrapper) and the unguided chain fail.
#[test]
fn ddnm_plus_mean_matches_the_exact_posterior() {
    let cases: Vec<Case> = vec![
        (
            "inpainting",
            Box::new(mask()),
            Box::new(ScaledPinv {
                inner: mask(),
                scale: 0.0,
            }),
        ),
        (
            "2× box SR",
            Box::new(downsample()),
            Box::new(ScaledPinv {
                inner: downsample(),
                scale: 0.0,
            }),
        ),
    ];
    let settings = Ddnm::configure(
        &Knobs::new(Preset::Dps, OperatorSpec::Identity, STEPS),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(settings, Ddnm { eta: 0.85 });
    for (name, op, broken) in &cases {
        let p = exact(op.as_ref(), SIGMA, 70);
        let x = run(&settings, &p, op.as_ref(), SIGMA, 3);
        let r = p.ratio(&x);
        eprintln!("{name}: DDNM+ spread S = {:.3}", p.spread(&x));
        let r_broken = p.ratio(&run(&settings, &p, broken.as_ref(), SIGMA, 3));
        let r_unguided = p.ratio(&unguided(&p, 3));
        eprintln!(
            "{name}: DDNM+ {} R = {r:.2} (threshold {THRESHOLD}); without A⁺ correction: R = {r_broken:.1}; unguided: R = {r_unguided:.1}",
            settings.summary()
        );
        assert!(r < THRESHOLD, "{name}: DDNM+ R = {r}");
        assert!(
            r_broken > 3.0 * THRESHOLD,
            "{name}: no correction should fail, R = {r_broken}"
        );
        assert!(
            r_unguided > 3.0 * THRESHOLD,
            "{name}: unguided R = {r_unguided}"
        );
    }
}

/// σ = 0 (DDNM proper): every x̂0' the observer sees, and the result, has its observed pixels
/// equal to y (to f32 rounding), and the missing pixels' mean is the prior's (the prior is
/// independent per pixel, so the posterior there is the prior).
#[test]
fn ddnm_noiseless_observed_pixels_equal_y() {
    let m = mask();
    let mt = m.tensor().clone();
    let p = exact(&m, 0.0, 80);
    let mut worst = 0.0f64;
    let mut steps = 0;
    let x0 = {
        let mut observer = Observer::with_view(|v: &StepView| {
            let e = max_abs(&((v.x0_hat.clone() - p.y.clone()) * mt.clone()));
            worst = worst.max(e);
            steps += 1;
        });
        solve(&Ddnm::default(), &p, &m, 0.0, 82, &mut observer).unwrap()
    };
    let final_dev = max_abs(&((x0.clone() - p.y.clone()) * mt.clone()));
    eprintln!(
        "noise-free DDNM: max |M(x̂0' − y)| over {steps} steps = {worst:.2e}, final {final_dev:.2e}"
    );
    assert_eq!(steps, STEPS);
    assert!(worst <= 1e-6 && final_dev <= 1e-6, "{worst} {final_dev}");
    // Missing pixels: batch mean against μ, relative to the Monte-Carlo error s²/B.
    let hole = mt.neg().add_scalar(1.0);
    let xbar = x0.mean_dim(0);
    let err = to_vec(&((xbar - p.prior.mean.clone()) * hole.clone()).powf_scalar(2.0));
    let count = to_vec(&hole).iter().sum::<f32>() as f64 * CHANNELS as f64;
    let r = err.iter().map(|v| *v as f64).sum::<f64>() / count / (PRIOR_VAR / BATCH as f64);
    eprintln!("noise-free DDNM: missing pixels R = {r:.2}");
    assert!(r < THRESHOLD, "missing pixels R = {r}");
}

#[test]
fn registry_defaults_summaries_and_checks() {
    assert_eq!("diffpir".parse::<Method>().unwrap(), Method::DiffPir);
    assert_eq!("ddnm".parse::<Method>().unwrap(), Method::Ddnm);
    assert_eq!("ddnm+".parse::<Method>().unwrap(), Method::Ddnm);
    assert_eq!(
        (Method::DiffPir.title(), Method::Ddnm.title()),
        ("DiffPIR", "DDNM")
    );
    let inpaint = OperatorSpec::InpaintRandom { drop: 0.5 };
    let knobs = Knobs::new(Preset::Sheet, inpaint.clone(), 50);
    let settings = Method::DiffPir.configure(&knobs, &mut Vec::new()).unwrap();
    assert_eq!(settings.summary(), "λ=1, ζ=1");
    assert_eq!(
        diffpir_for(OperatorSpec::GaussianBlur {
            size: 61,
            sigma: 3.0
        })
        .summary(),
        "λ=7, ζ=0.3"
    );
    let over = Knobs {
        lambda: Some(3.0),
        zeta: Some(0.5),
        ..knobs.clone()
    };
    assert_eq!(
        DiffPir::configure(&over, &mut Vec::new()).unwrap(),
        DiffPir {
            lambda: 3.0,
            zeta: 0.5
        }
    );
    for (lambda, zeta) in [
        (0.0, 0.5),
        (-1.0, 0.5),
        (f64::NAN, 0.5),
        (f64::INFINITY, 0.5),
        (1.0, 1.5),
        (1.0, -0.1),
    ] {
        let bad = Knobs {
            lambda: Some(lambda),
            zeta: Some(zeta),
            ..knobs.clone()
        };
        let err = DiffPir::configure(&bad, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lambda") || err.contains("zeta"), "{err}");
    }
    assert_eq!(
        Method::Ddnm
            .configure(&knobs, &mut Vec::new())
            .unwrap()
            .summary(),
        "η=0.85"
    );

    // Bad η (own or the chain's) and bad σ are errors, not panics.
    let m = mask();
    let p = exact(&m, SIGMA, 90);
    let err = solve(
        &Ddnm { eta: 1.5 },
        &p,
        &m,
        SIGMA,
        1,
        &mut Observer::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("eta"), "{err}");
    let err = solve(&Ddnm::default(), &p, &m, -1.0, 1, &mut Observer::default()).unwrap_err();
    assert!(err.to_string().contains("sigma"), "{err}");
    let bad = DiffPir {
        lambda: -1.0,
        zeta: 0.3,
    };
    assert!(solve(&bad, &p, &m, SIGMA, 1, &mut Observer::default()).is_err());
}
