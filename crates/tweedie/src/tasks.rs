//! The problem sheet's experiments as reusable pipelines.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tweedie_core::{EpsModel, NoiseSource, Schedule};
use tweedie_metrics::{Lpips, psnr, ssim};
use tweedie_operators::{Operator, OperatorSpec, build, measure};
use tweedie_samplers::{
    AldOptions, ChainOptions, DpsOptions, DpsStep, Gamma, Observer, SampleError,
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

/// Settings of a restoration run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreSettings {
    /// Algorithm.
    pub method: Method,
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
    /// Seed (operator randomness, measurement noise, sampler).
    pub seed: u64,
    /// Injected variance of the reverse steps.
    pub variance: tweedie_core::diffusion::StepVariance,
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
    let [_, _, h, w] = x.dims();
    let mut noise = NoiseSource::new(settings.seed);
    let op: Box<dyn Operator> = build(&settings.op, h, w, &mut noise, device)?;
    let y = measure(op.as_ref(), x.clone(), settings.sigma, &mut noise)?;
    let init = op.initialise(y.clone());
    let measurement_image = if init.dims() == x.dims() {
        init.clone()
    } else {
        op.adjoint(y.clone())
    };
    let chain = ChainOptions {
        steps: settings.steps,
        variance: settings.variance,
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
    })
}
