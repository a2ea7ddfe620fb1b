//! Step-by-step parity with the official DPS code.
//!
//! A DPS fixture (`dps_<case>.json` + `dps_<case>.safetensors`, format in
//! `tests/fixtures/dps/README.md`) records one DPS run of the reference implementation with
//! every random draw: x_T, the ancestral noise of each step, the measurement y, and the
//! resulting trajectory. [`check_dps_case`] replays it with our samplers:
//!
//! - the operator alone: max |A(x0) − ax|;
//! - every step k started from the reference `trajectory[k−1]` (x_T for k = 0) with the
//!   recorded `noise[k]`: max |x_k − `trajectory[k]`| and √ᾱ_t · max |x̂0_k − `x0_hat[k]`|;
//! - the whole chain from x_T with all recorded noise: max |x_0 − out|.

use burn::tensor::{Device, Tensor};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tweedie_core::diffusion::StepVariance;
use tweedie_core::tensor::{from_vec, to_vec};
use tweedie_core::{EpsModel, NoiseSource, Schedule};
use tweedie_operators::{Blur, Mask, Operator, OperatorSpec, build};
use tweedie_samplers::{ChainOptions, Denoiser, DpsStep, Problem, ancestral_step, dps_step};

/// Why a fixture could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The files could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The files are not a DPS fixture.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file's content could not be parsed, or its settings give no chain: what, with the
    /// underlying error (JSON, safetensors, schedule) as its source.
    #[error("{path}: {context}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The operator could not be built.
    #[error(transparent)]
    Operator(#[from] tweedie_operators::OperatorError),
}

/// The settings file `dps_<case>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpsFixtureSettings {
    /// `none`, `gaussian_blur`, `motion_blur`, `inpainting_box` or `super_resolution`.
    pub case: String,
    /// The DPS config's `measurement.operator` block (`name` plus its arguments).
    pub operator: serde_json::Value,
    /// DPS `scale` (ζ of the residual rule); absent for `none`.
    pub dps_scale: Option<f64>,
    /// Measurement noise σ ([−1, 1] scale).
    pub sigma: f64,
    /// guided-diffusion's `model_var_type` (`learned_range`).
    pub variance: String,
    /// x̂0 clamped to [−1, 1].
    pub clip_x0: bool,
    /// Number of respaced steps.
    pub steps: usize,
    /// The original 0-based timestep of each step.
    pub timesteps: Vec<usize>,
}

