//! Super-resolution as the DPS code does it: `util/resizer.py`'s `Resizer` (Assaf Shocher's
//! MATLAB-`imresize`-style resizer), antialiased cubic, for a scale `s = 1/f`.
//!
//! Per axis of length n the resizer is a fixed `m × n` matrix `M` (m = ⌈n·s⌉): output pixel
//! `o = 1..m` sits at input coordinate `c = (o − (m − n·s)/2)/s + ½(1 − 1/s)`, sees the
//! `⌈4/s⌉ + 2` pixels from `⌊c − 2/s⌋ − 1` on, weighted by `s·cubic(s·(c − j − 1))` (Keys,
//! a = −½, stretched by 1/s for antialiasing), normalised to sum 1, pixels beyond the border
//! mirrored (`…, 1, 0 | 0, 1, …, n−1 | n−1, n−2, …`). The image map is separable:
//! `A(X) = M_h X M_wᵀ` per channel, so
//! - the adjoint is `Aᵀ(Y) = M_hᵀ Y M_w`, and
//! - the pseudo-inverse is `A⁺(Y) = M_h⁺ Y M_w⁺ᵀ` with `M⁺ = Mᵀ(M Mᵀ)⁻¹` (each `M` has full
//!   row rank), so `A A⁺ = I`.
//!
//! Everything is applied with matrix products on the device (differentiable under autodiff).

use crate::kron::separable;
use crate::{Operator, OperatorError};
use burn::tensor::Tensor;

/// The Keys cubic of `resizer.py` (a = −½): `1.5|x|³ − 2.5|x|² + 1` on |x| ≤ 1,
/// `−0.5|x|³ + 2.5|x|² − 4|x| + 2` on 1 < |x| ≤ 2, else 0.
pub fn resizer_cubic(x: f64) -> f64 {
    let a = x.abs();
    let (a2, a3) = (a * a, a * a * a);
    let inner = if a <= 1.0 { 1.0 } else { 0.0 };
    let outer = if 1.0 < a && a <= 2.0 { 1.0 } else { 0.0 };
    (1.5 * a3 - 2.5 * a2 + 1.0) * inner + (-0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0) * outer
}

/// The `out_len × in_len` row-major matrix `M` of `Resizer.contributions(in_len, out_len,
/// scale, cubic, 4.0, antialiasing)` (see the module docs), in `f64`: `y[o] = Σ_j M[o, j]·x[j]`.
/// `in_len` must be ≥ 1.
pub fn resizer_matrix(in_len: usize, out_len: usize, scale: f64, antialiasing: bool) -> Vec<f64> {
    let kernel = |x: f64| {
        if antialiasing {
            scale * resizer_cubic(scale * x)
        } else {
            resizer_cubic(x)
        }
    };
    let kernel_width = 4.0 * if antialiasing { 1.0 / scale } else { 1.0 };
    let expanded = kernel_width.ceil() as i64 + 2;
    let n = in_len as i64;
    let mut m = vec![0f64; out_len * in_len];
    for o in 0..out_len {
        let out_coord = (o + 1) as f64;
        let shifted = out_coord - (out_len as f64 - in_len as f64 * scale) / 2.0;
        let matched = shifted / scale + 0.5 * (1.0 - 1.0 / scale);
        let left = (matched - kernel_width / 2.0).floor() as i64;
        let fov: Vec<i64> = (0..expanded).map(|j| left + j - 1).collect();
        let w: Vec<f64> = fov
            .iter()
            .map(|&f| kernel(matched - f as f64 - 1.0))
            .collect();
        let mut sum: f64 = w.iter().sum();
        if sum == 0.0 {
            sum = 1.0;
        }
        for (&f, wv) in fov.iter().zip(&w) {
            // The mirror trick: index f mod 2n into (0, 1, …, n−1, n−1, …, 0).
            let r = f.rem_euclid(2 * n);
            let idx = if r < n { r } else { 2 * n - 1 - r };
            m[o * in_len + idx as usize] += wv / sum;
        }
    }
    m
}

