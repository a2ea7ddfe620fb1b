//! Conjugate gradients for the symmetric positive (semi-)definite systems of linear inverse
//! problems, batched: every batch item is its own system (per-item inner products, step sizes
//! and stopping), so items never couple.
//!
//! The [`Operator`] defaults are built on it:
//! - [`least_squares_cg`]: `A⁺y` as the minimum-norm least-squares solution, CG on the normal
//!   equations `AᵀA x = Aᵀy` from `x₀ = 0` (the iterates stay in range(Aᵀ), so the limit is the
//!   Moore–Penrose answer);
//! - [`prox_l2_cg`]: `(I + γAᵀA) x = z + γAᵀy`, warm-started at `z`.
//!
//! Both use [`CG_TOLERANCE`] and [`CG_MAX_ITERATIONS`] through the trait; call them directly for
//! another budget.

use crate::Operator;
use burn::tensor::Tensor;

/// Relative residual `‖b − Mx‖ / ‖b‖` (per batch item) at which the operator defaults stop.
/// The arithmetic is `f32`, whose floor for these systems is about 1e-6.
pub const CG_TOLERANCE: f64 = 1e-5;

/// Iteration cap of the operator defaults (one application of `M` per iteration, i.e. one `A`
/// and one `Aᵀ`). An ill-conditioned `AᵀA` (strong blur) stops here, which regularises like
/// truncated SVD; [`CgResult`] says how far it got.
pub const CG_MAX_ITERATIONS: usize = 200;

/// What [`conjugate_gradient`] found.
#[derive(Clone)]
pub struct CgResult {
    /// The solution estimate, shaped like `b`.
    pub x: Tensor<4>,
    /// CG iterations run (applications of `M`, not counting the final residual check).
    pub iterations: usize,
    /// The largest true relative residual over the batch, `maxᵢ ‖bᵢ − M xᵢ‖ / ‖bᵢ‖`
    /// (absolute where `bᵢ = 0`), recomputed from `x` at the end.
    pub relative_residual: f64,
    /// `relative_residual ≤ tol`.
    pub converged: bool,
}

impl std::fmt::Debug for CgResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgResult")
            .field("x", &self.x.dims())
            .field("iterations", &self.iterations)
            .field("relative_residual", &self.relative_residual)
            .field("converged", &self.converged)
            .finish()
    }
}

