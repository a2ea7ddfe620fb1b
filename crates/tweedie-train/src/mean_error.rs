//! Extra weight on the lowest-frequency mode of the ε error.

use burn::tensor::Tensor;

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
