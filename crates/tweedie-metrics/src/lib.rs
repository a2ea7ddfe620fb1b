//! `tweedie-metrics`: PSNR, SSIM and LPIPS, and two Fréchet distances between image sets
//! ([`fd`]: FD-Alex on LPIPS-AlexNet conv5 features and colour-FD on mean RGB — our own
//! sample-quality numbers, not FID), and [`calibration`] of a denoiser's per-image mean colour.
//!
//! Convention: inputs are image batches `[B, 3, H, W]` in **[−1, 1]** (the models' range).
//! PSNR and SSIM are reported on the [0, 1] scale (peak 1), as the problem sheet does; LPIPS
//! takes the [−1, 1] images directly, as the reference `lpips` package does. Every function
//! returns one value per batch item.

pub mod calibration;
pub mod fd;
mod lpips;
pub mod nearest;

pub use calibration::{MeanCalibration, mean_calibration};
pub use fd::{
    FdError, FdScores, FrechetTerms, SetFeatures, SplitFloor, draw_floor, fd_scores, frechet_terms,
    split_floor,
};
pub use lpips::{Backbone, Lpips, LpipsError, default_alex_path};
pub use nearest::{DistanceSummary, Neighbour, fraction_below, nearest_pixel};

use burn::tensor::Tensor;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

/// Errors of the pixel metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    /// The two batches differ in shape.
    #[error("image shapes differ: {0:?} vs {1:?}")]
    ShapeMismatch([usize; 4], [usize; 4]),
    /// The images are too small for the metric.
    #[error("{metric} needs images of at least {min}×{min} pixels, got {w}×{h}")]
    TooSmall {
        /// Metric name.
        metric: &'static str,
        /// Minimum side.
        min: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
}

fn check_same(a: &Tensor<4>, b: &Tensor<4>) -> Result<(), MetricError> {
    if a.dims() != b.dims() {
        return Err(MetricError::ShapeMismatch(a.dims(), b.dims()));
    }
    Ok(())
}

/// PSNR in dB on the [0, 1] scale of [−1, 1] images: 10 log10(1/MSE₀₁), MSE₀₁ = MSE₋₁₁/4.
/// Identical images give +∞.
///
/// ```
/// use tweedie_core::{Device, Tensor};
/// use tweedie_metrics::psnr;
///
/// let device = Device::flex();
/// let a: Tensor<4> = Tensor::zeros([2, 3, 4, 4], &device);
/// // An error of 0.2 on the [−1, 1] scale is 0.1 on the [0, 1] scale: MSE 0.01, 20 dB.
/// let b = a.clone().add_scalar(0.2);
/// let p = psnr(&a, &b).unwrap();
/// assert_eq!(p.len(), 2); // one value per batch item
/// assert!((p[0] - 20.0).abs() < 1e-4, "{}", p[0]);
/// assert!(psnr(&a, &a).unwrap()[0].is_infinite());
/// // Shapes must match.
/// assert!(psnr(&a, &Tensor::zeros([1, 3, 4, 4], &device)).is_err());
/// ```
pub fn psnr(a: &Tensor<4>, b: &Tensor<4>) -> Result<Vec<f64>, MetricError> {
    check_same(a, b)?;
    let [n, ..] = a.dims();
    let mse = (a.clone() - b.clone())
        .powf_scalar(2.0)
        .reshape([n as i32, -1])
        .mean_dim(1);
    Ok(tweedie_core::tensor::to_vec(&mse)
        .iter()
        .map(|m| 10.0 * (4.0 / *m as f64).log10())
        .collect())
}

