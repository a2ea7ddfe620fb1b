//! Calibration of a denoiser's per-image statistics: does x̂₀ = E[x₀ | x_t] spread its
//! per-image mean colour as much as, less than or more than the truth allows?
//!
//! For a posterior mean, the error x₀ − x̂₀ is uncorrelated with x̂₀ (any function of x_t), so
//! the least-squares slope of the true values on the predicted ones is 1 and the predictions
//! spread less than the truth (Var x̂₀ = Var x₀ − E Var(x₀ | x_t)). A slope below 1 means
//! the predictions are over-spread; at high t that widens the colours sampling arrives at.

use crate::fd::FdError;

/// How predicted per-image vectors (e.g. mean RGB of x̂₀) track the true ones, over n images.
#[derive(Debug, Clone, PartialEq)]
pub struct MeanCalibration {
    /// Least-squares slope of truth on prediction, pooled over the d components after centring
    /// each: β = Σ (p − p̄)(y − ȳ) / Σ (p − p̄)². 1 for a calibrated posterior mean, < 1 when
    /// predictions are over-spread.
    pub slope: f64,
    /// Standard deviation of each predicted component across images (n − 1 normalisation).
    pub predicted_std: Vec<f64>,
    /// Standard deviation of each true component across images.
    pub true_std: Vec<f64>,
    /// Root-mean-square error √(mean over images and components of (p − y)²).
    pub rmse: f64,
}

/// [`MeanCalibration`] of `predicted` against `truth` (same length ≥ 2, same dimension, all
/// finite).
///
/// ```
/// use tweedie_metrics::mean_calibration;
///
/// let truth = vec![vec![0.2], vec![0.4], vec![0.6]];
/// // Predictions twice as far from the centre as the truth: slope ½.
/// let spread = vec![vec![0.0], vec![0.4], vec![0.8]];
/// let c = mean_calibration(&spread, &truth).unwrap();
/// assert!((c.slope - 0.5).abs() < 1e-12);
/// assert!((c.predicted_std[0] - 2.0 * c.true_std[0]).abs() < 1e-12);
/// ```
pub fn mean_calibration(
    predicted: &[Vec<f64>],
    truth: &[Vec<f64>],
) -> Result<MeanCalibration, FdError> {
    let n = predicted.len();
    if n < 2 || truth.len() < 2 {
        return Err(FdError::TooFew {
            what: "calibration".into(),
            n: n.min(truth.len()),
        });
    }
    if truth.len() != n {
        return Err(FdError::DimMismatch(n, truth.len()));
    }
    let d = predicted[0].len();
    for (p, y) in predicted.iter().zip(truth) {
        if p.len() != d || y.len() != d {
            return Err(FdError::DimMismatch(d, p.len().max(y.len())));
        }
        if p.iter().chain(y).any(|v| !v.is_finite()) {
            return Err(FdError::NotFinite("calibration".into()));
        }
    }
    let mean = |rows: &[Vec<f64>], k: usize| rows.iter().map(|r| r[k]).sum::<f64>() / n as f64;
    let (mut cross, mut pp) = (0.0, 0.0);
    let (mut predicted_std, mut true_std) = (Vec::with_capacity(d), Vec::with_capacity(d));
    let mut sq = 0.0;
    for k in 0..d {
        let (pm, ym) = (mean(predicted, k), mean(truth, k));
        let (mut c, mut vp, mut vy) = (0.0, 0.0, 0.0);
        for (p, y) in predicted.iter().zip(truth) {
            let (a, b) = (p[k] - pm, y[k] - ym);
            c += a * b;
            vp += a * a;
            vy += b * b;
            sq += (p[k] - y[k]).powi(2);
        }
        cross += c;
        pp += vp;
        predicted_std.push((vp / (n - 1) as f64).sqrt());
        true_std.push((vy / (n - 1) as f64).sqrt());
    }
    Ok(MeanCalibration {
        slope: if pp > 0.0 { cross / pp } else { f64::NAN },
        predicted_std,
        true_std,
        rmse: (sq / (n * d) as f64).sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y = x + e with e independent of x: regressing y on the posterior mean x̂ = x gives 1;
    /// regressing on an over-spread 1.5·x gives 1/1.5; on a shrunk ½·x gives 2.
    #[test]
    fn slope_detects_over_and_under_spread_predictions() {
        let mut state = 7u64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let x: Vec<Vec<f64>> = (0..4000).map(|_| vec![uniform(), uniform()]).collect();
        let y: Vec<Vec<f64>> = x
            .iter()
            .map(|r| r.iter().map(|v| v + 0.5 * uniform()).collect())
            .collect();
        let scaled = |s: f64| -> Vec<Vec<f64>> {
            x.iter()
                .map(|r| r.iter().map(|v| s * v).collect())
                .collect()
        };
        for (s, want) in [(1.0, 1.0), (1.5, 1.0 / 1.5), (0.5, 2.0)] {
            let c = mean_calibration(&scaled(s), &y).unwrap();
            assert!((c.slope - want).abs() < 0.03 * want, "{s}: {c:?}");
        }
        // Hand values: predictions [0, 2], truth [1, 1] → slope 0, stds √2 and 0, RMSE 1.
        let c = mean_calibration(&[vec![0.0], vec![2.0]], &[vec![1.0], vec![1.0]]).unwrap();
        assert_eq!(c.slope, 0.0);
        assert!((c.predicted_std[0] - 2f64.sqrt()).abs() < 1e-12 && c.true_std[0] == 0.0);
        assert!((c.rmse - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_input_is_an_error() {
        let one = vec![vec![0.0]];
        assert!(mean_calibration(&one, &one).is_err());
        let two = vec![vec![0.0], vec![1.0]];
        assert!(mean_calibration(&two, &[vec![0.0], vec![1.0], vec![2.0]]).is_err());
        assert!(mean_calibration(&two, &[vec![0.0, 1.0], vec![1.0, 0.0]]).is_err());
        assert!(mean_calibration(&[vec![0.0], vec![f64::NAN]], &two).is_err());
    }
}
