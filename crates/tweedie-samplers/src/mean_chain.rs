//! Refitting a [`MeanCorrection`]'s intercepts on the sampler's own chain.
//!
//! The table's lines are fitted on the forward marginals q(x_t). For a correct model, the
//! reverse chain's states have those marginals too, and the tower property
//! `E[E[x0 | x_t]] = E[x0]` makes the average of x̂0 over many chains equal the data mean at
//! every step. A network's errors move the chain off q(x_t), and x̂0's mean colour drifts;
//! [`fit_mean_on_chain`] measures that drift step by step and takes it out of the intercepts.

use crate::chain::{ChainOptions, SampleError, StepInfo, check_eta, reverse_step};
use crate::driver::{Denoiser, Observer, check_bounded};
use crate::generate;
use burn::tensor::{Device, Tensor};
use tweedie_core::diffusion::StepVariance;
use tweedie_core::{
    ChainFit, ChainRun, ChainStep, LastStepFit, MeanCorrection, NoiseSource, Transition,
};

/// Refits `table`'s intercepts on the reverse chain `opts` describes (from x_T ~ N(0, I)).
///
/// `den.model` must apply `table` (a UNet whose config carries it, or
/// [`MeanCorrected`](tweedie_core::MeanCorrected)). All `shape[0]` chains run in step, in
/// groups of `batch` network evaluations; chain i draws its noise from the i-th fork of
/// `NoiseSource::new(seed)`. At each step, with x̂0 from the model (unclipped) and m_i its
/// channel means in chain i, U their average over the chains:
///
/// 1. with `match_variance`, each chain's m_i moves to U + k(m_i − U), k = √(V/Var_i(m_i))
///    per channel, V the table's [`posterior_variance`](MeanCorrection::posterior_variance)
///    at t (the spread of E[m | x_t] under q(x_t), which a correct chain's x̂0 has);
/// 2. the shift s_c is solved so that the average over the chains of x̂0's channel-c mean,
///    after x̂0 − s_c is clamped to [−1, 1] when `opts.clip_x0`, equals `target[c]`;
///
/// and every chain steps with that x̂0. The returned table has the chain's timesteps and
/// the lines refitted with (U, k, s) ([`MeanCorrection::with_chain_steps`]), so that
/// sampling with it replays the fitted chains exactly. `progress` is told after each step.
#[allow(clippy::too_many_arguments)]
pub fn fit_mean_on_chain(
    den: &Denoiser,
    table: &MeanCorrection,
    target: &[f64],
    shape: [usize; 4],
    batch: usize,
    opts: &ChainOptions,
    seed: u64,
    match_variance: bool,
    device: &Device,
    progress: &mut dyn FnMut(StepInfo),
) -> Result<MeanCorrection, SampleError> {
    let chain = checked_chain(den, table, target, shape, batch, opts)?;
    let [n, channels, h, w] = shape;
    if match_variance && table.posterior_variance.is_none() {
        return Err(SampleError::invalid(
            "match_variance",
            true,
            "the table records no posterior variances (fit it again with MeanCorrection::fit)",
        ));
    }
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
    let mut steps = Vec::with_capacity(chain.len());
    let plane = h * w;
    for (i, tr) in chain.iter().enumerate() {
        let predictions: Vec<_> = groups
            .iter()
            .map(|(x, _)| den.predict(x.clone(), tr, false, learned))
            .collect();
        let mut values: Vec<Vec<f32>> = predictions
            .iter()
            .map(|p| tweedie_core::tensor::to_vec(&p.x0_hat))
            .collect();
        // x̂0's channel means per chain (row-major [chain][channel] within each group).
        let means: Vec<Vec<f64>> = values
            .iter()
            .map(|v| {
                v.chunks(plane)
                    .map(|px| px.iter().map(|&x| x as f64).sum::<f64>() / plane as f64)
                    .collect()
            })
            .collect();
        let of_channel = |c: usize| {
            means
                .iter()
                .flat_map(move |g| g.iter().skip(c).step_by(channels))
        };
        let centre: Vec<f64> = (0..channels)
            .map(|c| of_channel(c).sum::<f64>() / n as f64)
            .collect();
        let scale: Vec<f64> = match table.posterior_variance_at(tr.t).filter(|_| match_variance) {
            None => vec![1.0; channels],
            Some(v) => (0..channels)
                .map(|c| {
                    let var =
                        of_channel(c).map(|m| (m - centre[c]).powi(2)).sum::<f64>() / n as f64;
                    if var > 0.0 { (v[c] / var).sqrt() } else { 1.0 }
                })
                .collect(),
        };
        // Each chain's mean moves by (k − 1)(m − U): on the host copy and, below, on x̂0.
        let offsets: Vec<Vec<f32>> = means
            .iter()
            .map(|g| {
                g.iter()
                    .enumerate()
                    .map(|(j, m)| ((scale[j % channels] - 1.0) * (m - centre[j % channels])) as f32)
                    .collect()
            })
            .collect();
        let scaled = scale.iter().any(|&k| k != 1.0);
        // (The host copy is read again only to solve for the clamped mean.)
        if scaled && opts.clip_x0 {
            for (v, o) in values.iter_mut().zip(&offsets) {
                for (px, d) in v.chunks_mut(plane).zip(o) {
                    px.iter_mut().for_each(|x| *x += d);
                }
            }
        }
        // Unclamped, the pixels' mean is the chains' average, which the scaling keeps (its
        // offsets sum to zero): no second pass over the pixels.
        let shift: Vec<f64> = (0..channels)
            .map(|c| {
                if !opts.clip_x0 {
                    return centre[c] - target[c];
                }
                let channel = values
                    .iter()
                    .flat_map(|v| v.chunks(h * w).skip(c).step_by(channels).flatten().copied());
                shift_to_clamped_mean(channel.collect(), target[c])
            })
            .collect();
        let column = tweedie_core::tensor::from_vec(
            shift.iter().map(|&s| s as f32).collect(),
            [1, channels, 1, 1],
            device,
        );
        for (((x, noise), p), o) in groups.iter_mut().zip(predictions).zip(offsets) {
            let b = o.len() / channels;
            let moved = if scaled {
                let o = tweedie_core::tensor::from_vec(o, [b, channels, 1, 1], device);
                p.x0_hat + o - column.clone()
            } else {
                p.x0_hat - column.clone()
            };
            let x0_hat = if opts.clip_x0 {
                moved.clamp(-1.0, 1.0)
            } else {
                moved
            };
            *x = reverse_step(x.clone(), x0_hat, p.variance, tr, opts, noise);
            check_bounded(x, i + 1, chain.len(), tr.t)?;
        }
        steps.push(ChainStep {
            centre,
            scale,
            shift,
        });
        progress(StepInfo {
            step: i + 1,
            total: chain.len(),
            t: tr.t,
        });
    }
    // The chain runs T → 1; the table's timesteps increase.
    let ts: Vec<usize> = chain.iter().rev().map(|tr| tr.t).collect();
    steps.reverse();
    let fit = ChainFit {
        run: chain_run(opts, chain.len(), n, seed, target),
        shift: Vec::new(),
        scale: Vec::new(),
    };
    Ok(table.with_chain_steps(&ts, &steps, fit, den.schedule.num_steps())?)
}

