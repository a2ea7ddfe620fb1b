//! `tweedie-core`: the mathematics every other tweedie crate stands on.
//!
//! - [`schedule`]: noise schedules (linear, cosine) with every derived quantity precomputed;
//! - [`diffusion`]: forward noising, the ε ⇔ score ⇔ x̂0 conversions (Tweedie) and the
//!   three equivalent forms of the ancestral reverse step (problem sheet, Task 1);
//! - [`model`]: the [`model::EpsModel`] trait a denoising network implements;
//! - [`mean_correction`]: a post-hoc per-timestep correction of x̂0's image-mean colour;
//! - [`priors`]: analytic priors (Gaussian, Gaussian mixture, empirical image set) with exact
//!   scores, used as test oracles;
//! - [`noise`]: seeded Gaussian noise, so every random choice is reproducible.
//!
//! Everything is backend-agnostic: tensors live on whatever burn [`Device`]
//! the caller chooses (CPU `flex`, wgpu, autodiff-wrapped devices).

pub mod diffusion;
pub mod error;
pub mod mean_correction;
pub mod model;
pub mod noise;
pub mod priors;
pub mod schedule;
pub mod tensor;

pub use error::{CoreError, InvalidParameter};
pub use mean_correction::{
    ChainFit, ChainRun, ChainStep, FitRule, LastStepFit, MeanCorrected, MeanCorrection,
};
pub use model::{EpsModel, NoiseLevel};
pub use noise::NoiseSource;
pub use schedule::{Schedule, ScheduleKind, Transition};

/// burn's device-dynamic tensor type, re-exported for convenience.
pub use burn::tensor::{Device, Tensor};
