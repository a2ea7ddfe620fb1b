//! Task 3: unconditional generation with the x̂0-form ancestral step.

use crate::chain::reverse_chain;
use crate::{ChainOptions, Observer, SampleError, SampleOutput};
use burn::tensor::Device;
use tweedie_core::{EpsModel, NoiseSource, Schedule};

/// x_T ~ N(0, I); for t = T … 1: x̂0 = Tweedie(x_t), x_{t−1} = ancestral step (z = 0 at t = 1).
pub fn generate(
    model: &dyn EpsModel,
    schedule: &Schedule,
    shape: [usize; 4],
    opts: &ChainOptions,
    noise: &mut NoiseSource,
    device: &Device,
    observer: &mut Observer,
) -> Result<SampleOutput, SampleError> {
    if shape.iter().any(|d| *d == 0) {
        return Err(SampleError::invalid(
            "shape",
            format!("{shape:?}"),
            "all dimensions must be ≥ 1",
        ));
    }
    let x_t = noise.normal(shape, device);
    reverse_chain(
        model,
        schedule,
        x_t,
        schedule.num_steps(),
        opts,
        noise,
        observer,
    )
}
