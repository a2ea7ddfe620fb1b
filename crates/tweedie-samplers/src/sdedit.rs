//! Task 4: SDEdit — noise an initial image to t0, then run the reverse chain from there.

use crate::chain::reverse_chain;
use crate::{ChainOptions, Observer, SampleError, SampleOutput};
use burn::tensor::Tensor;
use tweedie_core::diffusion::q_sample;
use tweedie_core::{EpsModel, NoiseSource, Schedule};

/// x_{t0} = √ᾱ_{t0} y + √(1 − ᾱ_{t0}) z, then the reverse chain from t0 to 0 (`opts.steps`
/// steps at most). `init` is the measurement mapped to image space (e.g. A⁺y).
pub fn sdedit(
    model: &dyn EpsModel,
    schedule: &Schedule,
    init: Tensor<4>,
    t0: usize,
    opts: &ChainOptions,
    noise: &mut NoiseSource,
    observer: &mut Observer,
) -> Result<SampleOutput, SampleError> {
    schedule.check_timestep(t0)?;
    let z = noise.normal_like(&init);
    let x_t0 = q_sample(init, z, schedule.alpha_bar[t0]);
    reverse_chain(model, schedule, x_t0, t0, opts, noise, observer)
}
