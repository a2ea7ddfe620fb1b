//! The problem sheet's experiments as reusable pipelines.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tweedie_core::diffusion::StepVariance;
use tweedie_core::{EpsModel, NoiseSource, Schedule};
use tweedie_metrics::{Lpips, LpipsError, MetricError, psnr, ssim};
use tweedie_operators::{Operator, OperatorSpec, build, measure};
use tweedie_samplers::{ChainOptions, Denoiser, Observer, Problem, SampleError};

/// Errors of the pipelines.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Sampler failure (divergence, bad parameter).
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// Operator construction failure.
    #[error(transparent)]
    Operator(#[from] tweedie_operators::OperatorError),
    /// A pixel metric (PSNR, SSIM) failed.
    #[error("metrics")]
    Metric(#[from] MetricError),
    /// LPIPS failed.
    #[error("metrics")]
    Lpips(#[from] LpipsError),
    /// A measured image whose size does not fit the operator (sizes are width×height).
    #[error(
        "the measurement is {}×{} but {operator} of {}×{} images measures {}×{}",
        got.0, got.1, image.0, image.1, want.0, want.1
    )]
    MeasurementSize {
        /// The measurement's (width, height).
        got: (usize, usize),
        /// The operator's output (width, height).
        want: (usize, usize),
        /// The images' (width, height).
        image: (usize, usize),
        /// The operator's description.
        operator: String,
    },
    /// A measurement that cannot be used as given (random operator, bad shape, K < 2).
    #[error("{0}")]
    Measured(String),
}

/// PSNR / SSIM / LPIPS of one image against its reference.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Scores {
    /// PSNR in dB ([0, 1] scale).
    pub psnr: f64,
    /// SSIM.
    pub ssim: f64,
    /// LPIPS (AlexNet).
    pub lpips: f64,
}

impl Scores {
    /// The mean of several scores (NaN-free inputs give a NaN-free mean).
    pub fn mean(v: &[Scores]) -> Scores {
        let n = v.len() as f64;
        Scores {
            psnr: v.iter().map(|s| s.psnr).sum::<f64>() / n,
            ssim: v.iter().map(|s| s.ssim).sum::<f64>() / n,
            lpips: v.iter().map(|s| s.lpips).sum::<f64>() / n,
        }
    }

    /// `"PSNR/LPIPS 27.3 / 0.203"`-style caption.
    pub fn caption(&self) -> String {
        format!("{:.1} / {:.3}", self.psnr, self.lpips)
    }
}

/// Scores each item of `x` against `reference` (both `[B, 3, H, W]` in [−1, 1]).
pub fn score(
    lpips: &Lpips,
    x: &Tensor<4>,
    reference: &Tensor<4>,
) -> Result<Vec<Scores>, TaskError> {
    let p = psnr(x, reference)?;
    let s = if x.dims()[2] >= 11 && x.dims()[3] >= 11 {
        ssim(x, reference)?
    } else {
        vec![f64::NAN; p.len()]
    };
    let l = lpips.distance(x, reference)?;
    Ok(p.into_iter()
        .zip(s)
        .zip(l)
        .map(|((psnr, ssim), lpips)| Scores { psnr, ssim, lpips })
        .collect())
}

pub use tweedie_samplers::{Knobs, Method, Preset, Settings, dps_config_scale};

