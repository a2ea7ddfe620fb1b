//! A post-hoc, per-timestep affine correction of x̂0's per-channel image mean.
//!
//! A small ε-network predicts the image-mean part of ε less precisely than the rest, and
//! x̂0 = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t multiplies that error by √((1 − ᾱ_t)/ᾱ_t) (59 at t = 900 of
//! the linear schedule). At high t, x̂0's mean colour is then over-spread: regressed on it,
//! the true mean has a slope well below the 1 of a posterior mean, and sampling arrives at
//! colours spread wider than the data's.
//!
//! [`MeanCorrection`] refits that mean with the network frozen: for each fitted timestep and
//! channel c it holds a line from the predicted image mean m̂_c to the true one m_c, fitted on
//! training images,
//!
//!   m̃_c = a_c(t) + b_c(t) · m̂_c,
//!
//! with the least-squares slope or the variance-matching one ([`FitRule`]), and
//! [`MeanCorrection::correct_eps`] moves x̂0 by m̃_c − m̂_c (every pixel of channel c), i.e.
//! ε̃ = ε̂ − √(ᾱ_t/(1 − ᾱ_t)) (m̃ − m̂). Between fitted timesteps a and b are interpolated
//! linearly. This is the calibration idea of Pang et al. (2023, "On calibrating diffusion
//! probabilistic models", which subtracts E[ε̂] per t) extended from the mean to the slope,
//! and applied to the image mean only: the spatial detail of x̂0 is untouched.
//!
//! The lines are fitted on the forward process's marginals q(x_t). A sampler's chain visits
//! states the network's errors have moved off those marginals, so the table's intercepts can
//! also be refitted on the chain itself (`tweedie_samplers::fit_mean_on_chain`, recorded in
//! [`MeanCorrection::chain`]).

use crate::diffusion::{StepVariance, eps_from_x0, q_sample, x0_from_eps};
use crate::{CoreError, EpsModel, InvalidParameter, NoiseLevel, NoiseSource, Schedule, Tensor};
use serde::{Deserialize, Serialize};

/// Per-timestep affine correction m̃ = a(t) + b(t)·m̂ of x̂0's per-channel image mean (see
/// the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanCorrection {
    /// The fitted timesteps (1..=T, strictly increasing).
    pub t: Vec<usize>,
    /// Slope b_c(t) of each fitted timestep, one per channel.
    pub slope: Vec<Vec<f64>>,
    /// Intercept a_c(t) of each fitted timestep, one per channel ([−1, 1] image scale).
    pub intercept: Vec<Vec<f64>>,
    /// How many images the lines were fitted on.
    pub images: usize,
    /// Seed of the noise the fit drew (timestep t used seed + t).
    pub seed: u64,
    /// How the slopes were chosen.
    pub rule: FitRule,
    /// Var(E[m_c | x_t]) per fitted timestep and channel, estimated on the fitting images by
    /// Cov(m̂_c, m_c) (for m̂ = E[m | x_t] + an independent error): how much a calibrated x̂0's
    /// mean varies under q(x_t). A chain refit can match the chains' spread to it. Absent in
    /// tables fitted before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posterior_variance: Option<Vec<Vec<f64>>>,
    /// Set when the intercepts were refitted on a sampler's chain
    /// ([`MeanCorrection::with_chain_steps`]); absent in tables fitted on q(x_t) only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainFit>,
    /// Set when the last step's intercept was calibrated open-loop
    /// ([`MeanCorrection::with_last_step_shift`]): at t = 1 only, the line's intercept is
    /// a(1) − `shift`. Absent in tables without that calibration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<LastStepFit>,
}

/// How the last step (t = 1, where every strided chain ends) was calibrated open-loop: fresh
/// chains ran under the whole table, unchanged, and the shift s was solved so that the average
/// over them of the x̂0 their last step outputs (clamped to [−1, 1] when `clip`) has the
/// channel means `target`. Only t = 1's intercept moves (a(1) − s), so every earlier step, and
/// therefore every chain's x_1, is as before, and the samples' mean moves by s.
///
/// Why only the last step: a shift at step i also moves every later x̂0 (a calibrated model
/// carries x_t's mean colour on), so correcting each step by its own open-loop deviation counts
/// a deviation again at every step after the one it entered; at the last step the deviation
/// measured is the samples' own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastStepFit {
    /// The chains that were run (their `clip`: the shift was then solved for the clamped mean,
    /// which is the samples').
    #[serde(flatten)]
    pub run: ChainRun,
    /// The chains' samples' channel means before the calibration ([−1, 1] scale). Like the
    /// other fields but `shift`, it describes the latest calibration only.
    pub before: Vec<f64>,
    /// The shift subtracted from x̂0's channel means at t = 1 (in total, when calibrated
    /// more than once). It reaches every sampler whose chain ends at t = 1 (SDEdit, DPS,
    /// DiffPIR, DDNM too), though it was measured on unconditional chains.
    pub shift: Vec<f64>,
}

