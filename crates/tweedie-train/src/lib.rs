//! `tweedie-train`: trains an ADM ε-predictor on a folder of images.
//!
//! Objective: ε-prediction MSE with t uniform in 1..=T on the linear schedule the samplers use.
//! Adam with linear warm-up, optional gradient-norm clipping, EMA of the weights (the EMA copy
//! is what ships), checkpoints every N steps and an exact `--resume`: parameter ids are stable
//! hashes of the checkpoint keys, the optimizer state is saved with them, and each step's
//! randomness is derived from (seed, step), so a resumed run continues the same loss curve.

mod data;
mod trainer;

pub use data::{Dataset, DatasetOptions, prepare, prepare_checked};
pub use trainer::{
    Start, StepReport, TrainError, TrainOptions, TrainSummary, recover_checkpoint, train,
};
