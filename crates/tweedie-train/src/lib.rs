//! `tweedie-train`: trains an ADM ε-predictor on a folder of images.
//!
//! Objective: ε-prediction MSE with t uniform in 1..=T on the linear schedule the samplers use;
//! with `learn_sigma` (6 output channels), Improved DDPM's hybrid L_simple + λ L_vlb, the bound
//! training only the variance channels ([`vlb_bits_per_dim`]).
//! Adam with linear warm-up, optional gradient-norm clipping, EMA of the weights kept on the
//! training device (the EMA copy is what ships), checkpoints every N steps and an exact `--resume`: parameter ids are stable
//! hashes of the checkpoint keys, the optimizer state is saved with them, and each step's
//! randomness is derived from (seed, step), so a resumed run continues the same loss curve.

mod data;
mod trainer;
mod vlb;

pub use data::{Dataset, DatasetOptions, prepare, prepare_checked};
pub use trainer::{
    BoxedSource, EvalPoint, Evaluation, ExtraEval, Start, StepReport, TrainError, TrainOptions,
    TrainSummary, recover_checkpoint, train, train_with_eval, validation_loss,
};
pub use vlb::{posterior_log_variance_clipped, vlb_bits_per_dim, vlb_weight};