/// The reverse chains a table was fitted or calibrated on ([`ChainFit`], [`LastStepFit`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainRun {
    /// Reverse steps of each chain (strided from T).
    pub steps: usize,
    /// The ancestral step's variance.
    pub variance: StepVariance,
    /// DDIM's η, when the chains used DDIM steps.
    pub eta: Option<f64>,
    /// Whether the chains clamped x̂0 to [−1, 1].
    pub clip: bool,
    /// Number of chains averaged.
    pub chains: usize,
    /// Seed of the chains' noise (chain i: the i-th fork of `NoiseSource::new(seed)`).
    pub seed: u64,
    /// The target channel means ([−1, 1] scale).
    pub target: Vec<f64>,
}

/// How a table was refitted on a reverse chain: at each of the chain's timesteps, x̂0's
/// channel means m were moved to U + k(m − U) − s (U: their average over the chains, k:
/// `scale`, 1 unless the spread was matched, s: `shift`), so that their average over `chains`
/// chains equalled `target` (the tower property `E[E[x0 | x_t]] = E[x0]`, which the chain of
/// a correct model satisfies at every step) and, with `scale`, their variance equalled
/// [`MeanCorrection::posterior_variance`]. The line became b' = k·b, a' = k·a + (1 − k)·U − s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainFit {
    /// The chains that were run (their `clip`: the shift was then solved for the clamped x̂0's
    /// mean, the one the step uses; their `target`: the training images' average).
    #[serde(flatten)]
    pub run: ChainRun,
    /// The shift subtracted at each of the table's timesteps, one per channel (aligned with
    /// [`MeanCorrection::t`]).
    pub shift: Vec<Vec<f64>>,
    /// The spread's scale k at each timestep, one per channel (empty: the spread was not
    /// matched, k = 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<Vec<f64>>,
}

/// One chain step's refit of the line, per channel: m → `centre` + `scale`·(m − `centre`) −
/// `shift` ([`ChainFit`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChainStep {
    /// U: the chains' average of x̂0's channel mean before the step's refit.
    pub centre: Vec<f64>,
    /// k: the spread's scale (1: unchanged).
    pub scale: Vec<f64>,
    /// s: the shift subtracted after scaling.
    pub shift: Vec<f64>,
}

/// How [`MeanCorrection::fit`] chooses each line m̃ = a + b·m̂ (always through the means:
/// a = m̄ − b·m̂̄, so the corrected mean is unbiased on the fitting images).
///
/// A posterior mean satisfies both Cov(m̂, m) = Var(m̂) (slope of truth on it: 1) and, with
/// it, Var(m̂) = Var(E[m | x_t]). A predictor m̂ = E[m | x_t] + e with an independent error e
/// has Cov(m̂, m) = Var(E[m | x_t]) but Var(m̂) larger by Var(e); no line can restore both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FitRule {
    /// Least squares, b = Cov(m̂, m)/Var(m̂): the best line in mean square, E[m | m̂]. It
    /// shrinks the error away with part of the signal, so x̂0's mean varies less than
    /// E[m | x_t] does.
    Regression,
    /// Variance matching, b = √(Cov(m̂, m)/Var(m̂)) (0 when the covariance is ≤ 0): the
    /// corrected mean varies as much as E[m | x_t] = m̂ − e would (Var = Cov(m̂, m)).
    Variance,
}

