//! `tweedie`: diffusion models for image restoration.
//!
//! This facade re-exports the layers and adds [`tasks`]: the problem sheet's experiments
//! (denoising, SDEdit, Score-ALD, DPS on a measurement) as functions returning images and
//! metrics, shared by the `tweedie` CLI and the `cargo xtask run-all` report.
//!
//! Runnable programs on the embedded face model are in `examples/`:
//! `cargo run --release --example denoise` (one-step Tweedie denoising),
//! `cargo run --release --example dps_inpainting` (DPS with the official DPS settings) and
//! `cargo run --release --example custom_operator` (your own [`operators::Operator`], handed
//! to DPS).
//!
//! # Example
//!
//! DPS inpainting on an analytic Gaussian prior, whose exact ε-predictor stands in for the
//! UNet (any [`core::EpsModel`] will do; `examples/dps_inpainting.rs` uses the face model):
//!
//! ```
//! use tweedie::core::priors::GaussianPrior;
//! use tweedie::core::{Device, NoiseSource, Schedule, Tensor, tensor};
//! use tweedie::operators::{Mask, Operator, measure};
//! use tweedie::samplers::{
//!     ChainOptions, Denoiser, Dps, DpsStep, Observer, Problem, Solver, generate,
//! };
//!
//! let device = Device::flex();
//! let schedule = Schedule::linear_default();
//! // Images [1, 3, 8, 8] from N(0, 0.5² I); the centre 4×4 is missing; σ_y = 0.05.
//! let prior = GaussianPrior::isotropic(Tensor::zeros([1, 3, 8, 8], &device), 0.25)?;
//! let mut noise = NoiseSource::new(0);
//! let x = prior.sample(1, &mut noise);
//! let mask = Mask::center_box(8, 8, 4, &device)?;
//! let y = measure(&mask, x.clone(), 0.05, &mut noise)?;
//!
//! // The full 1000-step chain and the official DPS code's rule and ζ for inpainting.
//! let chain = ChainOptions { steps: 1000, clip_x0: false, ..Default::default() };
//! let dps = Dps { step: DpsStep::Residual { zeta: 0.5 } };
//! let (den, shape) = (Denoiser::new(&prior, &schedule), x.dims());
//! let problem = Problem::new(&mask, y, 0.05);
//! let restored = dps
//!     .solve(&den, &problem, shape, &chain, &mut noise, &mut Observer::default())?
//!     .output;
//! let unguided = generate(&den, shape, &chain, &mut noise, &device, &mut Observer::default())?;
//!
//! // RMS error on the 3 · 48 observed values: DPS fits the measurement to about its noise
//! // (σ_y = 0.05), a sample from the prior alone does not.
//! let observed_rms = |z: Tensor<4>| {
//!     (tensor::sq_norm_per_item(&mask.forward(z - x.clone()))[0] / 144.0).sqrt()
//! };
//! let (fit, free) = (observed_rms(restored.x0), observed_rms(unguided.x0));
//! assert!(fit < 0.1 && free > 0.4, "DPS {fit}, unguided {free}"); // ≈ 0.05 and ≈ 0.69
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use tweedie_core as core;
pub use tweedie_io as io;
pub use tweedie_metrics as metrics;
pub use tweedie_operators as operators;
pub use tweedie_samplers as samplers;
pub use tweedie_unet as unet;

pub mod calibrate;
pub mod nfe;
pub mod parity;
pub mod tasks;
