//! Operators that are a Kronecker product of two 1-D maps, `A(X) = L X Rᵀ` per channel
//! (`L`: rows, `R`: columns): separable blurs under any padding and the bicubic `Resizer`.
//!
//! The eigen-decompositions `LᵀL = Q_L diag(λ) Q_Lᵀ`, `RᵀR = Q_R diag(μ) Q_Rᵀ` give
//! `AᵀA = (Q_L ⊗ Q_R) diag(λ_i μ_j) (Q_L ⊗ Q_R)ᵀ`, so the proximal step
//!
//! `prox_l2(z, y, γ) = argmin ½‖Ax − y‖² + ‖x − z‖²/(2γ) = (I + γAᵀA)⁻¹(z + γAᵀy)`
//!
//! is exact, with four `n × n` matrix products per channel in place of conjugate-gradient
//! iterations of the whole operator: `x = Q_L [(Q_Lᵀ R Q_R) ./ (1 + γ λ_i μ_j)] Q_Rᵀ`,
//! `R = z + γAᵀy`.

use burn::tensor::Tensor;
use nalgebra::DMatrix;

/// One 1-D factor `M` (`out × inp`, row-major) with the eigen-decomposition of `MᵀM`.
#[derive(Debug, Clone)]
struct Factor {
    inp: usize,
    /// `Q` (`inp × inp`, row-major): the orthonormal eigenvectors of `MᵀM`, by column.
    q: Vec<f32>,
    /// `Qᵀ`, row-major.
    q_t: Vec<f32>,
    /// The eigenvalues of `MᵀM` (≥ 0), in the order of `q`'s columns.
    lambda: Vec<f64>,
}

impl Factor {
    fn new(matrix: &[f64], out: usize, inp: usize) -> Self {
        assert_eq!(matrix.len(), out * inp, "a {out}×{inp} factor");
        let m = DMatrix::from_row_slice(out, inp, matrix);
        let gram = m.transpose() * &m;
        let eig = nalgebra::SymmetricEigen::new(gram);
        let q = &eig.eigenvectors;
        let row_major = |t: &DMatrix<f64>| -> Vec<f32> {
            (0..t.nrows())
                .flat_map(|r| (0..t.ncols()).map(move |c| t[(r, c)] as f32))
                .collect()
        };
        Self {
            inp,
            q: row_major(q),
            q_t: row_major(&q.transpose()),
            lambda: eig.eigenvalues.iter().map(|l| l.max(0.0)).collect(),
        }
    }
}

/// `A(X) = L X Rᵀ` (per batch item and channel), with its exact proximal step.
#[derive(Debug, Clone)]
pub struct Kronecker {
    rows: Factor,
    cols: Factor,
}

impl Kronecker {
    /// The operator of `rows` (`L`, `out_h × in_h`, row-major) and `cols` (`R`,
    /// `out_w × in_w`, row-major).
    pub fn new(
        rows: &[f64],
        out_h: usize,
        in_h: usize,
        cols: &[f64],
        out_w: usize,
        in_w: usize,
    ) -> Self {
        Self {
            rows: Factor::new(rows, out_h, in_h),
            cols: Factor::new(cols, out_w, in_w),
        }
    }

    /// The image size `(in_h, in_w)` it acts on.
    pub fn input_size(&self) -> (usize, usize) {
        (self.rows.inp, self.cols.inp)
    }