impl MeanCorrection {
    /// Checks the table: at least one timestep, strictly increasing in 1..=`max_t`, and
    /// `channels` finite slopes and intercepts for each.
    pub fn validate(&self, channels: usize, max_t: usize) -> Result<(), InvalidParameter> {
        let bad = |reason: String| InvalidParameter::new("mean_correction", "table", reason);
        if self.t.is_empty() {
            return Err(bad("has no timesteps".into()));
        }
        if self.slope.len() != self.t.len() || self.intercept.len() != self.t.len() {
            return Err(bad(format!(
                "has {} timesteps but {} slope and {} intercept rows",
                self.t.len(),
                self.slope.len(),
                self.intercept.len()
            )));
        }
        if self.t[0] < 1
            || *self.t.last().unwrap() > max_t
            || self.t.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(bad(format!(
                "timesteps {:?} must increase strictly within 1..={max_t}",
                self.t
            )));
        }
        for row in self.slope.iter().chain(&self.intercept) {
            if row.len() != channels || row.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "every row must hold {channels} finite values (one per channel), not {row:?}"
                )));
            }
        }
        if let Some(var) = &self.posterior_variance
            && (var.len() != self.t.len()
                || var.iter().any(|r| {
                    r.len() != channels || r.iter().any(|v| !(v.is_finite() && *v >= 0.0))
                }))
        {
            return Err(bad(format!(
                "posterior_variance must hold {channels} finite values ≥ 0 for each of the {} timesteps",
                self.t.len()
            )));
        }
        if let Some(last) = &self.last_step
            && [&last.shift, &last.run.target, &last.before]
                .iter()
                .any(|v| v.len() != channels || v.iter().any(|x| !x.is_finite()))
        {
            return Err(bad(format!(
                "last_step's shift, target and before must each hold {channels} finite values, not {:?} / {:?} / {:?}",
                last.shift, last.run.target, last.before
            )));
        }
        Ok(())
    }

    /// (a(t), b(t)) per channel, linearly interpolated between the fitted timesteps and held
    /// constant beyond the first and last; at t = 1 the [`last_step`](Self::last_step) shift
    /// is subtracted from a.
    ///
    /// # Panics
    /// If the table has no timesteps (see [`validate`](Self::validate)).
    pub fn coefficients(&self, t: usize) -> (Vec<f64>, Vec<f64>) {
        let mut a = self.interpolate(&self.intercept, t);
        if let Some(last) = self.last_step.as_ref().filter(|_| t == 1) {
            a.iter_mut().zip(&last.shift).for_each(|(a, s)| *a -= s);
        }
        (a, self.interpolate(&self.slope, t))
    }

    /// The table with t = 1's intercept lowered by `shift` more (per channel), recorded in
    /// `fit` ([`LastStepFit`]; its `shift` becomes the total, this table's earlier last-step
    /// shift included). Every other timestep's line is unchanged.
    pub fn with_last_step_shift(
        &self,
        shift: &[f64],
        mut fit: LastStepFit,
    ) -> Result<Self, InvalidParameter> {
        let channels = self.intercept.first().map_or(0, Vec::len);
        if shift.len() != channels || shift.iter().any(|s| !s.is_finite()) {
            return Err(InvalidParameter::new(
                "last-step shift",
                format!("{shift:?}"),
                format!("need {channels} finite values (one per channel)"),
            ));
        }
        let earlier = self.last_step.as_ref().map(|l| l.shift.clone());
        fit.shift = match earlier {
            Some(e) => e.iter().zip(shift).map(|(e, s)| e + s).collect(),
            None => shift.to_vec(),
        };
        let table = Self {
            last_step: Some(fit),
            ..self.clone()
        };
        let max_t = *table.t.last().unwrap_or(&1);
        table.validate(channels, max_t)?;
        Ok(table)
    }

    /// [`posterior_variance`](Self::posterior_variance) at `t`, interpolated as the lines are.
    pub fn posterior_variance_at(&self, t: usize) -> Option<Vec<f64>> {
        self.posterior_variance
            .as_ref()
            .map(|rows| self.interpolate(rows, t))
    }

    /// `rows` (one per fitted timestep) at `t`: linear between fitted timesteps, held beyond.
    fn interpolate(&self, rows: &[Vec<f64>], t: usize) -> Vec<f64> {
        let k = self.t.partition_point(|&s| s <= t);
        let (i, j, w) = if k == 0 {
            (0, 0, 0.0)
        } else if k == self.t.len() {
            (k - 1, k - 1, 0.0)
        } else {
            let (lo, hi) = (self.t[k - 1], self.t[k]);
            (k - 1, k, (t - lo) as f64 / (hi - lo) as f64)
        };
        rows[i]
            .iter()
            .zip(&rows[j])
            .map(|(p, q)| p + w * (q - p))
            .collect()
    }

    /// ε̃ = ε̂ − √(ᾱ/(1 − ᾱ)) (m̃ − m̂), which moves x̂0 = (x_t − √(1 − ᾱ) ε̂)/√ᾱ by
    /// m̃ − m̂ = a + (b − 1) m̂ per channel (m̂: x̂0's spatial mean). Differentiable in `x_t`
    /// and `eps`.
    ///
    /// # Panics
    /// If the table is empty or its rows do not hold one value per channel of `eps`;
    /// [`validate`](Self::validate) rules both out (a `UNetConfig` validates its table).
    pub fn correct_eps(
        &self,
        x_t: Tensor<4>,
        eps: Tensor<4>,
        t: usize,
        alpha_bar: f64,
    ) -> Tensor<4> {
        let [_, c, _, _] = eps.dims();
        let (a, b) = self.coefficients(t);
        let device = eps.device();
        let column = |v: &[f64]| {
            crate::tensor::from_vec(v.iter().map(|&x| x as f32).collect(), [1, c, 1, 1], &device)
        };
        let x0 = x0_from_eps(x_t.clone(), eps, alpha_bar);
        let mean = x0.clone().mean_dim(3).mean_dim(2);
        let shift = column(&a) + mean * column(&b).sub_scalar(1.0);
        eps_from_x0(x_t, x0 + shift, alpha_bar)
    }

    /// Fits the table for `model` on clean images (`batches` of `[B, C, H, W]` in [−1, 1]):
    /// at each timestep t of `ts`, noise every image with seed + t, predict x̂0 without
    /// clipping, and fit per channel a line from x̂0's image mean m̂ to the true one m with
    /// `rule`'s slope b, through the means (a = m̄ − b·m̂̄; b = 0 when m̂ does not vary).
    pub fn fit<M: EpsModel + ?Sized>(
        model: &M,
        batches: &[Tensor<4>],
        schedule: &Schedule,
        ts: &[usize],
        seed: u64,
        rule: FitRule,
    ) -> Result<Self, CoreError> {
        let images: usize = batches.iter().map(|b| b.dims()[0]).sum();
        if images < 2 {
            return Err(CoreError::invalid(
                "images",
                images,
                "the fit needs at least 2",
            ));
        }
        let channels = batches[0].dims()[1];
        // The true means do not depend on t: read them once.
        let mut truth = Vec::new();
        for x0 in batches {
            if x0.dims()[1] != channels {
                return Err(CoreError::Shape(format!(
                    "batches with {channels} and {} channels",
                    x0.dims()[1]
                )));
            }
            truth.extend(channel_means(x0));
        }
        let (mut slope, mut intercept, mut variance) = (Vec::new(), Vec::new(), Vec::new());
        for &t in ts {
            schedule.check_timestep(t)?;
            let mut noise = NoiseSource::new(seed.wrapping_add(t as u64));
            let predicted = noised_channel_means(model, batches, schedule.level(t), &mut noise);
            let (mut a, mut b, mut v) = (Vec::new(), Vec::new(), Vec::new());
            for k in 0..channels {
                let p: Vec<f64> = predicted.iter().map(|r| r[k]).collect();
                let y: Vec<f64> = truth.iter().map(|r| r[k]).collect();
                let (ak, bk, cov) = line_through_means(&p, &y, rule);
                v.push(cov.max(0.0));
                if !(ak.is_finite() && bk.is_finite()) {
                    return Err(CoreError::invalid(
                        "model output",
                        format!("t = {t}"),
                        "is not finite",
                    ));
                }
                a.push(ak);
                b.push(bk);
            }
            intercept.push(a);
            slope.push(b);
            variance.push(v);
        }
        let table = Self {
            t: ts.to_vec(),
            slope,
            intercept,
            images,
            seed,
            rule,
            posterior_variance: Some(variance),
            chain: None,
            last_step: None,
        };
        table.validate(channels, schedule.num_steps())?;
        Ok(table)
    }

    /// The table refitted on a chain: at each of `ts` (increasing), with that timestep's
    /// [`ChainStep`] (U, k, s) and this table's line (a, b) there (interpolated where `ts` falls
    /// between fitted timesteps), the line becomes b' = k·b, a' = k·a + (1 − k)·U − s, so that
    /// it moves x̂0's mean to U + k(m − U) − s. `chain` records how the steps were found (its
    /// `shift` and `scale` are filled from `steps`; `scale` stays empty when every k is 1).
    pub fn with_chain_steps(
        &self,
        ts: &[usize],
        steps: &[ChainStep],
        mut chain: ChainFit,
        max_t: usize,
    ) -> Result<Self, InvalidParameter> {
        let channels = self.intercept.first().map_or(0, Vec::len);
        self.validate(channels, max_t)?;
        if ts.len() != steps.len() {
            return Err(InvalidParameter::new(
                "chain steps",
                steps.len(),
                format!("need one per timestep ({})", ts.len()),
            ));
        }
        let (mut slope, mut intercept, mut variance) = (Vec::new(), Vec::new(), Vec::new());
        for (&t, step) in ts.iter().zip(steps) {
            let (a, b) = self.coefficients(t);
            if [&step.centre, &step.scale, &step.shift]
                .iter()
                .any(|v| v.len() != channels)
            {
                return Err(InvalidParameter::new(
                    "chain step",
                    format!("{step:?}"),
                    format!("need {channels} values (one per channel) in each part"),
                ));
            }
            intercept.push(
                (0..channels)
                    .map(|c| {
                        let k = step.scale[c];
                        k * a[c] + (1.0 - k) * step.centre[c] - step.shift[c]
                    })
                    .collect(),
            );
            slope.push((0..channels).map(|c| step.scale[c] * b[c]).collect());
            if let Some(v) = self.posterior_variance_at(t) {
                variance.push(v);
            }
        }
        chain.shift = steps.iter().map(|s| s.shift.clone()).collect();
        chain.scale = if steps.iter().all(|s| s.scale.iter().all(|&k| k == 1.0)) {
            Vec::new()
        } else {
            steps.iter().map(|s| s.scale.clone()).collect()
        };
        let table = Self {
            t: ts.to_vec(),
            slope,
            intercept,
            images: self.images,
            seed: self.seed,
            rule: self.rule,
            posterior_variance: self.posterior_variance.as_ref().map(|_| variance),
            chain: Some(chain),
            // A t = 1 row already holds any last-step shift (through `coefficients`).
            last_step: self.last_step.clone().filter(|_| ts.first() != Some(&1)),
        };
        table.validate(channels, max_t)?;
        Ok(table)
    }
}