/// One loaded fixture case.
pub struct DpsFixture {
    /// Its settings.
    pub settings: DpsFixtureSettings,
    /// The safetensors file it came from.
    pub path: PathBuf,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl DpsFixture {
    /// Loads `dps_<case>.json` and the safetensors file beside it.
    pub fn load(json: &Path) -> Result<Self, FixtureError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| FixtureError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let format = |p: &Path, reason: String| FixtureError::Format {
            path: p.to_path_buf(),
            reason,
        };
        let invalid = |p: &Path, context: &str, e: Box<dyn std::error::Error + Send + Sync>| {
            FixtureError::Invalid {
                path: p.to_path_buf(),
                context: context.into(),
                source: e,
            }
        };
        let settings: DpsFixtureSettings = serde_json::from_slice(&read(json)?)
            .map_err(|e| invalid(json, "not a DPS fixture settings file", e.into()))?;
        let path = json.with_extension("safetensors");
        let bytes = read(&path)?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| invalid(&path, "not a valid safetensors file", e.into()))?;
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(format(
                    &path,
                    format!("tensor {name} is {:?}, expected F32", view.dtype()),
                ));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.push((name, view.shape().to_vec(), values));
        }
        let fx = Self {
            settings,
            path,
            tensors,
        };
        fx.check()?;
        Ok(fx)
    }

    /// The same recorded tensors under other settings (to show that a wrong setting fails).
    pub fn with_settings(fx: &DpsFixture, settings: DpsFixtureSettings) -> DpsFixture {
        DpsFixture {
            settings,
            path: fx.path.clone(),
            tensors: fx.tensors.clone(),
        }
    }

    fn format_error(&self, reason: String) -> FixtureError {
        FixtureError::Format {
            path: self.path.clone(),
            reason,
        }
    }

    /// Shapes and counts that the replay relies on.
    fn check(&self) -> Result<(), FixtureError> {
        let s = &self.settings;
        if s.timesteps.len() != s.steps || s.steps == 0 {
            return Err(self.format_error(format!(
                "{} timesteps listed for {} steps",
                s.timesteps.len(),
                s.steps
            )));
        }
        let xt = self.shape("x_T")?;
        if xt.len() != 4 || xt[0] != 1 {
            return Err(self.format_error(format!("x_T must be 1×C×H×W, is {xt:?}")));
        }
        let per_step = [s.steps, xt[1], xt[2], xt[3]];
        for name in ["noise", "trajectory", "x0_hat"] {
            if self.shape(name)? != per_step {
                return Err(self.format_error(format!(
                    "{name} must be {per_step:?}, is {:?}",
                    self.shape(name)?
                )));
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Result<&(String, Vec<usize>, Vec<f32>), FixtureError> {
        self.tensors
            .iter()
            .find(|(n, ..)| n == name)
            .ok_or_else(|| self.format_error(format!("no tensor {name:?}")))
    }

    /// The shape of a stored tensor.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, FixtureError> {
        Ok(self.get(name)?.1.clone())
    }

    /// A stored tensor's values (row-major).
    pub fn values(&self, name: &str) -> Result<&[f32], FixtureError> {
        Ok(&self.get(name)?.2)
    }

    /// A stored 4-D tensor, or item `k` of its first axis as a batch of one.
    fn tensor4(
        &self,
        name: &str,
        k: Option<usize>,
        device: &Device,
    ) -> Result<Tensor<4>, FixtureError> {
        let (_, shape, v) = self.get(name)?;
        if shape.len() != 4 {
            return Err(self.format_error(format!("{name} must be 4-D, is {shape:?}")));
        }
        let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
        Ok(match k {
            None => from_vec(v.clone(), [n, c, h, w], device),
            Some(k) => {
                let len = c * h * w;
                from_vec(v[k * len..(k + 1) * len].to_vec(), [1, c, h, w], device)
            }
        })
    }

    /// The measurement operator the case used, built from its settings and stored kernel or
    /// mask; `None` for the unguided case.
    pub fn operator(&self, device: &Device) -> Result<Option<Box<dyn Operator>>, FixtureError> {
        let op = &self.settings.operator;
        let name = op.get("name").and_then(|v| v.as_str()).unwrap_or("");
        let num = |key: &str| {
            op.get(key)
                .and_then(|v| v.as_f64())
                .ok_or_else(|| self.format_error(format!("operator {name}: no number {key:?}")))
        };
        let [_, _, h, w]: [usize; 4] = self
            .shape("x0")?
            .try_into()
            .map_err(|s| self.format_error(format!("x0 must be 4-D, is {s:?}")))?;
        let mut noise = NoiseSource::new(0);
        Ok(Some(match (self.settings.case.as_str(), name) {
            ("none", _) => return Ok(None),
            (_, "gaussian_blur") => build(
                &OperatorSpec::GaussianBlur {
                    size: num("kernel_size")? as usize,
                    sigma: num("intensity")?,
                },
                h,
                w,
                &mut noise,
                device,
            )?,
            (_, "motion_blur") => {
                let shape = self.shape("kernel")?;
                let size = shape.first().copied().unwrap_or(0);
                Box::new(Blur::new(
                    self.values("kernel")?.to_vec(),
                    size,
                    format!("motion blur {size}×{size} (DPS fixture kernel)"),
                )?)
            }
            (_, "inpainting") => {
                let shape = self.shape("mask")?;
                if shape.len() != 4 || shape[2] != h || shape[3] != w {
                    return Err(
                        self.format_error(format!("mask must be 1×1×{h}×{w}, is {shape:?}"))
                    );
                }
                Box::new(Mask::from_values(
                    self.values("mask")?.to_vec(),
                    h,
                    w,
                    "inpainting (DPS fixture mask)".into(),
                    device,
                ))
            }
            (_, "super_resolution") => build(
                &OperatorSpec::SuperResolution {
                    factor: num("scale_factor")? as usize,
                },
                h,
                w,
                &mut noise,
                device,
            )?,
            (case, other) => {
                return Err(
                    self.format_error(format!("case {case}: unknown DPS operator {other:?}"))
                );
            }
        }))
    }

    /// The sampler settings the case used: learned-range variance (σ² = β without a variance
    /// output), x̂0 clipping, and the residual rule with the case's DPS `scale`.
    pub fn dps_options(&self) -> (ChainOptions, DpsStep) {
        let s = &self.settings;
        (
            ChainOptions {
                steps: s.steps,
                variance: if s.variance == "learned_range" {
                    StepVariance::Learned
                } else {
                    StepVariance::Beta
                },
                eta: None,
                clip_x0: s.clip_x0,
                snapshot_every: 0,
            },
            DpsStep::Residual {
                zeta: s.dps_scale.unwrap_or(0.0),
            },
        )
    }
}

/// Max abs errors of one replayed case.
#[derive(Debug, Clone, Serialize)]
pub struct DpsCaseReport {
    /// The case name.
    pub case: String,
    /// max |A(x0) − ax| (0 for the unguided case).
    pub operator_error: f64,
    /// max over steps of max |x_k − `trajectory[k]`|, each step started from the reference.
    pub one_step_error: f64,
    /// The step where that maximum occurs (0-based).
    pub worst_step: usize,
    /// max |x_k − `trajectory[k]`| of every step k.
    pub step_errors: Vec<f64>,
    /// max over steps of √ᾱ_t · max |x̂0_k − `x0_hat[k]`|: x̂0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t
    /// magnifies float rounding of ε by up to 1/√ᾱ_t ≈ 157 at t = 999, so the error is
    /// scaled back to x_t's units.
    pub x0_hat_error: f64,
    /// max |x_0 − out| of the whole chain from x_T.
    pub chain_error: f64,
}

fn max_abs_diff(a: &Tensor<4>, b: &[f32]) -> f64 {
    to_vec(a)
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

/// Replays a fixture case with `model` (the fixture's ADM) step by step and as a whole chain.
#[allow(clippy::needless_range_loop)] // k indexes the chain and three recorded tensors alike
pub fn check_dps_case(
    model: &dyn EpsModel,
    fx: &DpsFixture,
    device: &Device,
) -> Result<DpsCaseReport, FixtureError> {
    let schedule = Schedule::linear_default();
    let s = &fx.settings;
    let chain =
        schedule
            .chain(schedule.num_steps(), s.steps)
            .map_err(|e| FixtureError::Invalid {
                path: fx.path.clone(),
                context: format!("no chain of {} steps", s.steps),
                source: e.into(),
            })?;
    let ours: Vec<usize> = chain.iter().map(|tr| tr.t - 1).collect();
    if ours != s.timesteps {
        return Err(fx.format_error(format!(
            "the fixture's timesteps {:?} differ from our strided chain {ours:?}",
            s.timesteps
        )));
    }
    let op = fx.operator(device)?;
    let y = fx.tensor4("y", None, device)?;
    let (chain_opts, dps) = fx.dps_options();
    let den = Denoiser::new(model, &schedule);
    let operator_error = match &op {
        Some(op) => max_abs_diff(
            &op.forward(fx.tensor4("x0", None, device)?),
            fx.values("ax")?,
        ),
        None => 0.0,
    };
    let len = fx.values("x_T")?.len();
    let step = |x: Tensor<4>, k: usize, noise: &mut NoiseSource| match &op {
        Some(op) => dps_step(
            &den,
            &Problem::new(op.as_ref(), y.clone(), s.sigma),
            x,
            &chain[k],
            dps,
            &chain_opts,
            noise,
        ),
        None => ancestral_step(model, &schedule, x, &chain[k], &chain_opts, noise),
    };
    let noise_k =
        |k: usize| Ok::<_, FixtureError>(fx.values("noise")?[k * len..(k + 1) * len].to_vec());
    let (mut one_step_error, mut worst_step, mut x0_hat_error) = (0.0f64, 0, 0.0f64);
    let mut step_errors = Vec::with_capacity(s.steps);
    for k in 0..s.steps {
        let start = if k == 0 {
            fx.tensor4("x_T", None, device)?
        } else {
            fx.tensor4("trajectory", Some(k - 1), device)?
        };
        let draws = if chain[k].is_last() {
            vec![]
        } else {
            vec![noise_k(k)?]
        };
        let (x, x0) = step(start, k, &mut NoiseSource::replay(draws, 0));
        let e = max_abs_diff(&x, &fx.values("trajectory")?[k * len..(k + 1) * len]);
        step_errors.push(e);
        if e > one_step_error {
            (one_step_error, worst_step) = (e, k);
        }
        let scale = chain[k].alpha_bar_t.sqrt();
        x0_hat_error = x0_hat_error
            .max(scale * max_abs_diff(&x0, &fx.values("x0_hat")?[k * len..(k + 1) * len]));
    }
    let draws = (0..s.steps)
        .filter(|&k| !chain[k].is_last())
        .map(noise_k)
        .collect::<Result<Vec<_>, _>>()?;
    let mut noise = NoiseSource::replay(draws, 0);
    let mut x = fx.tensor4("x_T", None, device)?;
    for k in 0..s.steps {
        x = step(x, k, &mut noise).0;
    }
    let chain_error = max_abs_diff(&x, fx.values("out")?);
    Ok(DpsCaseReport {
        case: s.case.clone(),
        operator_error,
        one_step_error,
        worst_step,
        step_errors,
        x0_hat_error,
        chain_error,
    })
}

/// The fixture settings files (`dps_*.json`) of a folder, sorted.
pub fn dps_fixture_files(dir: &Path) -> Result<Vec<PathBuf>, FixtureError> {
    let entries = std::fs::read_dir(dir).map_err(|source| FixtureError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dps_"))
        })
        .collect();
    files.sort();
    Ok(files)
}
