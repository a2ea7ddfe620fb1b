//! `tweedie`: diffusion models for image restoration.
//!
//! This facade re-exports the layers and adds [`tasks`]: the problem sheet's experiments
//! (denoising, SDEdit, Score-ALD, DPS on a measurement) as functions returning images and
//! metrics, shared by the `tweedie` CLI and the `cargo xtask run-all` report.

pub use tweedie_core as core;
pub use tweedie_io as io;
pub use tweedie_metrics as metrics;
pub use tweedie_operators as operators;
pub use tweedie_samplers as samplers;
pub use tweedie_unet as unet;

pub mod calibrate;
pub mod parity;
pub mod tasks;