/// x̂0's per-image channel means at `level` for clean `batches`: each batch is noised,
/// x_t = √ᾱ x0 + √(1 − ᾱ) z with z from `noise` (drawn batch by batch, in order), and
/// denoised without clipping. The fit and `tweedie evaluate`'s calibration both read this.
pub fn noised_channel_means<M: EpsModel + ?Sized>(
    model: &M,
    batches: &[Tensor<4>],
    level: NoiseLevel,
    noise: &mut NoiseSource,
) -> Vec<Vec<f64>> {
    let mut predicted = Vec::new();
    for x0 in batches {
        let x_t = q_sample(x0.clone(), noise.normal_like(x0), level.alpha_bar);
        predicted.extend(channel_means(&model.denoise(x_t, level)));
    }
    predicted
}

/// Per-image, per-channel spatial means of a `[B, C, H, W]` batch (`[B][C]`).
pub fn channel_means(x: &Tensor<4>) -> Vec<Vec<f64>> {
    let [b, c, _, _] = x.dims();
    let m = crate::tensor::to_vec(&x.clone().mean_dim(3).mean_dim(2));
    (0..b)
        .map(|i| (0..c).map(|k| m[i * c + k] as f64).collect())
        .collect()
}

/// (a, b) of the line y ≈ a + b·p through the means with `rule`'s slope (b = 0 when p is
/// constant, i.e. its spread is within rounding of its size: Σ(p − p̄)² ≤ 1e-12·Σp²), and
/// the (population) covariance of p and y.
fn line_through_means(p: &[f64], y: &[f64], rule: FitRule) -> (f64, f64, f64) {
    let n = p.len() as f64;
    let (pm, ym) = (p.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut cross, mut var, mut size) = (0.0, 0.0, 0.0);
    for (pi, yi) in p.iter().zip(y) {
        cross += (pi - pm) * (yi - ym);
        var += (pi - pm) * (pi - pm);
        size += pi * pi;
    }
    let b = match rule {
        _ if var <= 1e-12 * size => 0.0,
        FitRule::Regression => cross / var,
        FitRule::Variance => (cross.max(0.0) / var).sqrt(),
    };
    (ym - b * pm, b, cross / n)
}