/// Settings of a restoration run: everything that decides its result, written to the run's
/// JSON (`{"solver": {"method": "dps", "step": …}, "preset": "dps", "op": …, …}`) and shown in
/// the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreSettings {
    /// The method and its own settings (DPS's step, SDEdit's t0, DDNM's η, …), kept apart from
    /// the run's common settings so that a method's field never collides with them.
    pub solver: Settings,
    /// The preset the sampler settings came from (`None`: set one by one).
    pub preset: Option<Preset>,
    /// Measurement.
    pub op: OperatorSpec,
    /// Measurement noise σ ([−1, 1] scale).
    pub sigma: f64,
    /// Reverse steps.
    pub steps: usize,
    /// Seed (operator randomness, measurement noise, sampler).
    pub seed: u64,
    /// Injected variance of the reverse steps, as run (see [`RestoreSettings::for_model`]).
    pub variance: StepVariance,
    /// x̂0 clamped to [−1, 1] before each step.
    pub clip_x0: bool,
    /// DDIM steps with this η ∈ [0, 1] instead of ancestral steps (`None`: ancestral, σ from
    /// `variance`).
    #[serde(default)]
    pub eta: Option<f64>,
    /// What was adjusted (e.g. learned variance without a variance output, ζ scaled).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl RestoreSettings {
    /// The settings of `method` for `knobs` (its preset, operator, steps and overrides), with
    /// the sheet's defaults for the rest: σ_y = 0.05, the preset's variance, x̂0 clipped, seed 0.
    pub fn configure(method: Method, knobs: &Knobs) -> Result<Self, TaskError> {
        let mut notes = Vec::new();
        let solver = method.configure(knobs, &mut notes)?;
        Ok(Self {
            solver,
            preset: Some(knobs.preset),
            op: knobs.op.clone(),
            sigma: 0.05,
            steps: knobs.steps,
            seed: 0,
            variance: knobs.preset.variance(),
            clip_x0: true,
            eta: None,
            notes,
        })
    }

    /// The settings of `preset` for `method` on `op` with 1000 steps and every method's
    /// defaults (see [`RestoreSettings::configure`]).
    pub fn new(method: Method, preset: Preset, op: OperatorSpec) -> Self {
        Self::configure(method, &Knobs::new(preset, op, 1000))
            .expect("every method's defaults are valid")
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.solver.method()
    }

    /// Adjusts the settings to what `model` can run and says so in [`RestoreSettings::notes`]:
    /// learned variance on a model without a variance output runs as σ² = β
    /// (guided-diffusion's `fixed_large`).
    pub fn for_model(mut self, model: &dyn EpsModel) -> Self {
        if self.variance == StepVariance::Learned && !model.has_learned_variance() {
            self.variance = StepVariance::Beta;
            self.notes.push(
                "the model has no learned variance: learned_range runs as fixed_large (σ² = β)"
                    .into(),
            );
        }
        self
    }

    /// A one-line summary for captions and reports, e.g.
    /// `DPS (preset dps): residual ζ=0.5, σ²=learned, 1000 steps, σ_y=0.05`.
    pub fn summary(&self) -> String {
        let preset = self
            .preset
            .map(|p| format!(" (preset {p})"))
            .unwrap_or_default();
        let variance = match (self.eta, self.variance) {
            (Some(eta), _) => format!("DDIM η={eta}"),
            (None, StepVariance::Beta) => "σ²=β".into(),
            (None, StepVariance::Posterior) => "σ²=β̃".into(),
            (None, StepVariance::Learned) => "σ²=learned".into(),
        };
        // A ζ scaled with the stride says so (its note holds the factor).
        let scaled = if self
            .notes
            .iter()
            .any(|n| n.contains("scaled with the stride"))
        {
            " (×1000/steps)"
        } else {
            ""
        };
        format!(
            "{}{preset}: {}{scaled}, {variance}, {} steps, σ_y={}",
            self.method(),
            self.solver.summary(),
            self.steps,
            self.sigma
        )
    }
}

/// The images and numbers of one restoration.
pub struct Restoration {
    /// y = A(x) + σn (in measurement space).
    pub measurement: Tensor<4>,
    /// A displayable image-space version of y (A⁺y, or y itself).
    pub measurement_image: Tensor<4>,
    /// The initialisation shown on the sheet (SDEdit: x_{t0}; others: A⁺y).
    pub initialisation: Tensor<4>,
    /// The reconstruction x̂.
    pub reconstruction: Tensor<4>,
    /// Operator description.
    pub description: String,
    /// The operator the measurement was made with (its kernel or mask can be saved with
    /// [`Operator::save_params`]).
    pub operator: Box<dyn Operator>,
}

/// A simulated measurement.
pub struct Measurement {
    /// The operator A (random parts drawn from the run's seed).
    pub operator: Box<dyn Operator>,
    /// y = A(x) + σn.
    pub y: Tensor<4>,
    /// y seen as an image ([`crate::calibrate::measurement_image`]: A⁺y for masks and SR, y for
    /// blurs). The "measurement only" baseline is this image.
    pub image: Tensor<4>,
}