    /// `prox_l2(z, y, γ) = z + (I + γAᵀA)⁻¹ γAᵀ(y − Az)` from `z` and `r = Aᵀ(y − Az)`
    /// `[B, C, in_h, in_w]` (the caller forms `r` with its own `A` and `Aᵀ`): in the
    /// eigenbasis, `x = z + Q_L [g ⊙ (Q_Lᵀ r Q_R)] Q_Rᵀ` with `g_ij = γ/(1 + γ λ_i μ_j)`.
    /// The residual form keeps f32 rounding from growing with γ; `g` is 0 on `A`'s null space
    /// (`λ_i μ_j ≤ 1e-12 · max`), where `r` has no component but its rounding.
    pub fn prox(&self, z: Tensor<4>, r: Tensor<4>, gamma: f64) -> Tensor<4> {
        if gamma == 0.0 {
            return z;
        }
        let (h, w) = self.input_size();
        let dims = r.dims();
        assert!(
            dims[2] == h && dims[3] == w,
            "the Kronecker solve was built for {h}×{w} images, got {}×{}",
            dims[2],
            dims[3]
        );
        let device = r.device();
        let top = self.rows.lambda.iter().fold(0.0f64, |a, &b| a.max(b))
            * self.cols.lambda.iter().fold(0.0f64, |a, &b| a.max(b));
        // T = Q_Lᵀ r Q_R: `separable` computes rtᵀ X ct, so rt = Q_L and ct = Q_R.
        let t = separable(r, &self.rows.q, h, &self.cols.q, w);
        let gain: Vec<f32> = self
            .rows
            .lambda
            .iter()
            .flat_map(|&l| {
                self.cols.lambda.iter().map(move |&m| {
                    let e = l * m;
                    if e <= 1e-12 * top {
                        0.0
                    } else {
                        (gamma / (1.0 + gamma * e)) as f32
                    }
                })
            })
            .collect();
        let gain = tweedie_core::tensor::from_vec(gain, [1, 1, h, w], &device);
        // Q_L T Q_Rᵀ: rt = Q_Lᵀ, ct = Q_Rᵀ.
        z + separable(t * gain, &self.rows.q_t, h, &self.cols.q_t, w)
    }
}

/// `Y = rtᵀ X ct` per batch item and channel, for `rt` `[h, p]` and `ct` `[w, q]` row-major.
pub(crate) fn separable(x: Tensor<4>, rt: &[f32], p: usize, ct: &[f32], q: usize) -> Tensor<4> {
    let [b, k, h, w] = x.dims();
    let device = x.device();
    let rt = tweedie_core::tensor::from_vec(rt.to_vec(), [h, p], &device);
    let ct = tweedie_core::tensor::from_vec(ct.to_vec(), [w, q], &device);
    let t = x.reshape([b * k * h, w]).matmul(ct); // [bkh, q]
    let t = t
        .reshape([b * k, h, q])
        .swap_dims(1, 2)
        .reshape([b * k * q, h]);
    let t = t.matmul(rt); // [bkq, p]
    t.reshape([b * k, q, p])
        .swap_dims(1, 2)
        .reshape([b, k, p, q])
}

/// The `n × n` matrix (row-major) of a 1-D correlation with `taps` (odd length `2p + 1`)
/// after reflect padding by `p` (PyTorch's `ReflectionPad`: index −i ↦ i, n − 1 + i ↦
/// n − 1 − i): `y[o] = Σ_j taps[j] · x[reflect(o + j − p)]`. Needs `n > p`.
pub fn reflect_correlation_matrix(taps: &[f64], n: usize) -> Vec<f64> {
    let p = taps.len() / 2;
    assert!(
        n > p,
        "reflect padding by {p} needs more than {p} samples, got {n}"
    );
    let reflect = |i: isize| -> usize {
        let last = n as isize - 1;
        let r = if i < 0 {
            -i
        } else if i > last {
            2 * last - i
        } else {
            i
        };
        r as usize
    };
    let mut m = vec![0.0; n * n];
    for o in 0..n {
        for (j, &t) in taps.iter().enumerate() {
            let src = reflect(o as isize + j as isize - p as isize);
            m[o * n + src] += t;
        }
    }
    m
}