/// A model whose ε̂ goes through a [`MeanCorrection`] (the learned-variance output, if any,
/// is passed on unchanged).
#[derive(Debug, Clone)]
pub struct MeanCorrected<M> {
    /// The uncorrected model.
    pub inner: M,
    /// The correction applied to its ε̂.
    pub correction: MeanCorrection,
}

impl<M: EpsModel> EpsModel for MeanCorrected<M> {
    fn predict_eps(&self, x_t: Tensor<4>, level: crate::NoiseLevel) -> Tensor<4> {
        let eps = self.inner.predict_eps(x_t.clone(), level);
        self.correction
            .correct_eps(x_t, eps, level.t, level.alpha_bar)
    }
    fn predict_eps_and_variance(
        &self,
        x_t: Tensor<4>,
        level: crate::NoiseLevel,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        let (eps, v) = self.inner.predict_eps_and_variance(x_t.clone(), level);
        (
            self.correction
                .correct_eps(x_t, eps, level.t, level.alpha_bar),
            v,
        )
    }
    fn has_learned_variance(&self) -> bool {
        self.inner.has_learned_variance()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoiseLevel;
    use crate::tensor::{from_vec, to_vec};
    use burn::tensor::Device;

    fn table() -> MeanCorrection {
        MeanCorrection {
            t: vec![100, 300],
            slope: vec![vec![1.0, 0.5], vec![0.0, 0.1]],
            intercept: vec![vec![0.0, 0.2], vec![0.4, -0.2]],
            images: 10,
            seed: 0,
            rule: FitRule::Regression,
            posterior_variance: None,
            chain: None,
            last_step: None,
        }
    }

    #[test]
    fn coefficients_interpolate_between_fitted_timesteps_and_hold_beyond() {
        let m = table();
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        let (a, b) = m.coefficients(200);
        assert!(
            close(&a, &[0.2, 0.0]) && close(&b, &[0.5, 0.3]),
            "{a:?} {b:?}"
        );
        let (a, b) = m.coefficients(150);
        assert!(
            close(&a, &[0.1, 0.1]) && close(&b, &[0.75, 0.4]),
            "{a:?} {b:?}"
        );
        assert_eq!(m.coefficients(1), (vec![0.0, 0.2], vec![1.0, 0.5]));
        assert_eq!(m.coefficients(100), (vec![0.0, 0.2], vec![1.0, 0.5]));
        assert_eq!(m.coefficients(300), (vec![0.4, -0.2], vec![0.0, 0.1]));
        assert_eq!(m.coefficients(1000), (vec![0.4, -0.2], vec![0.0, 0.1]));
    }

    /// A last-step shift lowers a(1) only, accumulates when applied twice, is checked, and
    /// round-trips through JSON (a table without one reads as before).
    #[test]
    fn last_step_shift_moves_only_t_1() {
        let fit = |shift: Vec<f64>| LastStepFit {
            run: ChainRun {
                steps: 100,
                variance: StepVariance::Beta,
                eta: None,
                clip: true,
                chains: 8,
                seed: 3,
                target: vec![0.1, -0.2],
            },
            before: vec![0.12, -0.15],
            shift,
        };
        let m = table();
        let shifted = m.with_last_step_shift(&[0.02, 0.05], fit(vec![])).unwrap();
        let (a, b) = shifted.coefficients(1);
        let close = |x: &[f64], y: &[f64]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-12);
        assert!(close(&a, &[-0.02, 0.15]) && b == [1.0, 0.5], "{a:?} {b:?}");
        for t in [2, 100, 150, 1000] {
            assert_eq!(shifted.coefficients(t), m.coefficients(t), "t = {t}");
        }
        let twice = shifted
            .with_last_step_shift(&[0.01, -0.05], fit(vec![]))
            .unwrap();
        let total = &twice.last_step.as_ref().unwrap().shift;
        assert!(
            (total[0] - 0.03).abs() < 1e-12 && total[1].abs() < 1e-12,
            "{total:?}"
        );
        assert!(m.with_last_step_shift(&[0.1], fit(vec![])).is_err());
        assert!(
            m.with_last_step_shift(&[0.1, f64::NAN], fit(vec![]))
                .is_err()
        );
        let mut bad = shifted.clone();
        bad.last_step.as_mut().unwrap().shift.pop();
        assert!(bad.validate(2, 1000).is_err());
        let json = serde_json::to_string(&shifted).unwrap();
        assert_eq!(
            serde_json::from_str::<MeanCorrection>(&json).unwrap(),
            shifted
        );
        let plain = serde_json::to_string(&m).unwrap();
        assert!(!plain.contains("last_step"), "{plain}");
        assert_eq!(serde_json::from_str::<MeanCorrection>(&plain).unwrap(), m);
    }

