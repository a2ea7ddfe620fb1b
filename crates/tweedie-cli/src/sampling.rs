//! Unconditional sampling in batches, shared by `generate`, `evaluate` and `report`.

use crate::args::check_eta;
use crate::progress::Progress;
use anyhow::{Context, Result};
use tweedie_core::NoiseSource;
use tweedie_samplers::{ChainOptions, Denoiser, Observer, StepInfo};

/// Images per batch of `generate` (default of `--batch`), `evaluate` and `report`.
pub(crate) const DEFAULT_BATCH: usize = 16;

/// Generates `n` samples with a progress bar, [`DEFAULT_BATCH`] at a time; returns them and
/// the seconds taken.
pub(crate) fn sample_images(
    net: &crate::model::Loaded,
    n: usize,
    opts: &ChainOptions,
    seed: u64,
    device: &burn::tensor::Device,
    what: &str,
) -> Result<(Vec<tweedie_io::Image>, f64)> {
    let mut all = Vec::with_capacity(n);
    let secs = sample_batches(
        net,
        n,
        DEFAULT_BATCH,
        opts,
        seed,
        device,
        what,
        &mut |_, images| {
            all.extend(images);
            Ok(())
        },
    )?;
    Ok((all, secs))
}

/// Generates `n` samples, `batch` at a time (the unguided reverse chain of
/// `tweedie_samplers::generate`, from x_T ~ N(0, I)), and hands each batch to `each` with the
/// index of its first image. Image i draws all its noise (x_T and every step's z) from its
/// own stream, the i-th fork of `NoiseSource::new(seed)`, so a sample depends on the seed and
/// its index, not on how the images are batched. Returns the seconds taken.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample_batches(
    net: &crate::model::Loaded,
    n: usize,
    batch: usize,
    opts: &ChainOptions,
    seed: u64,
    device: &burn::tensor::Device,
    what: &str,
    each: &mut dyn FnMut(usize, Vec<tweedie_io::Image>) -> Result<()>,
) -> Result<f64> {
    check_eta(opts.eta)?;
    let schedule = net.schedule();
    let t_max = schedule.num_steps();
    let chain = schedule.chain(t_max, opts.steps.min(t_max))?;
    let size = net.image_size();
    let batch = batch.max(1);
    // Steps of all batches; without a terminal, a line per batch.
    let mut progress = Progress::new(n.div_ceil(batch) * chain.len(), what);
    let started = std::time::Instant::now();
    let mut streams = NoiseSource::new(seed);
    for first in (0..n).step_by(batch) {
        let b = batch.min(n - first);
        // Each image draws x_T and every step's z from its own stream, so a sample does not
        // depend on the batch it falls in.
        let mut noise = NoiseSource::per_item((0..b).map(|_| streams.fork()).collect());
        let out = tweedie_samplers::generate(
            &Denoiser::new(net, schedule),
            [b, 3, size, size],
            opts,
            &mut noise,
            device,
            &mut Observer::with_progress(|_: StepInfo| progress.advance(1)),
        )
        .with_context(|| format!("images {first}..{} of {n}", first + b - 1))?;
        progress.say(&format!(
            "steps; batch {}/{} done (images {first}..{} of {n})",
            first / batch + 1,
            n.div_ceil(batch),
            first + b - 1
        ));
        each(first, tweedie_io::from_tensor(&out.x0)?)?;
    }
    progress.finish();
    Ok(started.elapsed().as_secs_f64())
}