/// Builds the operator of `settings` and simulates y = A(x) + σn exactly as [`restore`] does
/// with the same settings (same seed, same draws), without running a sampler.
pub fn simulate(
    x: &Tensor<4>,
    settings: &RestoreSettings,
    device: &Device,
) -> Result<Measurement, TaskError> {
    simulate_with(
        x,
        &settings.op,
        settings.sigma,
        &mut NoiseSource::new(settings.seed),
        device,
    )
}

fn simulate_with(
    x: &Tensor<4>,
    spec: &OperatorSpec,
    sigma: f64,
    noise: &mut NoiseSource,
    device: &Device,
) -> Result<Measurement, TaskError> {
    let [_, _, h, w] = x.dims();
    let operator: Box<dyn Operator> = build(spec, h, w, noise, device)?;
    let y = measure(operator.as_ref(), x.clone(), sigma, noise)?;
    let image = crate::calibrate::measurement_image(operator.as_ref(), y.clone(), x.dims());
    Ok(Measurement { operator, y, image })
}

/// Where the measurement of a restoration comes from.
#[derive(Clone, Copy)]
pub enum Observation<'a> {
    /// Simulate y = A(x) + σn from the clean images `x` `[B, 3, H, W]`, as [`simulate`]
    /// does (the operator's random parts and the noise from the run's seed).
    Simulated(&'a Tensor<4>),
    /// A measured y `[B, 3, h, w]` of images of `image_size` = `[height, width]` (the
    /// model's resolution), as [`measured`] takes it: no ground truth.
    Measured {
        /// The measurement, in the operator's output size (e.g. the 8×8 low-resolution image
        /// for ×4 super-resolution of 32×32 images).
        y: &'a Tensor<4>,
        /// `[height, width]` of the images being restored.
        image_size: [usize; 2],
    },
}

/// Whether building `op` draws random parameters (a motion-blur path, a random mask or a box
/// at a random position). Such an operator describes a simulated measurement only: an image
/// measured elsewhere needs its kernel or mask given (`KernelBlur`, `InpaintMask`).
pub fn is_random(op: &OperatorSpec) -> bool {
    matches!(
        op,
        OperatorSpec::MotionBlur { .. }
            | OperatorSpec::InpaintRandom { .. }
            | OperatorSpec::InpaintRandomBox { .. }
            | OperatorSpec::InpaintRandomRange { .. }
            | OperatorSpec::InpaintBox {
                random_margin: Some(_),
                ..
            }
    )
}

/// The `[height, width]` of A(x) for `[height, width]` images (e.g. `[8, 8]` for ×4
/// super-resolution of 32×32 images).
pub fn measurement_size(op: &dyn Operator, image_size: [usize; 2], device: &Device) -> [usize; 2] {
    let [h, w] = image_size;
    let [_, _, mh, mw] = op.forward(Tensor::zeros([1, 3, h, w], device)).dims();
    [mh, mw]
}

/// Builds the operator of `settings` for images of `image_size` = `[height, width]` and takes
/// the measured `y` `[B, 3, h, w]` as its measurement: y must have the operator's output size
/// (see [`measurement_size`]; [`TaskError::MeasurementSize`] names both), and the operator
/// must be fully given ([`is_random`] specs are refused). For masks only the observed pixels
/// count: y ← A(y), so that whatever the missing pixels hold changes nothing (not even the
/// residual norm of DPS's rule). The image of the measurement is A⁺y for masks and SR, y for
/// blurs.
pub fn measured(
    y: &Tensor<4>,
    image_size: [usize; 2],
    settings: &RestoreSettings,
    device: &Device,
) -> Result<Measurement, TaskError> {
    measured_with(
        y,
        image_size,
        &settings.op,
        &mut NoiseSource::new(settings.seed),
        device,
    )
}

