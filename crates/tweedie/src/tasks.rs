//! The problem sheet's experiments as reusable pipelines.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tweedie_core::diffusion::StepVariance;
use tweedie_core::{EpsModel, NoiseSource, Schedule};
use tweedie_metrics::{Lpips, psnr, ssim};
use tweedie_operators::{Operator, OperatorSpec, build, measure};
use tweedie_samplers::{
    AldOptions, AldRule, ChainOptions, DpsOptions, DpsStep, Gamma, Observer, SampleError,
};

/// Errors of the pipelines.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Sampler failure (divergence, bad parameter).
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// Operator construction failure.
    #[error(transparent)]
    Operator(#[from] tweedie_operators::OperatorError),
    /// Metric failure.
    #[error("metrics: {0}")]
    Metric(String),
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
    let m = |e: String| TaskError::Metric(e);
    let p = psnr(x, reference).map_err(|e| m(e.to_string()))?;
    let s = if x.dims()[2] >= 11 && x.dims()[3] >= 11 {
        ssim(x, reference).map_err(|e| m(e.to_string()))?
    } else {
        vec![f64::NAN; p.len()]
    };
    let l = lpips.distance(x, reference).map_err(|e| m(e.to_string()))?;
    Ok(p.into_iter()
        .zip(s)
        .zip(l)
        .map(|((psnr, ssim), lpips)| Scores { psnr, ssim, lpips })
        .collect())
}

/// Which restoration algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Task 4.
    Sdedit,
    /// Task 5.
    Ald,
    /// Task 6.
    Dps,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sdedit" => Ok(Method::Sdedit),
            "ald" | "score-ald" => Ok(Method::Ald),
            "dps" => Ok(Method::Dps),
            other => Err(format!(
                "unknown method {other:?}: expected sdedit, ald or dps"
            )),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Sdedit => "SDEdit",
            Method::Ald => "Score-ALD",
            Method::Dps => "DPS",
        })
    }
}

/// A named set of sampler settings, so that a run reproduces a known reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The problem sheet's formulas: σ² = β, DPS with ζ_t = ζ/‖∇_{x_t}‖A(x̂0) − y‖²‖ (ζ = 1
    /// unless given), Score-ALD with the stabilised update unless the sheet's literal one is
    /// asked for.
    Sheet,
    /// The official DPS code and configs: learned-range variance (σ² = β where the model has
    /// no variance output, guided-diffusion's `fixed_large`), the residual rule
    /// x −= ζ∇‖y − A(x̂0)‖ with `scale` ζ = 0.5 for inpainting and 0.3 for blur and SR, x̂0
    /// clipped to [−1, 1].
    Dps,
}

impl Preset {
    /// The reverse-step variance of the preset.
    pub fn variance(self) -> StepVariance {
        match self {
            Preset::Sheet => StepVariance::Beta,
            Preset::Dps => StepVariance::Learned,
        }
    }

    /// The DPS step of the preset for `op`, with ζ overridden by `zeta` when given.
    pub fn dps_step(self, op: &OperatorSpec, zeta: Option<f64>) -> DpsStep {
        match self {
            Preset::Sheet => DpsStep::Normalized {
                zeta: zeta.unwrap_or(1.0),
            },
            Preset::Dps => DpsStep::Residual {
                zeta: zeta.unwrap_or_else(|| dps_config_scale(op)),
            },
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Preset::Sheet => "sheet",
            Preset::Dps => "dps",
        })
    }
}

/// The DPS configs' `scale` for an operator: 0.5 for inpainting (boxes, random pixels, masks), 0.3 for
/// Gaussian blur, motion blur and super-resolution (and anything else).
pub fn dps_config_scale(op: &OperatorSpec) -> f64 {
    match op {
        OperatorSpec::InpaintBox { .. }
        | OperatorSpec::InpaintRandom { .. }
        | OperatorSpec::InpaintRandomBox { .. }
        | OperatorSpec::InpaintRandomRange { .. }
        | OperatorSpec::InpaintMask { .. } => 0.5,
        _ => 0.3,
    }
}