    /// The corrected x̂0 has channel means a + b·m̂ and the same detail (x̂0 − its mean).
    #[test]
    fn correct_eps_moves_only_the_channel_means_of_x0() {
        let device = Device::flex();
        let mut noise = NoiseSource::new(3);
        let x_t: Tensor<4> = noise.normal([2, 2, 3, 3], &device);
        let eps: Tensor<4> = noise.normal([2, 2, 3, 3], &device);
        let (t, alpha_bar) = (200, 0.3);
        let m = table();
        let fixed = m.correct_eps(x_t.clone(), eps.clone(), t, alpha_bar);
        let before = to_vec(&x0_from_eps(x_t.clone(), eps, alpha_bar));
        let after = to_vec(&x0_from_eps(x_t, fixed, alpha_bar));
        let (a, b) = ([0.2, 0.0], [0.5, 0.3]);
        for item in 0..2 {
            for c in 0..2 {
                let at = |v: &[f32], k: usize| v[(item * 2 + c) * 9 + k] as f64;
                let mean = |v: &[f32]| (0..9).map(|k| at(v, k)).sum::<f64>() / 9.0;
                let (m0, m1) = (mean(&before), mean(&after));
                assert!((m1 - (a[c] + b[c] * m0)).abs() < 1e-5, "{m1} vs {m0}");
                for k in 0..9 {
                    let detail = (at(&before, k) - m0) - (at(&after, k) - m1);
                    assert!(detail.abs() < 1e-5, "detail changed by {detail}");
                }
            }
        }
    }