/// `Mᵀ(M Mᵀ)⁻¹` of an `r × c` row-major matrix of full row rank (`c × r` row-major result),
/// by Gauss–Jordan elimination with partial pivoting in `f64`.
fn right_pseudo_inverse(m: &[f64], r: usize, c: usize) -> Result<Vec<f64>, OperatorError> {
    // G = M Mᵀ (r × r), solve G Z = M for Z (r × c), then M⁺ = Zᵀ.
    let mut g = vec![0f64; r * r];
    for i in 0..r {
        for j in 0..r {
            g[i * r + j] = (0..c).map(|k| m[i * c + k] * m[j * c + k]).sum();
        }
    }
    let mut z = m.to_vec();
    for col in 0..r {
        let piv = (col..r)
            .max_by(|&a, &b| g[a * r + col].abs().total_cmp(&g[b * r + col].abs()))
            .unwrap();
        if g[piv * r + col].abs() < 1e-12 {
            return Err(OperatorError::invalid(
                "resizer",
                format!("{r}×{c}"),
                "the resize matrix is rank deficient",
            ));
        }
        if piv != col {
            for k in 0..r {
                g.swap(piv * r + k, col * r + k);
            }
            for k in 0..c {
                z.swap(piv * c + k, col * c + k);
            }
        }
        let d = g[col * r + col];
        for k in 0..r {
            g[col * r + k] /= d;
        }
        for k in 0..c {
            z[col * c + k] /= d;
        }
        for row in 0..r {
            if row != col {
                let f = g[row * r + col];
                if f != 0.0 {
                    for k in 0..r {
                        g[row * r + k] -= f * g[col * r + k];
                    }
                    for k in 0..c {
                        z[row * c + k] -= f * z[col * c + k];
                    }
                }
            }
        }
    }
    let mut pinv = vec![0f64; c * r];
    for i in 0..r {
        for k in 0..c {
            pinv[k * r + i] = z[i * c + k];
        }
    }
    Ok(pinv)
}

fn transpose(m: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = m[i * c + j];
        }
    }
    t
}

/// DPS's super-resolution operator: `Resizer(in_shape, 1/f)` (antialiased cubic) for
/// `height × width` images, giving `⌈height/f⌉ × ⌈width/f⌉` measurements.
#[derive(Debug, Clone)]
pub struct Resizer {
    in_hw: (usize, usize),
    out_hw: (usize, usize),
    scale: f64,
    /// `M_hᵀ` `[H, h]`, `M_wᵀ` `[W, w]`, `M_h` `[h, H]`, `M_w` `[w, W]`.
    mh_t: Vec<f32>,
    mw_t: Vec<f32>,
    mh: Vec<f32>,
    mw: Vec<f32>,
    /// `M_h⁺ᵀ` `[h, H]` and `M_w⁺ᵀ` `[w, W]`.
    ph_t: Vec<f32>,
    pw_t: Vec<f32>,
    /// `M_h ⊗ M_w` with the eigen-decompositions for the exact prox, built on first use.
    kron: std::sync::Arc<std::sync::OnceLock<crate::kron::Kronecker>>,
}

impl Resizer {
    /// Downscaling `height × width` images by the integer `factor` ≥ 1 (DPS: 4), i.e.
    /// `Resizer(in_shape, 1/factor)`.
    pub fn new(height: usize, width: usize, factor: usize) -> Result<Self, OperatorError> {
        if factor == 0 {
            return Err(OperatorError::invalid("factor", factor, "must be ≥ 1"));
        }
        Self::with_scale(height, width, 1.0 / factor as f64)
    }

    /// A resizer by any `scale` in (0, 1] (output `⌈n·scale⌉` per axis, as `resizer.py`).
    pub fn with_scale(height: usize, width: usize, scale: f64) -> Result<Self, OperatorError> {
        if !(scale > 0.0 && scale <= 1.0) {
            return Err(OperatorError::invalid(
                "scale",
                scale,
                "must lie in (0, 1] (downscaling)",
            ));
        }
        if height == 0 || width == 0 {
            return Err(OperatorError::invalid(
                "image",
                format!("{width}×{height} (W×H)"),
                "must be non-empty",
            ));
        }
        let out = |n: usize| (n as f64 * scale).ceil() as usize;
        let (oh, ow) = (out(height), out(width));
        // Like resizer.py, a scale of 1 leaves the axis alone (identity matrix).
        let mat = |n: usize, m: usize| -> Vec<f64> {
            if scale == 1.0 {
                (0..m * n)
                    .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
                    .collect()
            } else {
                resizer_matrix(n, m, scale, true)
            }
        };
        let (mh64, mw64) = (mat(height, oh), mat(width, ow));
        let ph = right_pseudo_inverse(&mh64, oh, height)?; // [H, oh]
        let pw = right_pseudo_inverse(&mw64, ow, width)?; // [W, ow]
        let f = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        let (mh, mw) = (f(&mh64), f(&mw64));
        Ok(Self {
            in_hw: (height, width),
            out_hw: (oh, ow),
            scale,
            mh_t: transpose(&mh, oh, height),
            mw_t: transpose(&mw, ow, width),
            mh,
            mw,
            ph_t: transpose(&f(&ph), height, oh),
            pw_t: transpose(&f(&pw), width, ow),
            kron: Default::default(),
        })
    }

    /// The input size `(H, W)`.
    pub fn input_size(&self) -> (usize, usize) {
        self.in_hw
    }

    /// The measurement size `(⌈H·s⌉, ⌈W·s⌉)`.
    pub fn output_size(&self) -> (usize, usize) {
        self.out_hw
    }

    /// The scale s (1/factor).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The row matrix `M_h` (`h × H`, row-major).
    pub fn row_matrix(&self) -> &[f32] {
        &self.mh
    }

