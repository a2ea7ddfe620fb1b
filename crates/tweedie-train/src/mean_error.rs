//! Extra weight on the lowest-frequency mode of the ε error.

use burn::tensor::Tensor;
use tweedie_core::Schedule;
use tweedie_io::Image;

/// Variance across images of the per-image, per-channel mean of `[−1, 1]` images, averaged
/// over channels: v = mean_c Var_i(m_{ic}) (n − 1 normalisation; 0 for fewer than 2 images).
pub fn mean_colour_variance(images: &[Image]) -> f64 {
    let n = images.len();
    if n < 2 {
        return 0.0;
    }
    let means: Vec<[f64; 3]> = images
        .iter()
        .map(|im| {
            let plane = im.data.len() / 3;
            let mut m = [0.0; 3];
            for (c, mc) in m.iter_mut().enumerate() {
                *mc = im.data[c * plane..(c + 1) * plane]
                    .iter()
                    .map(|v| *v as f64)
                    .sum::<f64>()
                    / plane as f64;
            }
            m
        })
        .collect();
    (0..3)
        .map(|c| {
            let mu = means.iter().map(|m| m[c]).sum::<f64>() / n as f64;
            means.iter().map(|m| (m[c] - mu).powi(2)).sum::<f64>() / (n - 1) as f64
        })
        .sum::<f64>()
        / 3.0
}

/// The share of ε's per-image mean that x_t can determine, for a Gaussian model of the image
/// mean: with P pixels and image-mean variance v, x_t's mean is √ᾱ m + √(1−ᾱ) ε̄ with
/// Var ε̄ = 1/P, and Var(ε̄ | x_t's mean) / Var ε̄ = ᾱvP / (ᾱvP + 1 − ᾱ). This returns the rest,
/// s_t = (1 − ᾱ_t) / (ᾱ_t vP + 1 − ᾱ_t): ≈ 0 at low t, where ε's mean is noise no network can
/// predict (weighting it would only add gradient noise), → 1 at high t, where it is
/// predictable and a mean error is what over-spreads x̂₀'s colours.
pub fn mean_error_weight(schedule: &Schedule, t: usize, mean_variance: f64, pixels: usize) -> f64 {
    let ab = schedule.alpha_bar[t];
    (1.0 - ab) / (ab * mean_variance * pixels as f64 + 1.0 - ab)
}

/// Squared error of ε̂'s per-image, per-channel mean, one value per image:
/// P_b = mean_c (mean_{hw}(ε̂_{bc} − ε_{bc}))².
///
/// In the orthonormal basis of the image, the mean of channel c is the coefficient of the
/// constant mode divided by √(HW), so L_simple already holds mean_c (·)² once; adding w·P
/// weights those three modes (1 + w) times. A weighted MSE over modes has the same minimiser
/// E[ε | x_t], so the target is unchanged — only the emphasis. Why it matters: at high t,
/// x̂₀ = (x_t − √(1−ᾱ) ε̂)/√ᾱ multiplies a mean error of ε̂ by √(1−ᾱ)/√ᾱ (≈ 59 at t = 900), and
/// a small network that under-fits this mode gives x̂₀ mean colours far more spread than the
/// data (see `tweedie evaluate`'s colour calibration), which sampling turns into casts.
///
/// The trainer weights it per image by [`mean_error_weight`].
pub fn mean_error_penalty(pred: Tensor<4>, eps: Tensor<4>) -> Tensor<1> {
    let [b, c, ..] = pred.dims();
    let err = (pred - eps).reshape([b as i32, c as i32, -1]).mean_dim(2); // [B, C, 1]
    err.powf_scalar(2.0).mean_dim(1).reshape([b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use tweedie_core::NoiseSource;

    #[test]
    fn weight_is_the_predictable_share_of_the_noise_mean() {
        let s = Schedule::linear_default();
        // vP = 73 (CelebA 32×32: v ≈ 0.072): hand values from ᾱ.
        let w = |t| mean_error_weight(&s, t, 73.0 / 1024.0, 1024);
        for t in [10, 300, 700, 900, 1000] {
            let ab = s.alpha_bar[t];
            let want = (1.0 - ab) / (73.0 * ab + 1.0 - ab);
            assert!((w(t) - want).abs() < 1e-12);
        }
        assert!(w(10) < 0.001 && w(300) < 0.05 && w(700) > 0.5 && w(1000) > 0.99);
        // Constant images carry no mean information: weight 1 everywhere.
        assert_eq!(mean_error_weight(&s, 10, 0.0, 1024), 1.0);
    }

    #[test]
    fn mean_colour_variance_matches_hand_values() {
        // Two 2×1 images: channel means (0, 0.5, −1) and (1, 0.5, 1): variances 0.5, 0, 2.
        let mut a = Image::filled(2, 1, 0.0);
        a.data = vec![-1.0, 1.0, 0.5, 0.5, -1.0, -1.0];
        let mut b = Image::filled(2, 1, 0.0);
        b.data = vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0];
        let v = mean_colour_variance(&[a.clone(), b]);
        assert!((v - 2.5 / 3.0).abs() < 1e-12, "{v}");
        assert_eq!(mean_colour_variance(&[a]), 0.0);
    }

    #[test]
    fn penalty_sees_the_mean_error_and_nothing_else() {
        let d = Device::flex();
        let mut n = NoiseSource::new(3);
        let eps = n.normal([2, 3, 4, 4], &d);
        // A zero-mean pattern (checkerboard) per channel: no penalty, though the MSE is 0.25.
        let checker: Vec<f32> = (0..2 * 3 * 16)
            .map(|i| {
                if (i % 4 + (i / 4) % 4) % 2 == 0 {
                    0.5
                } else {
                    -0.5
                }
            })
            .collect();
        let pattern = tweedie_core::tensor::from_vec(checker, [2, 3, 4, 4], &d);
        let p =
            tweedie_core::tensor::to_vec(&mean_error_penalty(eps.clone() + pattern, eps.clone()));
        assert!(p.iter().all(|v| v.abs() < 1e-10), "{p:?}");
        // Offsets 0.1, 0.2, 0.4 on image 0's channels and 0.3 on image 1's: hand values
        // (0.01 + 0.04 + 0.16)/3 = 0.07 and 0.09.
        let offsets = [0.1f32, 0.2, 0.4, 0.3, 0.3, 0.3];
        let shift: Vec<f32> = offsets.iter().flat_map(|o| [*o; 16]).collect();
        let shift = tweedie_core::tensor::from_vec(shift, [2, 3, 4, 4], &d);
        let p = tweedie_core::tensor::to_vec(&mean_error_penalty(eps.clone() + shift, eps));
        assert!(
            (p[0] - 0.07).abs() < 1e-6 && (p[1] - 0.09).abs() < 1e-6,
            "{p:?}"
        );
    }
}
