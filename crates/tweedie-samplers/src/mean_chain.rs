//! Refitting a [`MeanCorrection`]'s intercepts on the sampler's own chain.
//!
//! The table's lines are fitted on the forward marginals q(x_t). For a correct model, the
//! reverse chain's states have those marginals too, and the tower property
//! `E[E[x0 | x_t]] = E[x0]` makes the average of x̂0 over many chains equal the data mean at
//! every step. A network's errors move the chain off q(x_t), and x̂0's mean colour drifts;
//! [`fit_mean_on_chain`] measures that drift step by step and takes it out of the intercepts.

use crate::chain::{ChainOptions, SampleError, StepInfo, check_eta, reverse_step};
use crate::driver::{Denoiser, check_bounded};
use burn::tensor::{Device, Tensor};
use tweedie_core::diffusion::StepVariance;
use tweedie_core::{ChainFit, MeanCorrection, NoiseSource};

/// Refits `table`'s intercepts on the reverse chain `opts` describes (from x_T ~ N(0, I)).
///
/// `den.model` must apply `table` (a UNet whose config carries it, or
/// [`MeanCorrected`](tweedie_core::MeanCorrected)). All `shape[0]` chains run in step, in
/// groups of `batch` network evaluations; chain i draws its noise from the i-th fork of
/// `NoiseSource::new(seed)`. At each step with x̂0 from the model (unclipped), the shift s_c
/// per channel is solved so that the average over all chains of x̂0's channel-c mean, after
/// x̂0 − s_c is clamped to [−1, 1] when `opts.clip_x0`, equals `target[c]`; every chain then
/// steps with that x̂0. The returned table has the chain's timesteps, this table's slopes
/// and the intercepts a(t) − s(t) ([`MeanCorrection::with_chain_shifts`]), so that sampling
/// with it replays the fitted chains exactly. `progress` is told after each step.
#[allow(clippy::too_many_arguments)]
pub fn fit_mean_on_chain(
    den: &Denoiser,
    table: &MeanCorrection,
    target: &[f64],
    shape: [usize; 4],
    batch: usize,
    opts: &ChainOptions,
    seed: u64,
    device: &Device,
    progress: &mut dyn FnMut(StepInfo),
) -> Result<MeanCorrection, SampleError> {
    check_eta(opts)?;
    let [n, channels, h, w] = shape;
    if shape.contains(&0) || batch == 0 {
        return Err(SampleError::invalid(
            "shape",
            format!("{shape:?} in batches of {batch}"),
            "all dimensions and the batch must be ≥ 1",
        ));
    }
    if target.len() != channels || target.iter().any(|m| !(-1.0 < *m && *m < 1.0)) {
        return Err(SampleError::invalid(
            "target",
            format!("{target:?}"),
            format!("need {channels} channel means inside (−1, 1)"),
        ));
    }
    let t_max = den.schedule.num_steps();
    table.validate(channels, t_max)?;
    let chain = den.schedule.chain(t_max, opts.steps.min(t_max))?;
    let learned = opts.eta.is_none() && opts.variance == StepVariance::Learned;
    let mut streams = NoiseSource::new(seed);
    let mut groups: Vec<(Tensor<4>, NoiseSource)> = (0..n)
        .step_by(batch)
        .map(|first| {
            let b = batch.min(n - first);
            let mut noise = NoiseSource::per_item((0..b).map(|_| streams.fork()).collect());
            (noise.normal([b, channels, h, w], device), noise)
        })
        .collect();
    let mut shifts = Vec::with_capacity(chain.len());
    for (i, tr) in chain.iter().enumerate() {
        let predictions: Vec<_> = groups
            .iter()
            .map(|(x, _)| den.predict(x.clone(), tr, false, learned))
            .collect();
        let values: Vec<Vec<f32>> = predictions
            .iter()
            .map(|p| tweedie_core::tensor::to_vec(&p.x0_hat))
            .collect();
        let shift: Vec<f64> = (0..channels)
            .map(|c| {
                let channel = values
                    .iter()
                    .flat_map(|v| v.chunks(h * w).skip(c).step_by(channels).flatten().copied());
                shift_to_mean(channel.collect(), target[c], opts.clip_x0)
            })
            .collect();
        let column = tweedie_core::tensor::from_vec(
            shift.iter().map(|&s| s as f32).collect(),
            [1, channels, 1, 1],
            device,
        );
        for ((x, noise), p) in groups.iter_mut().zip(predictions) {
            let moved = p.x0_hat - column.clone();
            let x0_hat = if opts.clip_x0 {
                moved.clamp(-1.0, 1.0)
            } else {
                moved
            };
            *x = reverse_step(x.clone(), x0_hat, p.variance, tr, opts, noise);
            check_bounded(x, i + 1, chain.len(), tr.t)?;
        }
        shifts.push(shift);
        progress(StepInfo {
            step: i + 1,
            total: chain.len(),
            t: tr.t,
        });
    }
    // The chain runs T → 1; the table's timesteps increase.
    let ts: Vec<usize> = chain.iter().rev().map(|tr| tr.t).collect();
    shifts.reverse();
    let fit = ChainFit {
        steps: chain.len(),
        variance: opts.variance,
        eta: opts.eta,
        clip: opts.clip_x0,
        chains: n,
        seed,
        target: target.to_vec(),
        shift: Vec::new(),
    };
    Ok(table.with_chain_shifts(&ts, &shifts, fit, t_max)?)
}