/// Calibrates `table`'s last step (t = 1) open-loop: runs `shape[0]` fresh chains under the
/// table as it is (as [`generate`] would with `opts`; chain i draws from the i-th fork of
/// `NoiseSource::new(seed)`, so [`generate`] with per-item forks of that seed, as
/// `tweedie generate --seed` draws, replays them), takes the x̂0 each
/// chain's last step outputs, and solves per channel for the shift s that brings those
/// samples' average channel mean to `target` (for the clamped x̂0 when `opts.clip_x0`). The
/// returned table subtracts s more at t = 1 only ([`MeanCorrection::with_last_step_shift`]):
/// the chains' x_1 are unchanged, so replaying them gives samples whose mean is `target`.
///
/// Open loop, unlike [`fit_mean_on_chain`]: no chain is steered while it runs, so s measures
/// what new chains under the table do, not what the fitting chains did once corrected.
/// `den.model` must apply `table`. `progress` is told after each step of each group of
/// `batch` chains (its `step` counts over all groups).
#[allow(clippy::too_many_arguments)]
pub fn fit_last_step_open_loop(
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
    let chain = checked_chain(den, table, target, shape, batch, opts)?;
    let [n, channels, h, w] = shape;
    let last = *chain.last().expect("a chain has at least one step");
    if chain.len() < 2 || last.t != 1 {
        return Err(SampleError::invalid(
            "steps",
            opts.steps,
            "the last-step calibration needs a chain of ≥ 2 steps (ending at t = 1)",
        ));
    }
    let total = chain.len();
    let groups = n.div_ceil(batch);
    let mut streams = NoiseSource::new(seed);
    // x̂0 at t = 1, unclamped, per channel over all chains.
    let mut pixels: Vec<Vec<f32>> = vec![Vec::with_capacity(n * h * w); channels];
    for (g, first) in (0..n).step_by(batch).enumerate() {
        let b = batch.min(n - first);
        let mut noise = NoiseSource::per_item((0..b).map(|_| streams.fork()).collect());
        let mut x_1 = None;
        let mut observer = Observer::with_view(|view| {
            if view.info.step + 1 == total {
                x_1 = Some(view.x.clone());
            }
            progress(StepInfo {
                step: g * total + view.info.step,
                total: groups * total,
                t: view.info.t,
            });
        });
        generate(
            den,
            [b, channels, h, w],
            opts,
            &mut noise,
            device,
            &mut observer,
        )?;
        drop(observer);
        let x_1 = x_1.expect("a chain of ≥ 2 steps reports its second-to-last state");
        let x0_hat = tweedie_core::tensor::to_vec(&den.predict(x_1, &last, false, false).x0_hat);
        for (k, plane) in x0_hat.chunks(h * w).enumerate() {
            pixels[k % channels].extend_from_slice(plane);
        }
    }
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let clamped_mean =
        |v: &[f32]| v.iter().map(|&x| (x as f64).clamp(-1.0, 1.0)).sum::<f64>() / v.len() as f64;
    let before: Vec<f64> = pixels
        .iter()
        .map(|v| {
            if opts.clip_x0 {
                clamped_mean(v)
            } else {
                mean(v)
            }
        })
        .collect();
    let shift: Vec<f64> = pixels
        .into_iter()
        .zip(target)
        .map(|(v, &m)| {
            if opts.clip_x0 {
                shift_to_clamped_mean(v, m)
            } else {
                mean(&v) - m
            }
        })
        .collect();
    let fit = LastStepFit {
        run: chain_run(opts, total, n, seed, target),
        before,
        shift: Vec::new(),
    };
    Ok(table.with_last_step_shift(&shift, fit)?)
}