    /// The column matrix `M_w` (`w × W`, row-major).
    pub fn col_matrix(&self) -> &[f32] {
        &self.mw
    }

    fn check(&self, dims: [usize; 4], input: bool) {
        let (h, w) = if input { self.in_hw } else { self.out_hw };
        assert!(
            dims[2] == h && dims[3] == w,
            "the resizer was built for {}×{} → {}×{}, got a {}×{} {}",
            self.in_hw.0,
            self.in_hw.1,
            self.out_hw.0,
            self.out_hw.1,
            dims[2],
            dims[3],
            if input { "image" } else { "measurement" }
        );
    }
}

impl Operator for Resizer {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.check(x.dims(), true);
        separable(x, &self.mh_t, self.out_hw.0, &self.mw_t, self.out_hw.1)
    }

    fn adjoint(&self, y: Tensor<4>) -> Tensor<4> {
        self.check(y.dims(), false);
        separable(y, &self.mh, self.in_hw.0, &self.mw, self.in_hw.1)
    }

    /// `A⁺(Y) = M_h⁺ Y M_w⁺ᵀ` with `M⁺ = Mᵀ(MMᵀ)⁻¹`: the Moore–Penrose inverse of the
    /// Kronecker product, `(M_h ⊗ M_w)⁺ = M_h⁺ ⊗ M_w⁺` (both factors have full row rank, so
    /// `A A⁺ = I`).
    fn pseudo_inverse(&self, y: Tensor<4>) -> Tensor<4> {
        self.check(y.dims(), false);
        separable(y, &self.ph_t, self.in_hw.0, &self.pw_t, self.in_hw.1)
    }

    /// Exact: `z + (I + γAᵀA)⁻¹γAᵀ(y − Az)` through `A = M_h ⊗ M_w` and the eigen-decompositions
    /// of `M_hᵀM_h`, `M_wᵀM_w` ([`crate::kron`]), in place of conjugate gradients.
    fn prox_l2(&self, z: Tensor<4>, y: Tensor<4>, gamma: f64) -> Tensor<4> {
        crate::cg::check_gamma(gamma);
        self.check(y.dims(), false);
        let k = self.kron.get_or_init(|| {
            let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
            let ((oh, ow), (h, w)) = (self.out_hw, self.in_hw);
            crate::kron::Kronecker::new(&f64s(&self.mh), oh, h, &f64s(&self.mw), ow, w)
        });
        k.prox(z.clone(), self.adjoint(y - self.forward(z)), gamma)
    }

    fn describe(&self) -> String {
        let factor = 1.0 / self.scale;
        if (factor - factor.round()).abs() < 1e-9 {
            format!(
                "{}× super-resolution (antialiased bicubic, DPS Resizer)",
                factor.round()
            )
        } else {
            let [(h, w), (oh, ow)] = [self.input_size(), self.output_size()];
            format!(
                "×{factor:.2} super-resolution {w}×{h} → {ow}×{oh} (antialiased bicubic, DPS Resizer)"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::adjoint_error;
    use burn::tensor::Device;
    use tweedie_core::NoiseSource;

    #[test]
    fn rows_sum_to_one_and_constants_are_kept() {
        for (n, f) in [(32, 4), (30, 4), (17, 3), (256, 4)] {
            let s = 1.0 / f as f64;
            let m = (n as f64 * s).ceil() as usize;
            let mat = resizer_matrix(n, m, s, true);
            for o in 0..m {
                let row: f64 = mat[o * n..(o + 1) * n].iter().sum();
                assert!((row - 1.0).abs() < 1e-12, "{n}/{f} row {o}: {row}");
            }
        }
        let d = Device::flex();
        let y = Resizer::new(8, 8, 2)
            .unwrap()
            .forward(Tensor::<4>::ones([1, 1, 8, 8], &d));
        for v in tweedie_core::tensor::to_vec(&y) {
            assert!((v - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn resizer_adjoint_and_pseudo_inverse() {
        for (h, w, f) in [(32, 32, 4), (16, 24, 2), (30, 17, 3)] {
            let op = Resizer::new(h, w, f).unwrap();
            let err = adjoint_error(&op, [2, 3, h, w], 4);
            assert!(err < 1e-5, "{h}×{w}/{f}: adjoint error {err}");
            let (oh, ow) = op.output_size();
            let y = NoiseSource::new(5).normal([1, 3, oh, ow], &Device::flex());
            let back = op.forward(op.pseudo_inverse(y.clone()));
            let e = tweedie_core::tensor::to_vec(&(back - y).abs().max())[0];
            assert!(e < 1e-4, "{h}×{w}/{f}: A A⁺ y − y = {e}");
        }
        assert!(Resizer::new(8, 8, 0).is_err());
        assert!(Resizer::with_scale(8, 8, 2.0).is_err());
    }
}