fn measured_with(
    y: &Tensor<4>,
    image_size: [usize; 2],
    spec: &OperatorSpec,
    noise: &mut NoiseSource,
    device: &Device,
) -> Result<Measurement, TaskError> {
    if is_random(spec) {
        return Err(TaskError::Measured(format!(
            "the operator {} is drawn at random, so it cannot describe a measured image: give its kernel or mask (a kernel-blur or inpaint-mask operator)",
            serde_json::to_string(spec).unwrap_or_default()
        )));
    }
    let [h, w] = image_size;
    let [b, c, yh, yw] = y.dims();
    if b == 0 || c != 3 {
        return Err(TaskError::Measured(format!(
            "a measurement is [B ≥ 1, 3, H, W], got {:?}",
            y.dims()
        )));
    }
    let operator: Box<dyn Operator> = build(spec, h, w, noise, device)?;
    let [mh, mw] = measurement_size(operator.as_ref(), image_size, device);
    if [yh, yw] != [mh, mw] {
        return Err(TaskError::MeasurementSize {
            got: (yw, yh),
            want: (mw, mh),
            image: (w, h),
            operator: operator.describe(),
        });
    }
    let y = if spec.is_mask() {
        operator.forward(y.clone())
    } else {
        y.clone()
    };
    let image = crate::calibrate::measurement_image(operator.as_ref(), y.clone(), [b, 3, h, w]);
    Ok(Measurement { operator, y, image })
}

/// The measurement of `observation` (simulated from the seed's stream, or measured), the
/// shape of its images, and the noise stream that the sampler continues.
fn observe(
    observation: Observation,
    settings: &RestoreSettings,
    device: &Device,
) -> Result<(Measurement, [usize; 4], NoiseSource), TaskError> {
    let mut noise = NoiseSource::new(settings.seed);
    let (m, shape) = match observation {
        Observation::Simulated(x) => (
            simulate_with(x, &settings.op, settings.sigma, &mut noise, device)?,
            x.dims(),
        ),
        Observation::Measured { y, image_size } => {
            let m = measured_with(y, image_size, &settings.op, &mut noise, device)?;
            let [h, w] = image_size;
            (m, [y.dims()[0], 3, h, w])
        }
    };
    Ok((m, shape, noise))
}

/// Runs the method of `settings` on the measurement `y` (batch = `shape[0]`), drawing from
/// `noise`: returns (x̂, the initialisation). The one sampler dispatch of [`restore`],
/// [`restore_measured`] and [`posterior_samples`].
#[allow(clippy::too_many_arguments)]
fn run_method(
    model: &dyn EpsModel,
    schedule: &Schedule,
    op: &dyn Operator,
    y: Tensor<4>,
    shape: [usize; 4],
    settings: &RestoreSettings,
    noise: &mut NoiseSource,
    observer: &mut Observer,
) -> Result<(Tensor<4>, Tensor<4>), TaskError> {
    let chain = ChainOptions {
        steps: settings.steps,
        variance: settings.variance,
        clip_x0: settings.clip_x0,
        eta: settings.eta,
        ..Default::default()
    };
    let problem = Problem::new(op, y, settings.sigma);
    let solution = settings.solver.solve(
        &Denoiser::new(model, schedule),
        &problem,
        shape,
        &chain,
        noise,
        observer,
    )?;
    Ok((solution.output.x0, solution.initialisation))
}

/// Restores the measurement of `observation` with the method of `settings` (the operator from
/// `settings.op`); the reconstruction is clamped to [−1, 1]. [`restore`] and
/// [`restore_measured`] are this function.
pub fn restore_from(
    model: &dyn EpsModel,
    schedule: &Schedule,
    observation: Observation,
    settings: &RestoreSettings,
    device: &Device,
    observer: &mut Observer,
) -> Result<Restoration, TaskError> {
    let (m, shape, mut noise) = observe(observation, settings, device)?;
    let (reconstruction, initialisation) = run_method(
        model,
        schedule,
        m.operator.as_ref(),
        m.y.clone(),
        shape,
        settings,
        &mut noise,
        observer,
    )?;
    Ok(Restoration {
        measurement: m.y,
        measurement_image: m.image,
        initialisation,
        reconstruction: reconstruction.clamp(-1.0, 1.0),
        description: m.operator.describe(),
        operator: m.operator,
    })
}