/// The record of `chains` chains of `steps` steps run with `opts` from `seed` towards `target`.
fn chain_run(
    opts: &ChainOptions,
    steps: usize,
    chains: usize,
    seed: u64,
    target: &[f64],
) -> ChainRun {
    ChainRun {
        steps,
        variance: opts.variance,
        eta: opts.eta,
        clip: opts.clip_x0,
        chains,
        seed,
        target: target.to_vec(),
    }
}

/// The strided chain from T that a chain fit runs with `opts`, after checking `opts`' η,
/// `shape` (`[chains, C, H, W]`, all ≥ 1), `batch` (≥ 1), `target` (C channel means inside
/// (−1, 1)) and `table` (C channels, timesteps within T).
fn checked_chain(
    den: &Denoiser,
    table: &MeanCorrection,
    target: &[f64],
    shape: [usize; 4],
    batch: usize,
    opts: &ChainOptions,
) -> Result<Vec<Transition>, SampleError> {
    check_eta(opts)?;
    if shape.contains(&0) || batch == 0 {
        return Err(SampleError::invalid(
            "shape",
            format!("{shape:?} in batches of {batch}"),
            "all dimensions and the batch must be ≥ 1",
        ));
    }
    let channels = shape[1];
    if target.len() != channels || target.iter().any(|m| !(-1.0 < *m && *m < 1.0)) {
        return Err(SampleError::invalid(
            "target",
            format!("{target:?}"),
            format!("need {channels} channel means inside (−1, 1)"),
        ));
    }
    let t_max = den.schedule.num_steps();
    table.validate(channels, t_max)?;
    Ok(den.schedule.chain(t_max, opts.steps.min(t_max))?)
}

