//! Task 3: unconditional generation with the x̂0-form ancestral step.

use crate::chain::reverse_chain;
use crate::{ChainOptions, Denoiser, Observer, SampleError, SampleOutput};
use burn::tensor::Device;
use tweedie_core::NoiseSource;

/// x_T ~ N(0, I); for t = T … 1: x̂0 = Tweedie(x_t), x_{t−1} = ancestral step (z = 0 at t = 1).
///
/// Any [`EpsModel`](tweedie_core::EpsModel) will do: here the exact ε-predictor of a Gaussian prior stands in for a
/// network, so the samples' distribution is known.
///
/// ```
/// use tweedie_core::diffusion::StepVariance;
/// use tweedie_core::priors::GaussianPrior;
/// use tweedie_core::{Device, NoiseSource, Schedule, Tensor, tensor};
/// use tweedie_samplers::{ChainOptions, Denoiser, Observer, generate};
///
/// let device = Device::flex();
/// // Prior N(0.5, 0.1² I) over 1×4×4 "images".
/// let mean: Tensor<4> = Tensor::ones([1, 1, 4, 4], &device).mul_scalar(0.5);
/// let prior = GaussianPrior::isotropic(mean, 0.01).unwrap();
///
/// // 64 samples, 50 strided steps from T = 1000; the mean and std of their 1024 values.
/// let moments = |variance| {
///     let opts = ChainOptions { steps: 50, variance, ..Default::default() };
///     let mut done = 0;
///     let schedule = Schedule::linear_default();
///     let out = generate(
///         &Denoiser::new(&prior, &schedule),
///         [64, 1, 4, 4],
///         &opts,
///         &mut NoiseSource::new(0),
///         &device,
///         &mut Observer::with_progress(|info| done = info.step),
///     )
///     .unwrap();
///     assert_eq!((done, out.x0.dims()), (50, [64, 1, 4, 4]));
///     let v = tensor::to_vec(&out.x0);
///     let m = v.iter().sum::<f32>() / v.len() as f32;
///     let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
///     (m, sd)
/// };
/// let (m_large, sd_large) = moments(StepVariance::Beta); // the sheet's σ² = β
/// let (m_small, sd_small) = moments(StepVariance::Posterior); // σ² = β̃
/// // Both land on the prior's mean. On a short chain σ² = β over-disperses and σ² = β̃
/// // under-disperses: the prior's std 0.1 lies between (≈ 0.13 and ≈ 0.07 here).
/// assert!((m_large - 0.5).abs() < 0.02 && (m_small - 0.5).abs() < 0.02);
/// assert!(sd_small < 0.1 && 0.1 < sd_large, "{sd_small} {sd_large}");
/// assert!(sd_large < 0.15 && sd_small > 0.05);
/// ```
pub fn generate(
    den: &Denoiser,
    shape: [usize; 4],
    opts: &ChainOptions,
    noise: &mut NoiseSource,
    device: &Device,
    observer: &mut Observer,
) -> Result<SampleOutput, SampleError> {
    if shape.contains(&0) {
        return Err(SampleError::invalid(
            "shape",
            format!("{shape:?}"),
            "all dimensions must be ≥ 1",
        ));
    }
    let x_t = noise.normal(shape, device);
    reverse_chain(den, x_t, den.schedule.num_steps(), opts, noise, observer)
}