/// SSIM (Wang et al. 2004) on the [0, 1] scale: 11×11 Gaussian window σ = 1.5, K1 = 0.01,
/// K2 = 0.03, valid filtering, per channel, averaged over channels and positions.
pub fn ssim(a: &Tensor<4>, b: &Tensor<4>) -> Result<Vec<f64>, MetricError> {
    check_same(a, b)?;
    let [n, c, h, w] = a.dims();
    if h < 11 || w < 11 {
        return Err(MetricError::TooSmall {
            metric: "SSIM",
            min: 11,
            h,
            w,
        });
    }
    let device = a.device();
    let g: Vec<f32> = {
        let raw: Vec<f64> = (0..11)
            .map(|i| (-((i as f64 - 5.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
            .collect();
        let s: f64 = raw.iter().sum();
        (0..121)
            .map(|k| (raw[k / 11] * raw[k % 11] / (s * s)) as f32)
            .collect()
    };
    let win = tweedie_core::tensor::from_vec(g, [1, 1, 11, 11], &device).repeat_dim(0, c);
    let filt = |x: Tensor<4>| {
        conv2d(
            x,
            win.clone(),
            None,
            ConvOptions::new([1, 1], [0, 0], [1, 1], c),
        )
    };
    let (x, y) = (
        a.clone().add_scalar(1.0).mul_scalar(0.5),
        b.clone().add_scalar(1.0).mul_scalar(0.5),
    );
    let (mx, my) = (filt(x.clone()), filt(y.clone()));
    // Second moments from per-image, per-channel centred data: (co)variances are shift
    // invariant, and centring avoids f32 cancellation in E[x²] − E[x]².
    let centre = |t: Tensor<4>| t.clone() - t.mean_dim(3).mean_dim(2);
    let (xc, yc) = (centre(x), centre(y));
    let (mxc, myc) = (filt(xc.clone()), filt(yc.clone()));
    let sxx = filt(xc.clone() * xc.clone()) - mxc.clone() * mxc.clone();
    let syy = filt(yc.clone() * yc.clone()) - myc.clone() * myc.clone();
    let sxy = filt(xc * yc) - mxc * myc;
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let num = (mx.clone() * my.clone()).mul_scalar(2.0).add_scalar(c1)
        * sxy.mul_scalar(2.0).add_scalar(c2);
    let den = (mx.clone() * mx + my.clone() * my).add_scalar(c1) * (sxx + syy).add_scalar(c2);
    let map = (num / den).reshape([n as i32, -1]).mean_dim(1);
    Ok(tweedie_core::tensor::to_vec(&map)
        .iter()
        .map(|v| *v as f64)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use tweedie_core::NoiseSource;

    #[test]
    fn psnr_matches_hand_computation() {
        let d = Device::flex();
        let a = Tensor::<4>::zeros([2, 3, 4, 4], &d);
        let b = a.clone().add_scalar(0.2); // 0.1 on the [0,1] scale → MSE 0.01 → 20 dB
        let p = psnr(&a, &b).unwrap();
        assert!(
            (p[0] - 20.0).abs() < 1e-4 && (p[1] - 20.0).abs() < 1e-4,
            "{p:?}"
        );
        assert!(psnr(&a, &a).unwrap()[0].is_infinite());
        assert!(
            psnr(&a, &Tensor::zeros([2, 3, 4, 5], &d))
                .unwrap_err()
                .to_string()
                .contains("differ")
        );
    }

    #[test]
    fn ssim_is_one_for_identical_and_drops_with_noise() {
        let d = Device::flex();
        let mut n = NoiseSource::new(1);
        let a = n
            .normal([1, 3, 32, 32], &d)
            .mul_scalar(0.3)
            .clamp(-1.0, 1.0);
        assert!((ssim(&a, &a).unwrap()[0] - 1.0).abs() < 1e-5);
        let noisy = a.clone() + n.normal([1, 3, 32, 32], &d).mul_scalar(0.2);
        let more = a.clone() + n.normal([1, 3, 32, 32], &d).mul_scalar(0.6);
        let (s1, s2) = (ssim(&a, &noisy).unwrap()[0], ssim(&a, &more).unwrap()[0]);
        assert!(s1 < 1.0 && s2 < s1, "{s1} {s2}");
        assert!(
            ssim(
                &Tensor::zeros([1, 3, 8, 8], &d),
                &Tensor::zeros([1, 3, 8, 8], &d)
            )
            .is_err()
        );
    }

    #[test]
    fn ssim_of_constant_shift_matches_closed_form() {
        // Constant images u and v: SSIM = (2uv + C1)/(u² + v² + C1) (variances zero).
        let d = Device::flex();
        let a = Tensor::<4>::zeros([1, 3, 16, 16], &d).add_scalar(2.0 * 0.4 - 1.0);
        let b = Tensor::<4>::zeros([1, 3, 16, 16], &d).add_scalar(2.0 * 0.6 - 1.0);
        let c1 = 1e-4;
        let want = (2.0 * 0.4 * 0.6 + c1) / (0.16 + 0.36 + c1);
        let got = ssim(&a, &b).unwrap()[0];
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
}