/// The s with mean(x − s) = `target`, or mean(clamp(x − s, −1, 1)) = `target` when `clip`
/// (safeguarded Newton on the decreasing, piecewise-linear left side; `target` in (−1, 1)).
fn shift_to_mean(x: Vec<f32>, target: f64, clip: bool) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mut s = mean - target;
    if !clip {
        return s;
    }
    // f(s) = mean(clamp(x − s)) − target falls from +(1 − target) at s ≤ min − 1 to
    // −(1 + target) at s ≥ max + 1.
    let (lo_x, hi_x) = x.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| {
        (lo.min(v as f64), hi.max(v as f64))
    });
    let (mut lo, mut hi) = (lo_x - 1.0, hi_x + 1.0);
    for _ in 0..100 {
        let (mut sum, mut inside) = (0.0, 0usize);
        for &v in &x {
            let d = v as f64 - s;
            sum += d.clamp(-1.0, 1.0);
            inside += usize::from(d.abs() < 1.0);
        }
        let f = sum / n - target;
        if f.abs() < 1e-9 {
            break;
        }
        if f > 0.0 {
            lo = s;
        } else {
            hi = s;
        }
        let slope = inside as f64 / n;
        let newton = if slope > 0.0 { s + f / slope } else { f64::NAN };
        s = if newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Observer, generate};
    use tweedie_core::priors::GaussianPrior;
    use tweedie_core::{FitRule, MeanCorrected, Schedule, tensor};

    /// The identity correction (m̃ = m̂ at every t).
    fn identity() -> MeanCorrection {
        MeanCorrection {
            t: vec![1, 1000],
            slope: vec![vec![1.0]; 2],
            intercept: vec![vec![0.0]; 2],
            images: 2,
            seed: 0,
            rule: FitRule::Regression,
            chain: None,
        }
    }

    /// Prior N(`mean`, 0.1² I) over 1×4×4 images, behind `table`.
    fn model(mean: f64, table: MeanCorrection) -> MeanCorrected<GaussianPrior> {
        let device = Device::flex();
        let m: Tensor<4> = Tensor::ones([1, 1, 4, 4], &device).mul_scalar(mean);
        MeanCorrected {
            inner: GaussianPrior::isotropic(m, 0.01).unwrap(),
            correction: table,
        }
    }

    /// The mean of `n` samples drawn with the chain's per-chain noise streams of `seed`.
    fn sample_mean(
        model: &MeanCorrected<GaussianPrior>,
        n: usize,
        opts: &ChainOptions,
        seed: u64,
    ) -> f64 {
        let schedule = Schedule::linear_default();
        let mut streams = NoiseSource::new(seed);
        let mut noise = NoiseSource::per_item((0..n).map(|_| streams.fork()).collect());
        let out = generate(
            &Denoiser::new(model, &schedule),
            [n, 1, 4, 4],
            opts,
            &mut noise,
            &Device::flex(),
            &mut Observer::default(),
        )
        .unwrap();
        let v = tensor::to_vec(&out.x0);
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
    }

    fn fit(
        model: &MeanCorrected<GaussianPrior>,
        target: f64,
        opts: &ChainOptions,
        seed: u64,
    ) -> MeanCorrection {
        let schedule = Schedule::linear_default();
        let mut steps = 0;
        let table = fit_mean_on_chain(
            &Denoiser::new(model, &schedule),
            &model.correction,
            &[target],
            [256, 1, 4, 4],
            48,
            opts,
            seed,
            &Device::flex(),
            &mut |info| steps = info.step,
        )
        .unwrap();
        assert_eq!(steps, opts.steps);
        table
    }

    /// A model whose samples sit at 0.3 where the data's mean is 0.1: the chain fit moves fresh
    /// samples (another seed) to 0.1, replays its own chains onto the target exactly, and
    /// records how it was made. Clamped and unclamped chains alike.
    #[test]
    fn chain_fit_moves_a_biased_model_onto_the_target_mean() {
        for clip in [false, true] {
            let opts = ChainOptions {
                steps: 20,
                clip_x0: clip,
                ..Default::default()
            };
            // Near the top of the range, so clamping matters when on.
            let (biased, target) = if clip { (0.9, 0.7) } else { (0.3, 0.1) };
            let before = model(biased, identity());
            let m = sample_mean(&before, 256, &opts, 9);
            // Unclamped, the samples sit at the prior's mean; clamping x̂0 at 1 at every step
            // pulls the clipped chain's below it. Either way far from the target.
            let near_prior = (m - biased).abs() < 0.02;
            assert!(near_prior != clip, "clip {clip}: uncorrected mean {m}");
            assert!(
                (m - target).abs() > 0.1,
                "clip {clip}: uncorrected mean {m}"
            );
            let table = fit(&before, target, &opts, 5);
            let chain = table.chain.clone().unwrap();
            assert_eq!(
                (chain.steps, chain.chains, chain.seed, chain.clip),
                (20, 256, 5, clip)
            );
            assert_eq!((table.t.len(), chain.shift.len()), (20, 20));
            assert!(table.t.windows(2).all(|w| w[0] < w[1]));
            let after = model(biased, table);
            let replay = sample_mean(&after, 256, &opts, 5);
            assert!(
                (replay - target).abs() < 1e-4,
                "clip {clip}: replayed mean {replay}"
            );
            let fresh = sample_mean(&after, 256, &opts, 9);
            assert!(
                (fresh - target).abs() < 0.01,
                "clip {clip}: fresh mean {fresh}"
            );
        }
    }

    /// For the exact model of the data the chain already satisfies the tower property: the
    /// fitted shifts are sampling noise.
    #[test]
    fn chain_fit_leaves_an_exact_model_nearly_alone() {
        let opts = ChainOptions {
            steps: 20,
            clip_x0: false,
            ..Default::default()
        };
        let exact = model(0.2, identity());
        let table = fit(&exact, 0.2, &opts, 3);
        for (t, s) in table.t.iter().zip(&table.chain.unwrap().shift) {
            assert!(s[0].abs() < 0.01, "t = {t}: shift {s:?}");
        }
    }

    #[test]
    fn bad_chain_fits_are_errors() {
        let schedule = Schedule::linear_default();
        let m = model(0.2, identity());
        let den = Denoiser::new(&m, &schedule);
        let opts = ChainOptions {
            steps: 5,
            ..Default::default()
        };
        let device = Device::flex();
        let run = |target: &[f64], shape: [usize; 4], batch: usize, table: &MeanCorrection| {
            fit_mean_on_chain(
                &den,
                table,
                target,
                shape,
                batch,
                &opts,
                0,
                &device,
                &mut |_| (),
            )
        };
        let ok = identity();
        assert!(run(&[0.2], [4, 1, 4, 4], 2, &ok).is_ok());
        assert!(run(&[0.2, 0.1], [4, 1, 4, 4], 2, &ok).is_err(), "channels");
        assert!(
            run(&[1.5], [4, 1, 4, 4], 2, &ok).is_err(),
            "target outside (−1, 1)"
        );
        assert!(run(&[0.2], [0, 1, 4, 4], 2, &ok).is_err(), "no chains");
        assert!(run(&[0.2], [4, 1, 4, 4], 0, &ok).is_err(), "batch 0");
        let mut bad = identity();
        bad.intercept.pop();
        assert!(
            run(&[0.2], [4, 1, 4, 4], 2, &bad).is_err(),
            "malformed table"
        );
    }

    #[test]
    fn shift_solves_the_clamped_mean() {
        let x: Vec<f32> = vec![-3.0, -0.5, 0.0, 0.2, 0.9, 2.0];
        let plain = shift_to_mean(x.clone(), 0.1, false);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / 6.0;
        assert!((plain - (mean - 0.1)).abs() < 1e-12);
        for target in [-0.9, -0.3, 0.0, 0.1, 0.6, 0.95] {
            let s = shift_to_mean(x.clone(), target, true);
            let got = x
                .iter()
                .map(|&v| (v as f64 - s).clamp(-1.0, 1.0))
                .sum::<f64>()
                / 6.0;
            assert!((got - target).abs() < 1e-8, "{target}: s = {s}, mean {got}");
        }
    }
}
