//! Host-side 2-D DFTs (`rustfft`, `f64`) for operators diagonalised by the Fourier basis:
//! a circular blur `A = F⁻¹ diag(K̂) F`.

use burn::tensor::Tensor;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex64;

/// A 2-D DFT of `h × w` planes (rows, then columns), unnormalised both ways
/// (`F⁻¹ = conj(F)/(h·w)`: [`Fft2::inverse`] divides).
pub(crate) struct Fft2 {
    h: usize,
    w: usize,
    planner: FftPlanner<f64>,
}

impl Fft2 {
    pub(crate) fn new(h: usize, w: usize) -> Self {
        Self {
            h,
            w,
            planner: FftPlanner::new(),
        }
    }

    fn run(&mut self, data: &mut [Complex64], inverse: bool) {
        let (h, w) = (self.h, self.w);
        assert_eq!(data.len(), h * w);
        let (row, col) = if inverse {
            (
                self.planner.plan_fft_inverse(w),
                self.planner.plan_fft_inverse(h),
            )
        } else {
            (
                self.planner.plan_fft_forward(w),
                self.planner.plan_fft_forward(h),
            )
        };
        row.process(data);
        let mut t = vec![Complex64::default(); h * w];
        for i in 0..h {
            for j in 0..w {
                t[j * h + i] = data[i * w + j];
            }
        }
        col.process(&mut t);
        for i in 0..h {
            for j in 0..w {
                data[i * w + j] = t[j * h + i];
            }
        }
    }

    /// `X̂ = F x`.
    pub(crate) fn forward(&mut self, data: &mut [Complex64]) {
        self.run(data, false);
    }

    /// `x = F⁻¹ X̂` (normalised by `1/(h·w)`).
    pub(crate) fn inverse(&mut self, data: &mut [Complex64]) {
        self.run(data, true);
        let n = (self.h * self.w) as f64;
        for v in data {
            *v /= n;
        }
    }
}

/// The transfer function `K̂ = F h` of the circular correlation
/// `A(x)[i, j] = Σ_{u,v} K[u, v] · x[(i + u − r) mod H, (j + v − r) mod W]` (`r = k/2`), so that
/// `F(A x) = K̂ ⊙ F x`: `h[(r − u) mod H, (r − v) mod W] += K[u, v]`, the flipped kernel centred
/// on the origin.
pub(crate) fn transfer_function(kernel: &[f32], k: usize, h: usize, w: usize) -> Vec<Complex64> {
    let r = (k / 2) as i64;
    let mut psf = vec![Complex64::default(); h * w];
    for u in 0..k {
        for v in 0..k {
            let i = (r - u as i64).rem_euclid(h as i64) as usize;
            let j = (r - v as i64).rem_euclid(w as i64) as usize;
            psf[i * w + j].re += kernel[u * k + v] as f64;
        }
    }
    Fft2::new(h, w).forward(&mut psf);
    psf
}

/// Applies, plane by plane (`[B, C, H, W]`), `x̂ = f(k̂, planes' DFTs)` for a per-frequency map
/// `f(K̂[ω], inputs[ω]) -> x̂[ω]`, then the inverse DFT; inputs all share `[B, C, H, W]`.
pub(crate) fn per_frequency(
    k_hat: &[Complex64],
    inputs: &[Tensor<4>],
    f: impl Fn(Complex64, &[Complex64]) -> Complex64,
) -> Tensor<4> {
    let dims = inputs[0].dims();
    let [b, c, h, w] = dims;
    let device = inputs[0].device();
    let host: Vec<Vec<f32>> = inputs
        .iter()
        .map(|t| {
            assert_eq!(t.dims(), dims, "per_frequency: inputs differ in shape");
            tweedie_core::tensor::to_vec(t)
        })
        .collect();
    let mut fft = Fft2::new(h, w);
    let n = h * w;
    let mut out = vec![0f32; b * c * n];
    let mut planes: Vec<Vec<Complex64>> = vec![vec![Complex64::default(); n]; inputs.len()];
    let mut vals = vec![Complex64::default(); inputs.len()];
    for p in 0..b * c {
        for (plane, src) in planes.iter_mut().zip(&host) {
            for (d, s) in plane.iter_mut().zip(&src[p * n..(p + 1) * n]) {
                *d = Complex64::new(*s as f64, 0.0);
            }
            fft.forward(plane);
        }
        let mut res: Vec<Complex64> = (0..n)
            .map(|o| {
                for (v, plane) in vals.iter_mut().zip(&planes) {
                    *v = plane[o];
                }
                f(k_hat[o], &vals)
            })
            .collect();
        fft.inverse(&mut res);
        for (d, s) in out[p * n..(p + 1) * n].iter_mut().zip(&res) {
            *d = s.re as f32;
        }
    }
    tweedie_core::tensor::from_vec(out, dims, &device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft2_round_trips_and_matches_a_direct_dft() {
        let (h, w) = (6, 5);
        let x: Vec<Complex64> = (0..h * w)
            .map(|i| Complex64::new((i as f64 * 0.7).sin(), 0.0))
            .collect();
        let mut y = x.clone();
        let mut f = Fft2::new(h, w);
        f.forward(&mut y);
        // Direct DFT at (2, 3).
        let (k, l) = (2, 3);
        let direct: Complex64 = (0..h * w)
            .map(|i| {
                let (a, b) = ((i / w) as f64, (i % w) as f64);
                let ph = -2.0
                    * std::f64::consts::PI
                    * (k as f64 * a / h as f64 + l as f64 * b / w as f64);
                x[i] * Complex64::from_polar(1.0, ph)
            })
            .sum();
        assert!((y[k * w + l] - direct).norm() < 1e-12);
        f.inverse(&mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).norm() < 1e-12);
        }
    }
}