/// Settings of a restoration run: everything that decides its result, written to the run's
/// JSON and shown in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreSettings {
    /// Algorithm.
    pub method: Method,
    /// The preset the sampler settings came from (`None`: set one by one).
    pub preset: Option<Preset>,
    /// Measurement.
    pub op: OperatorSpec,
    /// Measurement noise σ ([−1, 1] scale).
    pub sigma: f64,
    /// Reverse steps.
    pub steps: usize,
    /// SDEdit starting timestep.
    pub t0: usize,
    /// DPS step.
    pub dps_step: DpsStep,
    /// Score-ALD γ_t schedule and multiplier.
    pub ald_gamma: Gamma,
    /// Score-ALD step multiplier λ.
    pub ald_scale: f64,
    /// Score-ALD update: stabilised (ours) or the sheet's literal one.
    pub ald_rule: AldRule,
    /// Seed (operator randomness, measurement noise, sampler).
    pub seed: u64,
    /// Injected variance of the reverse steps, as run (see [`RestoreSettings::for_model`]).
    pub variance: StepVariance,
    /// x̂0 clamped to [−1, 1] before each step.
    pub clip_x0: bool,
    /// What was adjusted for the model (e.g. learned variance without a variance output).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl RestoreSettings {
    /// The settings of `preset` for `method` on `op`, with the sheet's defaults for the rest:
    /// σ_y = 0.05, 1000 steps, SDEdit t0 = 500, Score-ALD γ_t = Tweedie's, λ = 1, the
    /// stabilised update, seed 0.
    pub fn new(method: Method, preset: Preset, op: OperatorSpec) -> Self {
        Self {
            method,
            preset: Some(preset),
            dps_step: preset.dps_step(&op, None),
            op,
            sigma: 0.05,
            steps: 1000,
            t0: 500,
            ald_gamma: Gamma::Tweedie,
            ald_scale: 1.0,
            ald_rule: AldRule::Stabilised,
            seed: 0,
            variance: preset.variance(),
            clip_x0: true,
            notes: Vec::new(),
        }
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
        let variance = match self.variance {
            StepVariance::Beta => "β",
            StepVariance::Posterior => "β̃",
            StepVariance::Learned => "learned",
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
        let rule = match self.method {
            Method::Dps => match self.dps_step {
                DpsStep::Residual { zeta } => format!("residual ζ={zeta}{scaled}, "),
                DpsStep::Normalized { zeta } => format!("normalized ζ={zeta}{scaled}, "),
            },
            Method::Ald => match self.ald_rule {
                AldRule::Stabilised => format!("stabilised λ={}, ", self.ald_scale),
                AldRule::Sheet => format!("sheet-literal λ={}, ", self.ald_scale),
            },
            Method::Sdedit => format!("t0={}, ", self.t0),
        };
        format!(
            "{}{preset}: {rule}σ²={variance}, {} steps, σ_y={}",
            self.method, self.steps, self.sigma
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

/// Simulates y from `x` and restores it with the chosen method.
pub fn restore(
    model: &dyn EpsModel,
    schedule: &Schedule,
    x: &Tensor<4>,
    settings: &RestoreSettings,
    device: &Device,
    observer: &mut Observer,
) -> Result<Restoration, TaskError> {
    let mut noise = NoiseSource::new(settings.seed);
    let Measurement {
        operator: op,
        y,
        image: measurement_image,
    } = simulate_with(x, &settings.op, settings.sigma, &mut noise, device)?;
    let init = op.initialise(y.clone());
    let chain = ChainOptions {
        steps: settings.steps,
        variance: settings.variance,
        clip_x0: settings.clip_x0,
        ..Default::default()
    };
    let shape = x.dims();
    let (reconstruction, initialisation) = match settings.method {
        Method::Sdedit => {
            let t0 = settings.t0;
            schedule.check_timestep(t0).map_err(SampleError::from)?;
            let steps = (settings.steps * t0).div_ceil(schedule.num_steps()).max(1);
            let opts = ChainOptions { steps, ..chain };
            // x_{t0} = √ᾱ_{t0} A⁺y + √(1 − ᾱ_{t0}) z: shown as the initialisation and run from.
            let z = noise.normal_like(&init);
            let x_t0 = tweedie_core::diffusion::q_sample(init.clone(), z, schedule.alpha_bar[t0]);
            let out = tweedie_samplers::reverse_chain(
                model,
                schedule,
                x_t0.clone(),
                t0,
                &opts,
                &mut noise,
                observer,
            )?;
            (out.x0, x_t0)
        }
        Method::Ald => {
            let opts = AldOptions {
                chain,
                sigma: settings.sigma.max(1e-3),
                gamma: settings.ald_gamma,
                scale: settings.ald_scale,
                rule: settings.ald_rule,
            };
            let out = tweedie_samplers::score_ald(
                model,
                schedule,
                op.as_ref(),
                y.clone(),
                shape,
                &opts,
                &mut noise,
                device,
                observer,
            )?;
            (out.x0, init.clone())
        }
        Method::Dps => {
            let opts = DpsOptions {
                chain,
                step: settings.dps_step,
            };
            let out = tweedie_samplers::dps(
                model,
                schedule,
                op.as_ref(),
                y.clone(),
                shape,
                &opts,
                &mut noise,
                device,
                observer,
            )?;
            (out.x0, init.clone())
        }
    };
    Ok(Restoration {
        measurement: y,
        measurement_image,
        initialisation,
        reconstruction: reconstruction.clamp(-1.0, 1.0),
        description: op.describe(),
        operator: op,
    })
}