    /// ε̂ = 0 gives x̂0 = x_t/√ᾱ, whose channel mean is the truth's plus noise of variance
    /// (1 − ᾱ)/(ᾱ·HW). For per-image constant channels m ~ N(μ, s²), the least-squares line
    /// of m on m̂ is the exact posterior mean E[m | m̂] = μ + k(m̂ − μ) with
    /// k = s²/(s² + (1 − ᾱ)/(ᾱ·HW)): the fit must find it, and refitting the corrected
    /// model must find the identity.
    #[test]
    fn fit_recovers_the_gaussian_posterior_line_of_an_over_spread_model() {
        struct ZeroEps;
        impl EpsModel for ZeroEps {
            fn predict_eps(&self, x_t: Tensor<4>, _: NoiseLevel) -> Tensor<4> {
                x_t.zeros_like()
            }
        }
        let device = Device::flex();
        let (mu, s, n, side) = (0.2, 0.3, 4000, 4);
        let mut noise = NoiseSource::new(11);
        let values: Vec<f32> = noise
            .normal_vec(n)
            .into_iter()
            .flat_map(|z| vec![(mu + s * z as f64) as f32; side * side])
            .collect();
        let x0 = from_vec(values, [n, 1, side, side], &device);
        let batches = vec![x0.clone().narrow(0, 0, n / 2), x0.narrow(0, n / 2, n / 2)];
        let schedule = Schedule::linear_default();
        let ts = [200, 300, 500];
        let fit = MeanCorrection::fit(&ZeroEps, &batches, &schedule, &ts, 5, FitRule::Regression)
            .unwrap();
        assert_eq!((fit.images, fit.seed, fit.t.clone()), (n, 5, ts.to_vec()));
        for (i, &t) in ts.iter().enumerate() {
            let ab = schedule.level(t).alpha_bar;
            let k = s * s / (s * s + (1.0 - ab) / (ab * (side * side) as f64));
            let (b, a) = (fit.slope[i][0], fit.intercept[i][0]);
            assert!((b - k).abs() < 0.05 * k + 0.01, "t={t}: slope {b} vs {k}");
            assert!((a - mu * (1.0 - k)).abs() < 0.02, "t={t}: intercept {a}");
        }
        // The middle timestep is informative both ways (k well inside (0, 1)).
        assert!(fit.slope[1][0] > 0.2 && fit.slope[1][0] < 0.9, "{fit:?}");
        let corrected = MeanCorrected {
            inner: ZeroEps,
            correction: fit,
        };
        let refit = MeanCorrection::fit(
            &corrected,
            &batches,
            &schedule,
            &ts,
            99,
            FitRule::Regression,
        )
        .unwrap();
        for i in 0..ts.len() {
            assert!((refit.slope[i][0] - 1.0).abs() < 0.1, "{refit:?}");
            assert!(refit.intercept[i][0].abs() < 0.03, "{refit:?}");
        }
        // Cov(m̂, m): s² for x̂0 = x_t/√ᾱ (the truth plus independent noise); for the corrected
        // model, the posterior mean itself, Var(E[m | m̂]) = k·s². Within 4 standard errors,
        // √(Var(m̂)·s²/n).
        let (first, again) = (fit_variance(&corrected.correction), fit_variance(&refit));
        for (i, &t) in ts.iter().enumerate() {
            let ab = schedule.level(t).alpha_bar;
            let noise = (1.0 - ab) / (ab * (side * side) as f64);
            let k = s * s / (s * s + noise);
            let se = |var_pred: f64| 4.0 * (var_pred * s * s / n as f64).sqrt();
            assert!(
                (first[i] - s * s).abs() < se(s * s + noise),
                "t={t}: {first:?}"
            );
            assert!(
                (again[i] - k * s * s).abs() < se(k * s * s),
                "t={t}: {again:?}"
            );
        }
        // Variance matching: b = √k, and the corrected mean's variance is k·s² (that of
        // E[m | m̂]) where the least-squares line's is k²·s².
        let var =
            MeanCorrection::fit(&ZeroEps, &batches, &schedule, &ts, 5, FitRule::Variance).unwrap();
        assert_eq!(var.rule, FitRule::Variance);
        for (i, &t) in ts.iter().enumerate() {
            let ab = schedule.level(t).alpha_bar;
            let k = s * s / (s * s + (1.0 - ab) / (ab * (side * side) as f64));
            let (b, a) = (var.slope[i][0], var.intercept[i][0]);
            assert!(
                (b - k.sqrt()).abs() < 0.05 * k.sqrt(),
                "t={t}: slope {b} vs √{k}"
            );
            assert!((a - mu * (1.0 - b)).abs() < 0.02, "t={t}: intercept {a}");
        }
    }