/// Simulates y from `x` and restores it with the chosen method.
pub fn restore(
    model: &dyn EpsModel,
    schedule: &Schedule,
    x: &Tensor<4>,
    settings: &RestoreSettings,
    device: &Device,
    observer: &mut Observer,
) -> Result<Restoration, TaskError> {
    restore_from(
        model,
        schedule,
        Observation::Simulated(x),
        settings,
        device,
        observer,
    )
}

/// Restores a measured `y` (no ground truth) of images of `image_size` = `[height, width]`
/// (the model's resolution) with the method and operator of `settings`: see [`measured`] for
/// what y must be. Seeded by `settings.seed` like [`restore`]; `settings.sigma` is the noise
/// level assumed for y (Score-ALD's likelihood), not added.
pub fn restore_measured(
    model: &dyn EpsModel,
    schedule: &Schedule,
    y: &Tensor<4>,
    image_size: [usize; 2],
    settings: &RestoreSettings,
    device: &Device,
    observer: &mut Observer,
) -> Result<Restoration, TaskError> {
    restore_from(
        model,
        schedule,
        Observation::Measured { y, image_size },
        settings,
        device,
        observer,
    )
}

/// The operators of a batch's items, applied item by item (for operators drawn at random,
/// which differ between items).
struct PerItem<'a> {
    ops: Vec<&'a dyn Operator>,
}

impl PerItem<'_> {
    fn each(&self, x: Tensor<4>, f: impl Fn(&dyn Operator, Tensor<4>) -> Tensor<4>) -> Tensor<4> {
        assert_eq!(
            x.dims()[0],
            self.ops.len(),
            "a per-item operator of {} items applied to a batch of {}",
            self.ops.len(),
            x.dims()[0]
        );
        let parts = self
            .ops
            .iter()
            .enumerate()
            .map(|(i, op)| f(*op, x.clone().narrow(0, i, 1)))
            .collect();
        Tensor::cat(parts, 0)
    }
}

impl Operator for PerItem<'_> {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.each(x, |op, x| op.forward(x))
    }
    fn adjoint(&self, y: Tensor<4>) -> Tensor<4> {
        self.each(y, |op, y| op.adjoint(y))
    }
    fn pseudo_inverse(&self, y: Tensor<4>) -> Tensor<4> {
        self.each(y, |op, y| op.pseudo_inverse(y))
    }
    fn prox_l2(&self, z: Tensor<4>, y: Tensor<4>, gamma: f64) -> Tensor<4> {
        let b = z.dims()[0];
        let parts = (0..b)
            .map(|i| {
                self.ops[i].prox_l2(z.clone().narrow(0, i, 1), y.clone().narrow(0, i, 1), gamma)
            })
            .collect();
        Tensor::cat(parts, 0)
    }
    fn describe(&self) -> String {
        self.ops[0].describe()
    }
    fn initialise(&self, y: Tensor<4>) -> Tensor<4> {
        self.each(y, |op, y| op.initialise(y))
    }
}