/// The s with mean(clamp(x − s, −1, 1)) = `target` (safeguarded Newton on the decreasing,
/// piecewise-linear left side, from the unclamped answer mean(x) − target; `target` in (−1, 1)).
fn shift_to_clamped_mean(x: Vec<f32>, target: f64) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mut s = mean - target;
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
            posterior_variance: None,
            chain: None,
            last_step: None,
        }
    }

    /// Prior N(`mean`, 0.1² I) over 1×4×4 images, behind `table`.
    fn model(mean: f64, table: MeanCorrection) -> MeanCorrected<GaussianPrior> {
        model_with(mean, 0.01, table)
    }

    /// Prior N(`mean`, `var` I) over 1×4×4 images, behind `table`.
    fn model_with(mean: f64, var: f64, table: MeanCorrection) -> MeanCorrected<GaussianPrior> {
        let device = Device::flex();
        let m: Tensor<4> = Tensor::ones([1, 1, 4, 4], &device).mul_scalar(mean);
        MeanCorrected {
            inner: GaussianPrior::isotropic(m, var).unwrap(),
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
        let m = image_means(model, n, opts, seed);
        m.iter().sum::<f64>() / n as f64
    }

    /// The per-image means of `n` samples drawn as [`sample_mean`] draws them.
    fn image_means(
        model: &MeanCorrected<GaussianPrior>,
        n: usize,
        opts: &ChainOptions,
        seed: u64,
    ) -> Vec<f64> {
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
        tensor::to_vec(&out.x0)
            .chunks(16)
            .map(|px| px.iter().map(|&x| x as f64).sum::<f64>() / 16.0)
            .collect()
    }

    fn fit(
        model: &MeanCorrected<GaussianPrior>,
        target: f64,
        opts: &ChainOptions,
        seed: u64,
    ) -> MeanCorrection {
        fit_spread(model, target, opts, seed, false)
    }

    fn fit_spread(
        model: &MeanCorrected<GaussianPrior>,
        target: f64,
        opts: &ChainOptions,
        seed: u64,
        match_variance: bool,
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
            match_variance,
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
                (
                    chain.run.steps,
                    chain.run.chains,
                    chain.run.seed,
                    chain.run.clip
                ),
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
        let spread =
            |target: &[f64], shape: [usize; 4], batch: usize, table: &MeanCorrection, var: bool| {
                fit_mean_on_chain(
                    &den,
                    table,
                    target,
                    shape,
                    batch,
                    &opts,
                    0,
                    var,
                    &device,
                    &mut |_| (),
                )
            };
        let run = |target: &[f64], shape: [usize; 4], batch: usize, table: &MeanCorrection| {
            spread(target, shape, batch, table, false)
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
        let err = spread(&[0.2], [4, 1, 4, 4], 2, &ok, true).unwrap_err();
        assert!(err.to_string().contains("posterior variances"), "{err}");
    }

    /// A model twice as spread as the data (std 0.2 where the data's is 0.1): its samples'
    /// image means vary twice as much. Matching the chains' spread of x̂0's mean to the
    /// data's Var(E[m | x_t]) at every step brings fresh samples to the data's spread; without
    /// it the chain fit leaves the spread alone.
    #[test]
    fn chain_fit_matches_the_spread_of_the_image_mean() {
        let schedule = Schedule::linear_default();
        let (s2, pixels) = (0.01, 16.0);
        // Var(E[m | x_t]) for the data N(0.2, s² I): per pixel ᾱ s⁴/(ᾱ s² + 1 − ᾱ), /16.
        let ts: Vec<usize> = (0..=20).map(|i| (i * 50).max(1)).collect();
        let exact = |t: usize| {
            let ab = schedule.level(t).alpha_bar;
            ab * s2 * s2 / (ab * s2 + 1.0 - ab) / pixels
        };
        let mut table = identity();
        table.t = ts.clone();
        table.slope = vec![vec![1.0]; ts.len()];
        table.intercept = vec![vec![0.0]; ts.len()];
        table.posterior_variance = Some(ts.iter().map(|&t| vec![exact(t)]).collect());
        let opts = ChainOptions {
            steps: 20,
            clip_x0: false,
            ..Default::default()
        };
        let wide = model_with(0.2, 4.0 * s2, table);
        let std = |m: &[f64]| {
            let mean = m.iter().sum::<f64>() / m.len() as f64;
            (m.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / m.len() as f64).sqrt()
        };
        let before = std(&image_means(&wide, 512, &opts, 9));
        // At least the wide prior's 0.05 (a short σ² = β chain over-disperses further).
        assert!(before > 0.045, "uncorrected std {before}");
        let only_mean = fit_spread(&wide, 0.2, &opts, 5, false);
        let same = std(&image_means(
            &model_with(0.2, 4.0 * s2, only_mean),
            512,
            &opts,
            9,
        ));
        assert!((same - before).abs() < 0.003, "{same} vs {before}");
        let matched = fit_spread(&wide, 0.2, &opts, 5, true);
        let chain = matched.chain.clone().unwrap();
        assert_eq!(chain.scale.len(), 20);
        // The table's rows run up in t: at t = 1000 the wide model's x̂0 varies 16× too much.
        let top = chain.scale.last().unwrap()[0];
        assert!(top > 0.1 && top < 0.5, "k at t = 1000: {top}");
        let after = std(&image_means(
            &model_with(0.2, 4.0 * s2, matched),
            512,
            &opts,
            9,
        ));
        let target = exact(1).sqrt();
        assert!(
            (after - target).abs() < 0.1 * target,
            "std {after} vs {target}"
        );
    }

    /// The last-step calibration of a biased model (samples at 0.3, or pulled below 0.9 by the
    /// clamp, where the data's mean is 0.1 or 0.7): replaying its own chains (`generate` with
    /// its seed) gives samples with the target mean; fresh chains land near it; every line but
    /// t = 1's is unchanged; calibrating again accumulates the shift and changes nothing more.
    #[test]
    fn last_step_calibration_moves_the_samples_mean_onto_the_target() {
        let schedule = Schedule::linear_default();
        for clip in [false, true] {
            let opts = ChainOptions {
                steps: 20,
                clip_x0: clip,
                ..Default::default()
            };
            let (biased, target) = if clip { (0.9, 0.7) } else { (0.3, 0.1) };
            let before = model(biased, identity());
            let m = sample_mean(&before, 256, &opts, 9);
            assert!((m - target).abs() > 0.1, "clip {clip}: uncorrected {m}");
            let calibrate = |table: &MeanCorrection, seed: u64| {
                let mut steps = 0;
                let fitted = fit_last_step_open_loop(
                    &Denoiser::new(&model(biased, table.clone()), &schedule),
                    table,
                    &[target],
                    [256, 1, 4, 4],
                    48,
                    &opts,
                    seed,
                    &Device::flex(),
                    &mut |info| steps = info.step,
                )
                .unwrap();
                // 256 chains in 6 groups of ≤ 48, 20 steps each.
                assert_eq!(steps, 6 * 20);
                fitted
            };
            let table = calibrate(&identity(), 5);
            let last = table.last_step.clone().unwrap();
            assert_eq!(
                (
                    last.run.steps,
                    last.run.chains,
                    last.run.seed,
                    last.run.clip
                ),
                (20, 256, 5, clip)
            );
            assert!((last.before[0] - m).abs() < 0.03, "{last:?} vs {m}");
            for t in [2, 10, 500, 1000] {
                assert_eq!(table.coefficients(t), identity().coefficients(t), "t = {t}");
            }
            assert!((table.coefficients(1).0[0] + last.shift[0]).abs() < 1e-12);
            let after = model(biased, table.clone());
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
            // Again on the same chains: nothing left to shift; the record holds the total.
            let again = calibrate(&table, 5);
            let total = again.last_step.unwrap();
            assert!((total.shift[0] - last.shift[0]).abs() < 1e-4, "{total:?}");
            assert!((total.before[0] - target).abs() < 1e-4, "{total:?}");
        }
    }

    #[test]
    fn bad_last_step_calibrations_are_errors() {
        let schedule = Schedule::linear_default();
        let m = model(0.2, identity());
        let den = Denoiser::new(&m, &schedule);
        let run = |target: &[f64], shape: [usize; 4], batch: usize, steps: usize| {
            let opts = ChainOptions {
                steps,
                ..Default::default()
            };
            fit_last_step_open_loop(
                &den,
                &identity(),
                target,
                shape,
                batch,
                &opts,
                0,
                &Device::flex(),
                &mut |_| (),
            )
        };
        assert!(run(&[0.2], [4, 1, 4, 4], 2, 5).is_ok());
        assert!(run(&[0.2, 0.1], [4, 1, 4, 4], 2, 5).is_err(), "channels");
        assert!(run(&[-1.0], [4, 1, 4, 4], 2, 5).is_err(), "target at −1");
        assert!(run(&[0.2], [0, 1, 4, 4], 2, 5).is_err(), "no chains");
        assert!(run(&[0.2], [4, 1, 4, 4], 0, 5).is_err(), "batch 0");
        let err = run(&[0.2], [4, 1, 4, 4], 2, 1).unwrap_err();
        assert!(err.to_string().contains("t = 1"), "{err}");
    }

    #[test]
    fn shift_solves_the_clamped_mean() {
        let x: Vec<f32> = vec![-3.0, -0.5, 0.0, 0.2, 0.9, 2.0];
        for target in [-0.9, -0.3, 0.0, 0.1, 0.6, 0.95] {
            let s = shift_to_clamped_mean(x.clone(), target);
            let got = x
                .iter()
                .map(|&v| (v as f64 - s).clamp(-1.0, 1.0))
                .sum::<f64>()
                / 6.0;
            assert!((got - target).abs() < 1e-8, "{target}: s = {s}, mean {got}");
        }
    }
}
