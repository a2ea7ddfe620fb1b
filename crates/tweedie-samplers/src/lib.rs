//! `tweedie-samplers`: the problem sheet's algorithms (Tasks 2–6), each a short function
//! over an [`EpsModel`](tweedie_core::EpsModel) that reads like the sheet's pseudocode.
//!
//! Samplers know nothing of specific operators (they take `&dyn Operator`) nor of specific
//! models. All are batched, seeded through a [`NoiseSource`](tweedie_core::NoiseSource),
//! report progress and x̂0 snapshots through an [`Observer`], and stop with
//! [`SampleError::Diverged`] naming the step when the state turns NaN/Inf or blows up
//! (|x| > [`DIVERGENCE_BOUND`]).

mod ald;
mod chain;
mod denoise;
mod dps;
mod generate;
mod sdedit;

pub use ald::{AldOptions, AldRule, Gamma, ald_step_size, score_ald};
pub use chain::{
    ChainOptions, DIVERGENCE_BOUND, Observer, Prediction, SampleError, SampleOutput, Snapshot,
    StepInfo, ancestral_step, predict, predict_x0, reverse_chain, reverse_step,
};
pub use denoise::{Denoised, denoise};
pub use dps::{DpsOptions, DpsStep, dps, dps_step, measurement_gradient};
pub use generate::generate;
pub use sdedit::sdedit;
