//! Task 4: SDEdit — noise an initial image to t0, then run the reverse chain from there.

use crate::chain::reverse_chain;
use crate::{
    ChainOptions, Denoiser, Knobs, Observer, Problem, SampleError, SampleOutput, Solution, Solver,
};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tweedie_core::NoiseSource;
use tweedie_core::diffusion::q_sample;

/// SDEdit (Meng et al., ICLR 2022; Task 4) as a restoration method: x_{t0} = √ᾱ_{t0} A⁺y +
/// √(1 − ᾱ_{t0}) z, then the unguided chain from t0 (with the chain's `steps` scaled by
/// t0/T, so that `steps` means the same stride as for the other methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sdedit {
    /// The starting timestep t0.
    pub t0: usize,
}

impl Solver for Sdedit {
    const TITLE: &'static str = "SDEdit";

    /// t0 = `knobs.t0` (500).
    fn configure(knobs: &Knobs, _notes: &mut Vec<String>) -> Result<Self, SampleError> {
        let t0 = knobs.t0.unwrap_or(500);
        if t0 == 0 || t0 > knobs.timesteps {
            return Err(SampleError::invalid(
                "t0",
                t0,
                format!("must lie in 1..={}", knobs.timesteps),
            ));
        }
        Ok(Sdedit { t0 })
    }

    fn summary(&self) -> String {
        format!("t0={}", self.t0)
    }

    fn solve(
        &self,
        den: &Denoiser,
        problem: &Problem,
        _shape: [usize; 4],
        chain: &ChainOptions,
        noise: &mut NoiseSource,
        observer: &mut Observer,
    ) -> Result<Solution, SampleError> {
        den.schedule.check_timestep(self.t0)?;
        let init = problem.op.initialise(problem.y.clone());
        let steps = (chain.steps * self.t0)
            .div_ceil(den.schedule.num_steps())
            .max(1);
        let z = noise.normal_like(&init);
        let x_t0 = q_sample(init, z, den.schedule.alpha_bar[self.t0]);
        let opts = ChainOptions {
            steps,
            ..chain.clone()
        };
        let output = reverse_chain(den, x_t0.clone(), self.t0, &opts, noise, observer)?;
        Ok(Solution {
            output,
            initialisation: x_t0,
        })
    }
}

/// x_{t0} = √ᾱ_{t0} init + √(1 − ᾱ_{t0}) z, then the reverse chain from t0 to 0 (`opts.steps`
/// steps at most). `init` is the measurement mapped to image space (e.g. A⁺y).
pub fn sdedit(
    den: &Denoiser,
    init: Tensor<4>,
    t0: usize,
    opts: &ChainOptions,
    noise: &mut NoiseSource,
    observer: &mut Observer,
) -> Result<SampleOutput, SampleError> {
    den.schedule.check_timestep(t0)?;
    let z = noise.normal_like(&init);
    let x_t0 = q_sample(init, z, den.schedule.alpha_bar[t0]);
    reverse_chain(den, x_t0, t0, opts, noise, observer)
}
