//! `tweedie-samplers`: the problem sheet's algorithms (Tasks 2–6), each a short function
//! over an [`EpsModel`](tweedie_core::EpsModel) that reads like the sheet's pseudocode.
//!
//! Samplers know nothing of specific operators (they take `&dyn Operator`) nor of specific
//! models. All are batched, seeded through a [`NoiseSource`](tweedie_core::NoiseSource),
//! report progress and x̂0 snapshots through an [`Observer`], and stop with
//! [`SampleError::Diverged`] naming the step when the state turns NaN/Inf or blows up
//! (|x| > [`DIVERGENCE_BOUND`]).

mod chain;
mod denoise;
mod driver;
mod generate;
mod mean_chain;
mod solver;

pub use ald::{AldRule, AldSampler, Gamma, ald_step_size};
pub use chain::{
    Ancestral, ChainOptions, Prediction, SampleError, SampleOutput, Snapshot, StepInfo,
    ancestral_step, predict, predict_x0, reverse_chain, reverse_step,
};
pub use denoise::{Denoised, denoise};
pub use dps::{DpsRule, DpsSampler, DpsStep, dps_config_scale, dps_step, measurement_gradient};
pub use driver::{
    DIVERGENCE_BOUND, Denoiser, Observer, Problem, Step, StepRule, StepView, drive,
    solve_from_noise,
};
pub use generate::generate;
pub use mean_chain::{fit_last_step_open_loop, fit_mean_on_chain};
pub use sdedit::sdedit;
pub use solver::{Knobs, Preset, Solution, Solver};

solver::solvers! {
    /// SDEdit (Task 4): A⁺y noised to t0, then the unguided chain.
    sdedit::Sdedit = "sdedit",
    /// Score-ALD (Task 5): the ancestral step plus a likelihood step on x_t.
    ald::ScoreAld = "ald",
    /// DPS (Task 6): the ancestral step plus a guidance step through the network.
    dps::Dps = "dps",
    /// DiffPIR: a proximal data step on x̂0 each step, then re-noising (Zhu et al. 2023).
    diffpir::DiffPir = "diffpir",
    /// DDNM / DDNM+: range–null-space correction of x̂0 with A⁺ (Wang et al., ICLR 2023).
    ddnm::Ddnm = "ddnm",
}