/// Restores each image of `x` `[B, 3, H, W]` in one batched chain, exactly as [`restore`]
/// restores it alone with `settings.seed = seeds[i]`: item i's operator (its random parts),
/// measurement noise and sampler noise all come from `NoiseSource::new(seeds[i])` in the
/// order [`restore`] draws them ([`NoiseSource::per_item`]). Operators fully given by their
/// spec are applied to the batch at once; random ones ([`is_random`]) item by item. Returns
/// one [`Restoration`] per item (each with its own operator and measurement).
pub fn restore_each(
    model: &dyn EpsModel,
    schedule: &Schedule,
    x: &Tensor<4>,
    settings: &RestoreSettings,
    seeds: &[u64],
    device: &Device,
    observer: &mut Observer,
) -> Result<Vec<Restoration>, TaskError> {
    let b = x.dims()[0];
    if b == 0 || seeds.len() != b {
        return Err(TaskError::Measured(format!(
            "a batch of {b} images needs as many seeds (≥ 1), got {}",
            seeds.len()
        )));
    }
    let mut streams: Vec<NoiseSource> = seeds.iter().map(|&s| NoiseSource::new(s)).collect();
    let measurements = streams
        .iter_mut()
        .enumerate()
        .map(|(i, noise)| {
            simulate_with(
                &x.clone().narrow(0, i, 1),
                &settings.op,
                settings.sigma,
                noise,
                device,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let y = Tensor::cat(measurements.iter().map(|m| m.y.clone()).collect(), 0);
    let per_item = PerItem {
        ops: measurements.iter().map(|m| m.operator.as_ref()).collect(),
    };
    let op: &dyn Operator = if b > 1 && is_random(&settings.op) {
        &per_item
    } else {
        measurements[0].operator.as_ref()
    };
    let mut noise = NoiseSource::per_item(streams);
    let (reconstruction, initialisation) = run_method(
        model,
        schedule,
        op,
        y,
        x.dims(),
        settings,
        &mut noise,
        observer,
    )?;
    drop(per_item);
    let reconstruction = reconstruction.clamp(-1.0, 1.0);
    Ok(measurements
        .into_iter()
        .enumerate()
        .map(|(i, m)| Restoration {
            measurement: m.y,
            measurement_image: m.image,
            initialisation: initialisation.clone().narrow(0, i, 1),
            reconstruction: reconstruction.clone().narrow(0, i, 1),
            description: m.operator.describe(),
            operator: m.operator,
        })
        .collect())
}

/// K posterior samples of one measurement, with their per-pixel mean and spread.
pub struct PosteriorSamples {
    /// The measurement, its image, the operator, and the first sample's initialisation;
    /// `reconstruction` is the posterior mean [`PosteriorSamples::mean`] clamped to [−1, 1].
    pub restoration: Restoration,
    /// The samples `[K, 3, H, W]` (clamped to [−1, 1] when `settings.clip_x0`: the data
    /// range; as sampled otherwise, e.g. for analytic priors).
    pub samples: Tensor<4>,
    /// Their mean `[1, 3, H, W]` (the MMSE estimate as K → ∞).
    pub mean: Tensor<4>,
    /// Their standard deviation per pixel and channel `[1, 3, H, W]`, over the samples
    /// (Bessel-corrected: divided by K − 1).
    pub std: Tensor<4>,
}

impl PosteriorSamples {
    /// The per-pixel standard deviation averaged over the channels, `[1, 1, H, W]`.
    pub fn std_map(&self) -> Tensor<4> {
        self.std.clone().mean_dim(1)
    }
}

/// Draws `samples` (K ≥ 2) posterior samples of the one measurement of `observation` (a batch
/// of one image or one y) in one batched chain: y is repeated K times along the batch, every
/// sample draws its own noise (the samplers are batched, and DPS's step is per item).
/// Returns the samples, their mean and their per-pixel standard deviation.
pub fn posterior_samples(
    model: &dyn EpsModel,
    schedule: &Schedule,
    observation: Observation,
    settings: &RestoreSettings,
    samples: usize,
    device: &Device,
    observer: &mut Observer,
) -> Result<PosteriorSamples, TaskError> {
    if samples < 2 {
        return Err(TaskError::Measured(format!(
            "posterior samples need K ≥ 2 (a spread needs two), got {samples}"
        )));
    }
    let (m, shape, mut noise) = observe(observation, settings, device)?;
    if shape[0] != 1 {
        return Err(TaskError::Measured(format!(
            "posterior samples are drawn for one measurement at a time, got a batch of {}",
            shape[0]
        )));
    }
    let y = m.y.clone().repeat_dim(0, samples);
    let (x, initialisation) = run_method(
        model,
        schedule,
        m.operator.as_ref(),
        y,
        [samples, shape[1], shape[2], shape[3]],
        settings,
        &mut noise,
        observer,
    )?;
    let x = if settings.clip_x0 {
        x.clamp(-1.0, 1.0)
    } else {
        x
    };
    let mean = x.clone().mean_dim(0);
    let std = x.clone().var(0).sqrt();
    Ok(PosteriorSamples {
        restoration: Restoration {
            measurement: m.y,
            measurement_image: m.image,
            initialisation: initialisation.narrow(0, 0, 1),
            reconstruction: mean.clone().clamp(-1.0, 1.0),
            description: m.operator.describe(),
            operator: m.operator,
        },
        samples: x,
        mean,
        std,
    })
}