/// A 2-D kernel (`size × size`, row-major) as `u vᵀ` when it is rank one to within
/// `rel_tol` (second singular value ≤ `rel_tol` × the first), e.g. every Gaussian kernel.
pub fn rank_one_factors(kernel: &[f32], size: usize, rel_tol: f64) -> Option<(Vec<f64>, Vec<f64>)> {
    let k = DMatrix::from_row_slice(
        size,
        size,
        &kernel.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    );
    let svd = nalgebra::SVD::new(k, true, true);
    let (u, v_t) = (svd.u?, svd.v_t?);
    let s = &svd.singular_values;
    let (first, i) = s
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, i))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    let second = s
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, &v)| v)
        .fold(0.0, f64::max);
    if first <= 0.0 || second > rel_tol * first {
        return None;
    }
    let root = first.sqrt();
    let uu = (0..size).map(|r| u[(r, i)] * root).collect();
    let vv = (0..size).map(|c| v_t[(i, c)] * root).collect();
    Some((uu, vv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use tweedie_core::NoiseSource;

    #[test]
    fn reflect_matrix_mirrors_without_repeating_the_edge() {
        // n = 4, taps [a, b, c] at p = 1: row 0 reads x[1], x[0], x[1].
        let m = reflect_correlation_matrix(&[1.0, 10.0, 100.0], 4);
        assert_eq!(&m[0..4], &[10.0, 101.0, 0.0, 0.0]);
        assert_eq!(&m[12..16], &[0.0, 0.0, 101.0, 10.0]);
    }

    #[test]
    fn rank_one_kernels_factor_and_others_do_not() {
        let u = [1.0f32, 2.0, 1.0];
        let v = [0.5f32, 1.0, 3.0];
        let k: Vec<f32> = u
            .iter()
            .flat_map(|a| v.iter().map(move |b| a * b))
            .collect();
        let (fu, fv) = rank_one_factors(&k, 3, 1e-6).unwrap();
        for r in 0..3 {
            for c in 0..3 {
                assert!((fu[r] * fv[c] - k[r * 3 + c] as f64).abs() < 1e-5);
            }
        }
        let eye = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert!(rank_one_factors(&eye, 3, 1e-6).is_none());
    }

    /// The solve satisfies (I + γAᵀA)x = γr for A = L ⊗ R applied directly.
    #[test]
    fn regularised_solve_inverts_i_plus_gamma_ata() {
        let (h, w) = (6, 5);
        let mut noise = NoiseSource::new(3);
        let d = Device::flex();
        let l: Vec<f64> = (0..4 * h)
            .map(|i| ((i * 7 % 11) as f64 - 5.0) / 7.0)
            .collect();
        let rm: Vec<f64> = (0..3 * w)
            .map(|i| ((i * 5 % 13) as f64 - 6.0) / 9.0)
            .collect();
        let op = Kronecker::new(&l, 4, h, &rm, 3, w);
        let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
        // r = Aᵀv lies in A's row space, as Aᵀ(y − Az) does.
        let r = separable(noise.normal([2, 3, 4, 3], &d), &f32s(&l), h, &f32s(&rm), w);
        let gamma = 0.7;
        // With z = 0 the prox is (I + γAᵀA)⁻¹ γ r.
        let x = op.prox(r.zeros_like(), r.clone(), gamma);
        let lt: Vec<f64> = (0..h)
            .flat_map(|c| (0..4).map(move |o| (c, o)))
            .map(|(c, o)| l[o * h + c])
            .collect();
        let rt: Vec<f64> = (0..w)
            .flat_map(|c| (0..3).map(move |o| (c, o)))
            .map(|(c, o)| rm[o * w + c])
            .collect();
        // A x = L X Rᵀ: rt = Lᵀ [h, 4], ct = Rᵀ [w, 3]; Aᵀ y = Lᵀ Y R: rt = L [4, h], ct = R [3, w].
        let ax = separable(x.clone(), &f32s(&lt), 4, &f32s(&rt), 3);
        let atax = separable(ax, &f32s(&l), h, &f32s(&rm), w);
        let back = x + atax.mul_scalar(gamma);
        let err = tweedie_core::tensor::to_vec(&(back - r.mul_scalar(gamma)).abs().max())[0];
        assert!(err < 1e-4, "{err}");
    }
}