    /// The refitted table moves a(t) by −shift at the chain's timesteps (interpolating the old
    /// table there) and, with a scale k, maps the line to k·b, k·a + (1 − k)·U − s; it records
    /// the chain and refuses ragged steps.
    #[test]
    fn chain_steps_refit_the_lines_at_the_chain_timesteps() {
        let mut m = table();
        m.posterior_variance = Some(vec![vec![0.01, 0.02], vec![0.03, 0.0]]);
        let chain = ChainFit {
            run: ChainRun {
                steps: 3,
                variance: StepVariance::Beta,
                eta: None,
                clip: true,
                chains: 8,
                seed: 4,
                target: vec![0.1, -0.1],
            },
            shift: Vec::new(),
            scale: Vec::new(),
        };
        let shifts = vec![vec![0.01, -0.02], vec![0.0, 0.5], vec![-0.3, 0.0]];
        let step = |shift: &Vec<f64>, scale: [f64; 2]| ChainStep {
            centre: vec![0.3, -0.4],
            scale: scale.to_vec(),
            shift: shift.clone(),
        };
        let plain: Vec<ChainStep> = shifts.iter().map(|s| step(s, [1.0, 1.0])).collect();
        let r = m
            .with_chain_steps(&[50, 200, 1000], &plain, chain.clone(), 1000)
            .unwrap();
        assert_eq!(r.t, vec![50, 200, 1000]);
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        assert!(close(&r.intercept[0], &[-0.01, 0.22]), "{r:?}");
        assert!(close(&r.intercept[1], &[0.2, -0.5]), "{r:?}");
        assert!(close(&r.intercept[2], &[0.7, -0.2]), "{r:?}");
        assert!(close(&r.slope[1], &[0.5, 0.3]) && close(&r.slope[2], &[0.0, 0.1]));
        let var = r.posterior_variance.as_ref().unwrap();
        assert!(
            close(&var[0], &[0.01, 0.02]) && close(&var[1], &[0.02, 0.01]),
            "{var:?}"
        );
        let fit = r.chain.as_ref().unwrap();
        assert_eq!((&fit.shift, fit.scale.is_empty()), (&shifts, true));
        assert_eq!((r.images, r.seed, r.rule), (m.images, m.seed, m.rule));
        // A scale: at t = 200 (a, b) = (0.2, 0.5) in channel 0 and (0.0, 0.3) in channel 1.
        let scaled: Vec<ChainStep> = shifts.iter().map(|s| step(s, [2.0, 0.5])).collect();
        let r2 = m
            .with_chain_steps(&[50, 200, 1000], &scaled, chain.clone(), 1000)
            .unwrap();
        assert!(close(&r2.slope[1], &[1.0, 0.15]), "{r2:?}");
        // k·a + (1 − k)·U − s: 2·0.2 − 0.3 − 0 and 0.5·0 + 0.5·(−0.4) − 0.5.
        assert!(close(&r2.intercept[1], &[0.1, -0.7]), "{r2:?}");
        assert_eq!(r2.chain.as_ref().unwrap().scale[1], vec![2.0, 0.5]);
        // It round-trips through JSON, and a table without a chain reads as before.
        let back: MeanCorrection =
            serde_json::from_str(&serde_json::to_string(&r2).unwrap()).unwrap();
        assert_eq!(back, r2);
        assert!(!serde_json::to_string(&table()).unwrap().contains("chain"));
        assert!(
            m.with_chain_steps(&[50, 200], &plain, chain.clone(), 1000)
                .is_err()
        );
        let short = ChainStep {
            centre: vec![0.0],
            scale: vec![1.0],
            shift: vec![0.0],
        };
        assert!(
            m.with_chain_steps(&[50], &[short], chain.clone(), 1000)
                .is_err()
        );
        assert!(
            m.with_chain_steps(&[200, 50], &plain[..2], chain, 1000)
                .is_err()
        );
        let mut bad = m.clone();
        bad.posterior_variance = Some(vec![vec![0.01, -0.02], vec![0.03, 0.0]]);
        assert!(bad.validate(2, 1000).is_err(), "negative variance");
    }

    /// A line with no spread in the prediction gets slope 0 (and the mean as intercept), also
    /// when rounding leaves a spread of a few ulps.
    #[test]
    fn constant_predictions_get_a_flat_line() {
        let p = [0.3, 0.3 + 1e-16, 0.3 - 1e-16, 0.3];
        let y = [0.1, 0.2, 0.3, 0.4];
        for rule in [FitRule::Regression, FitRule::Variance] {
            let (a, b, _) = line_through_means(&p, &y, rule);
            assert_eq!(b, 0.0, "{rule:?}");
            assert!((a - 0.25).abs() < 1e-12);
        }
        let (_, b, cov) = line_through_means(&[0.0, 1.0], &[0.0, 2.0], FitRule::Regression);
        assert!((b - 2.0).abs() < 1e-12 && (cov - 0.5).abs() < 1e-12);
    }

    /// Channel 0 of a fitted table's posterior variances.
    fn fit_variance(m: &MeanCorrection) -> Vec<f64> {
        m.posterior_variance
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| r[0])
            .collect()
    }

    #[test]
    fn invalid_tables_and_fits_are_errors() {
        let ok = table();
        assert!(ok.validate(2, 1000).is_ok());
        assert!(ok.validate(3, 1000).is_err(), "wrong channel count");
        assert!(ok.validate(2, 200).is_err(), "t beyond the schedule");
        let mut m = table();
        m.t = vec![300, 100];
        assert!(m.validate(2, 1000).is_err(), "not increasing");
        let mut m = table();
        m.slope[1][0] = f64::NAN;
        assert!(m.validate(2, 1000).is_err(), "NaN");
        let mut m = table();
        m.intercept.pop();
        assert!(m.validate(2, 1000).is_err(), "missing row");
        let mut m = table();
        m.t.clear();
        assert!(m.validate(2, 1000).is_err(), "empty");
        let device = Device::flex();
        let one: Tensor<4> = Tensor::zeros([1, 3, 2, 2], &device);
        let model =
            crate::priors::GaussianPrior::isotropic(Tensor::zeros([1, 3, 2, 2], &device), 1.0)
                .unwrap();
        let schedule = Schedule::linear_default();
        let rule = FitRule::Regression;
        let only_one = std::slice::from_ref(&one);
        assert!(MeanCorrection::fit(&model, only_one, &schedule, &[100], 0, rule).is_err());
        let two = Tensor::cat(vec![one.clone(), one], 0);
        assert!(MeanCorrection::fit(&model, &[two], &schedule, &[1001], 0, rule).is_err());
    }
}