/// `⟨aᵢ, bᵢ⟩` for every batch item `i`, in `f64`.
pub(crate) fn dot_per_item(a: &Tensor<4>, b: &Tensor<4>) -> Vec<f64> {
    let [n, ..] = a.dims();
    let s = (a.clone() * b.clone()).reshape([n as i32, -1]).sum_dim(1);
    tweedie_core::tensor::to_vec(&s)
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Scales batch item `i` of `t` by `s[i]`.
fn scale_per_item(t: Tensor<4>, s: &[f64]) -> Tensor<4> {
    let device = t.device();
    let v = s.iter().map(|v| *v as f32).collect();
    t * tweedie_core::tensor::from_vec(v, [s.len(), 1, 1, 1], &device)
}

/// Solves `M x = b` for a symmetric positive semi-definite `M` (given as `apply`) by conjugate
/// gradients from `x0`, independently for each batch item:
///
/// `r₀ = b − M x₀, p₀ = r₀; αₖ = ‖rₖ‖² / ⟨pₖ, M pₖ⟩, xₖ₊₁ = xₖ + αₖ pₖ,
/// rₖ₊₁ = rₖ − αₖ M pₖ, pₖ₊₁ = rₖ₊₁ + (‖rₖ₊₁‖² / ‖rₖ‖²) pₖ`.
///
/// An item stops when its relative residual `‖rᵢ‖ / ‖bᵢ‖` is ≤ `tol` (or on breakdown,
/// `⟨p, Mp⟩ ≤ 0`); the rest go on, up to `max_iter` iterations in all. When every item has
/// stopped, the true residual `b − Mx` is recomputed (the recursive one drifts in `f32`) and CG
/// restarts from it if it is still above `tol`. For a singular `M` and `b ∈ range(M)`, starting
/// from `x0 = 0` gives the minimum-norm solution.
///
/// ```
/// use tweedie_core::{Device, Tensor};
/// use tweedie_operators::conjugate_gradient;
///
/// let d = Device::flex();
/// let b: Tensor<4> = Tensor::ones([2, 1, 2, 2], &d);
/// // M = 4 I: x = b / 4.
/// let r = conjugate_gradient(|v| v.mul_scalar(4.0), b.clone(), b.zeros_like(), 1e-6, 10);
/// assert!(r.converged && r.iterations == 1);
/// assert!((r.x.sum().into_scalar::<f32>() - 2.0).abs() < 1e-6);
/// ```
pub fn conjugate_gradient(
    apply: impl Fn(Tensor<4>) -> Tensor<4>,
    b: Tensor<4>,
    x0: Tensor<4>,
    tol: f64,
    max_iter: usize,
) -> CgResult {
    assert_eq!(b.dims(), x0.dims(), "conjugate_gradient: b and x0 differ");
    let b_norm: Vec<f64> = dot_per_item(&b, &b).into_iter().map(f64::sqrt).collect();
    let relative = |rs: &[f64]| -> Vec<f64> {
        rs.iter()
            .zip(&b_norm)
            .map(|(r, bn)| {
                let r = r.max(0.0).sqrt();
                if *bn > 0.0 { r / bn } else { r }
            })
            .collect()
    };
    let mut x = x0;
    let mut iterations = 0;
    loop {
        // (Re)start from the true residual.
        let mut r = b.clone() - apply(x.clone());
        let mut rs = dot_per_item(&r, &r);
        let rel = relative(&rs);
        let worst = rel.iter().cloned().fold(0.0, f64::max);
        if worst <= tol || iterations >= max_iter || !worst.is_finite() {
            return CgResult {
                x,
                iterations,
                relative_residual: worst,
                converged: worst <= tol,
            };
        }
        let mut active: Vec<bool> = rel.iter().map(|v| *v > tol).collect();
        let mut p = r.clone();
        let mut moved = false;
        while iterations < max_iter && active.iter().any(|a| *a) {
            let mp = apply(p.clone());
            let pmp = dot_per_item(&p, &mp);
            let alpha: Vec<f64> = (0..rs.len())
                .map(|i| {
                    if active[i] && pmp[i] > 0.0 && pmp[i].is_finite() {
                        rs[i] / pmp[i]
                    } else {
                        0.0
                    }
                })
                .collect();
            for (i, a) in alpha.iter().enumerate() {
                if *a == 0.0 {
                    active[i] = false; // converged before, or broke down
                } else {
                    moved = true;
                }
            }
            x = x + scale_per_item(p.clone(), &alpha);
            r = r - scale_per_item(mp, &alpha);
            let rs_new = dot_per_item(&r, &r);
            let beta: Vec<f64> = (0..rs.len())
                .map(|i| if active[i] { rs_new[i] / rs[i] } else { 0.0 })
                .collect();
            p = r.clone() + scale_per_item(p, &beta);
            for (i, v) in relative(&rs_new).into_iter().enumerate() {
                if v <= tol {
                    active[i] = false;
                }
            }
            rs = rs_new;
            iterations += 1;
        }
        if !moved {
            // Breakdown (⟨p, Mp⟩ ≤ 0) on every unconverged item: report where it stands.
            let r = b.clone() - apply(x.clone());
            let worst = relative(&dot_per_item(&r, &r))
                .into_iter()
                .fold(0.0, f64::max);
            return CgResult {
                x,
                iterations,
                relative_residual: worst,
                converged: worst <= tol,
            };
        }
    }
}

/// The minimum-norm least-squares solution `A⁺y = argmin_x ‖x‖ s.t. x minimises ‖Ax − y‖²`,
/// by [`conjugate_gradient`] on the normal equations `AᵀA x = Aᵀy` from `x₀ = 0` (the residual
/// checked is that of the normal equations, relative to `‖Aᵀy‖`).
pub fn least_squares_cg<O: Operator + ?Sized>(
    op: &O,
    y: Tensor<4>,
    tol: f64,
    max_iter: usize,
) -> CgResult {
    let b = op.adjoint(y);
    let x0 = b.zeros_like();
    conjugate_gradient(|v| op.adjoint(op.forward(v)), b, x0, tol, max_iter)
}

/// `prox_l2(z, y, γ) = argmin_x ½‖Ax − y‖² + 1/(2γ)‖x − z‖²`, i.e. the solution of
/// `(I + γAᵀA) x = z + γAᵀy`, by [`conjugate_gradient`] warm-started at `z` (γ ≥ 0 finite;
/// γ = 0 returns `z`).
pub fn prox_l2_cg<O: Operator + ?Sized>(
    op: &O,
    z: Tensor<4>,
    y: Tensor<4>,
    gamma: f64,
    tol: f64,
    max_iter: usize,
) -> CgResult {
    check_gamma(gamma);
    if gamma == 0.0 {
        return CgResult {
            x: z,
            iterations: 0,
            relative_residual: 0.0,
            converged: true,
        };
    }
    let b = z.clone() + op.adjoint(y).mul_scalar(gamma);
    conjugate_gradient(
        |v| v.clone() + op.adjoint(op.forward(v)).mul_scalar(gamma),
        b,
        z,
        tol,
        max_iter,
    )
}

/// Panics unless `gamma` is finite and ≥ 0 (the proximal step size).
pub(crate) fn check_gamma(gamma: f64) {
    assert!(
        gamma >= 0.0 && gamma.is_finite(),
        "prox_l2: γ must be finite and ≥ 0, got {gamma}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use tweedie_core::NoiseSource;
    use tweedie_core::tensor::{from_vec, to_vec};

    /// A per-item SPD operator: item i is scaled by `d ⊙ · + c_i ·`, a diagonal with a spread
    /// of eigenvalues `d` (condition number ≈ 100), coupled across pixels by a symmetric
    /// 1-D smoothing, `M v = D v + ε (S v)` with `S` the symmetric [1, 0, 1] neighbour sum.
    fn spd(shape: [usize; 4], device: &Device) -> impl Fn(Tensor<4>) -> Tensor<4> {
        let n: usize = shape.iter().product();
        let d: Vec<f32> = (0..n)
            .map(|i| 1.0 + 99.0 * ((i * 37) % 101) as f32 / 100.0)
            .collect();
        let d = from_vec(d, shape, device);
        move |v: Tensor<4>| {
            let [_, _, _, w] = v.dims();
            let left = v.clone().narrow(3, 0, w - 1);
            let right = v.clone().narrow(3, 1, w - 1);
            let zero = v.clone().narrow(3, 0, 1).zeros_like();
            // S v: v[j − 1] + v[j + 1] (zero outside), symmetric; ‖S‖ ≤ 2 keeps M ≻ 0.
            let s = Tensor::cat(vec![zero.clone(), left], 3) + Tensor::cat(vec![right, zero], 3);
            v * d.clone() + s.mul_scalar(0.4)
        }
    }

    #[test]
    fn cg_converges_to_the_tolerance_on_an_spd_system() {
        let dev = Device::flex();
        let shape = [3, 2, 8, 8];
        let m = spd(shape, &dev);
        let mut noise = NoiseSource::new(1);
        let x_true = noise.normal(shape, &dev);
        let b = m(x_true.clone());
        let r = conjugate_gradient(&m, b.clone(), b.zeros_like(), 1e-5, 500);
        assert!(r.converged, "{r:?}");
        assert!(r.relative_residual <= 1e-5);
        assert!(r.iterations > 5 && r.iterations < 500, "{}", r.iterations);
        // The residual reported is the true one.
        let res = b.clone() - m(r.x.clone());
        let rel = dot_per_item(&res, &res)
            .iter()
            .zip(dot_per_item(&b, &b))
            .map(|(r, b)| (r / b).sqrt())
            .fold(0.0, f64::max);
        assert!(
            (rel - r.relative_residual).abs() < 1e-9,
            "{rel} vs {}",
            r.relative_residual
        );
        // And the solution is the true one (cond ≈ 100: error ≲ 100 × residual).
        let err = to_vec(&(r.x - x_true.clone()))
            .iter()
            .map(|v| v.abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-3, "{err}");
        // Items are independent: solving item 1 alone gives the same answer.
        let one = conjugate_gradient(
            |v| {
                let full = Tensor::cat(vec![v.zeros_like(), v.clone(), v.zeros_like()], 0);
                m(full).narrow(0, 1, 1)
            },
            b.clone().narrow(0, 1, 1),
            b.clone().narrow(0, 1, 1).zeros_like(),
            1e-5,
            500,
        );
        let diff = to_vec(&(one.x - x_true.narrow(0, 1, 1)))
            .iter()
            .map(|v| v.abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-3, "{diff}");
    }

    #[test]
    fn cg_reports_non_convergence_honestly() {
        let dev = Device::flex();
        let shape = [2, 1, 8, 8];
        let m = spd(shape, &dev);
        let b = NoiseSource::new(2).normal(shape, &dev);
        let r = conjugate_gradient(&m, b.clone(), b.zeros_like(), 1e-8, 3);
        assert!(!r.converged);
        assert_eq!(r.iterations, 3);
        assert!(
            r.relative_residual > 1e-3 && r.relative_residual < 1.0,
            "{r:?}"
        );
        // An unreachable tolerance in f32 stops at the cap, not forever, and says so.
        let r = conjugate_gradient(&m, b.clone(), b.zeros_like(), 1e-12, 60);
        assert!(!r.converged && r.iterations == 60, "{r:?}");
        assert!(r.relative_residual < 1e-4, "{r:?}");
    }

    #[test]
    fn cg_handles_zero_right_hand_sides_and_singular_systems() {
        let dev = Device::flex();
        // Item 0 has b = 0: x stays 0 while item 1 is solved.
        let b = from_vec(vec![0.0, 0.0, 1.0, 2.0], [2, 1, 1, 2], &dev);
        let r = conjugate_gradient(|v| v.mul_scalar(2.0), b.clone(), b.zeros_like(), 1e-6, 10);
        assert!(r.converged);
        assert_eq!(to_vec(&r.x), vec![0.0, 0.0, 0.5, 1.0]);
        // M = diag(1, 0): from 0, CG finds the minimum-norm solution of M x = (3, 0).
        let mask = from_vec(vec![1.0, 0.0], [1, 1, 1, 2], &dev);
        let b = from_vec(vec![3.0, 0.0], [1, 1, 1, 2], &dev);
        let r = conjugate_gradient(|v| v * mask.clone(), b.clone(), b.zeros_like(), 1e-6, 10);
        assert!(r.converged);
        assert_eq!(to_vec(&r.x), vec![3.0, 0.0]);
    }
}
