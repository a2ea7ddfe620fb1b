//! The `LinearPhysics` contract of every operator: `A⁺` is a least-squares inverse
//! (`A A⁺ A x = A x`, and the closed forms equal the CG answer), `prox_l2` satisfies its
//! optimality condition `(x − z)/γ + Aᵀ(Ax − y) = 0` (and the closed forms equal CG), and its
//! limits: γ → 0 gives `z`, γ → ∞ gives the least-squares solution nearest `z`.

use burn::tensor::{Device, Tensor};
use tweedie_core::NoiseSource;
use tweedie_core::tensor::to_vec;
use tweedie_operators::{
    Blur, Downsample, Identity, Mask, Operator, Padding, Resizer, adjointness_error,
    least_squares_cg, measure, measure_with_noise, prox_l2_cg,
};

const SHAPE: [usize; 4] = [2, 3, 16, 16];

/// Tight CG settings for the reference answers.
const REF_TOL: f64 = 1e-6;
const REF_ITER: usize = 1000;

fn norm(a: &Tensor<4>) -> f64 {
    to_vec(a)
        .iter()
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// ‖a − b‖ / ‖b‖.
fn rel(a: &Tensor<4>, b: &Tensor<4>) -> f64 {
    norm(&(a.clone() - b.clone())) / norm(b).max(1e-30)
}

/// A 5×5 kernel that is not symmetric (so a wrong flip or a missing conjugate shows) and is
/// well conditioned (centre 0.6, the rest 0.4 in all: |K̂| ≥ 0.2 everywhere).
fn lopsided_kernel() -> Vec<f32> {
    let mut n = NoiseSource::new(42);
    let mut k: Vec<f32> = (0..25).map(|_| n.uniform() as f32).collect();
    k[12] = 0.0;
    let s: f32 = k.iter().sum();
    for v in &mut k {
        *v *= 0.4 / s;
    }
    k[12] = 0.6;
    k
}

/// Every operator kind, with a name, on `SHAPE` images; `closed` = A⁺ and prox_l2 are closed
/// forms (compared against CG).
fn operators() -> Vec<(&'static str, Box<dyn Operator>, bool, bool)> {
    let d = Device::flex();
    let [_, _, h, w] = SHAPE;
    let mask = Mask::random_pixels(h, w, 0.5, &mut NoiseSource::new(3), &d).unwrap();
    // (name, operator, closed-form A⁺, closed-form prox)
    vec![
        ("identity", Box::new(Identity), true, true),
        ("mask", Box::new(mask), true, true),
        (
            "downsample ×4",
            Box::new(Downsample::new(4).unwrap()),
            true,
            true,
        ),
        (
            "resizer ×2",
            Box::new(Resizer::new(h, w, 2).unwrap()),
            true,
            true,
        ),
        (
            "resizer ×0.7",
            Box::new(Resizer::with_scale(h, w, 0.7).unwrap()),
            true,
            true,
        ),
        (
            "reflect gaussian blur",
            Box::new(Blur::gaussian(5, 0.7).unwrap()),
            false,
            true,
        ),
        (
            "reflect lopsided blur",
            Box::new(Blur::new(lopsided_kernel(), 5, "lopsided").unwrap()),
            false,
            false,
        ),
        (
            "circular lopsided blur",
            Box::new(
                Blur::new(lopsided_kernel(), 5, "lopsided")
                    .unwrap()
                    .with_padding(Padding::Circular),
            ),
            true,
            true,
        ),
    ]
}

fn draws(op: &dyn Operator, seed: u64) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let d = Device::flex();
    let mut n = NoiseSource::new(seed);
    let x = n.normal(SHAPE, &d);
    let y_shape = op.forward(x.clone()).dims();
    let y = n.normal(y_shape, &d);
    let z = n.normal(SHAPE, &d);
    (x, y, z)
}

#[test]
fn pseudo_inverse_is_a_least_squares_inverse() {
    for (name, op, closed, _) in operators() {
        let (x, y, _) = draws(op.as_ref(), 1);
        let ax = op.forward(x);
        let e = rel(&op.forward(op.pseudo_inverse(ax.clone())), &ax);
        assert!(e < 1e-4, "{name}: ‖A A⁺ A x − A x‖/‖A x‖ = {e:.2e}");
        // On a y outside the range too: the normal equations hold, Aᵀ(A A⁺y − y) = 0.
        let xp = op.pseudo_inverse(y.clone());
        let e = rel(&op.adjoint(op.forward(xp.clone())), &op.adjoint(y.clone()));
        assert!(e < 1e-4, "{name}: normal-equation residual {e:.2e}");
        let cg = least_squares_cg(op.as_ref(), y, REF_TOL, REF_ITER);
        assert!(cg.converged, "{name}: {cg:?}");
        if closed {
            // The minimum-norm solution: the closed form is CG's limit from 0.
            let e = rel(&xp, &cg.x);
            assert!(e < 1e-4, "{name}: closed-form A⁺ vs CG {e:.2e}");
        }
    }
}

#[test]
fn prox_l2_is_optimal_and_matches_cg() {
    for (name, op, _, closed) in operators() {
        let (_, y, z) = draws(op.as_ref(), 2);
        for gamma in [0.3, 5.0] {
            let x = op.prox_l2(z.clone(), y.clone(), gamma);
            assert_eq!(x.dims(), SHAPE, "{name}");
            // (x − z)/γ + Aᵀ(Ax − y) = 0, relative to the size of its two terms.
            let a = (x.clone() - z.clone()).div_scalar(gamma);
            let b = op.adjoint(op.forward(x.clone()) - y.clone());
            let e = norm(&(a.clone() + b.clone())) / (norm(&a) + norm(&b));
            assert!(e < 1e-4, "{name}, γ = {gamma}: optimality residual {e:.2e}");
            let cg = prox_l2_cg(op.as_ref(), z.clone(), y.clone(), gamma, REF_TOL, REF_ITER);
            assert!(cg.converged, "{name}, γ = {gamma}: {cg:?}");
            let e = rel(&x, &cg.x);
            let tol = if closed { 1e-5 } else { 1e-4 };
            assert!(e < tol, "{name}, γ = {gamma}: prox vs CG {e:.2e}");
        }
    }
}

/// The separable reflect blurs' exact prox (a Kronecker eigenbasis) against a tight CG solve,
/// with kernels as wide as DPS's relative to the image.
#[test]
fn separable_reflect_blur_prox_is_the_cg_limit_for_wide_kernels() {
    let d = Device::flex();
    let blurs = [
        (
            "gaussian 31 σ=3 on 48²",
            Blur::gaussian(31, 3.0).unwrap(),
            48,
        ),
        ("gaussian 9 σ=2 on 16²", Blur::gaussian(9, 2.0).unwrap(), 16),
    ];
    for (name, op, n) in blurs {
        let mut noise = NoiseSource::new(n as u64);
        let (y, z) = (
            noise.normal([1, 3, n, n], &d),
            noise.normal([1, 3, n, n], &d),
        );
        for gamma in [0.05, 2.0, 400.0] {
            let x = op.prox_l2(z.clone(), y.clone(), gamma);
            let cg = prox_l2_cg(&op, z.clone(), y.clone(), gamma, REF_TOL, REF_ITER);
            assert!(cg.converged, "{name} γ = {gamma}: {cg:?}");
            let e = rel(&x, &cg.x);
            assert!(e < 1e-4, "{name}, γ = {gamma}: prox vs CG {e:.2e}");
        }
    }
}

#[test]
fn prox_l2_limits_are_z_and_least_squares() {
    for (name, op, closed_pinv, closed_prox) in operators() {
        let (_, y, z) = draws(op.as_ref(), 3);
        // γ = 0 is z exactly; γ → 0 tends to it.
        let x0 = op.prox_l2(z.clone(), y.clone(), 0.0);
        assert_eq!(to_vec(&x0), to_vec(&z), "{name}");
        let e = rel(&op.prox_l2(z.clone(), y.clone(), 1e-7), &z);
        assert!(e < 1e-5, "{name}: γ → 0 gives {e:.2e} from z");
        // γ large: a least-squares solution, Aᵀ(Ax − y) ≈ 0, so A x fits y as well as least
        // squares can (A A⁺ y).
        let gamma = 1e5;
        let x = op.prox_l2(z.clone(), y.clone(), gamma);
        let aty = op.adjoint(y.clone());
        let e = norm(&(op.adjoint(op.forward(x.clone())) - aty.clone())) / norm(&aty);
        assert!(e < 1e-3, "{name}: γ = 1e5 normal-equation residual {e:.2e}");
        // (Both sides are CG answers for the reflect blurs, whose small singular values turn the
        // 1e-5 normal-equation tolerance into ~1e-3 in A-space.)
        let fit = op.forward(op.pseudo_inverse(y.clone()));
        let e = rel(&op.forward(x.clone()), &fit);
        // Both closed forms: exact up to f32; else a CG answer is on one side.
        let closed = closed_pinv && closed_prox;
        let tol = if closed { 1e-3 } else { 1e-2 };
        assert!(e < tol, "{name}: A x vs A A⁺ y {e:.2e}");
        if closed {
            // Exactly: the one nearest z, z + A⁺(y − A z), up to O(1/(γ s²)) for the smallest
            // singular value s (1/4 for ×4 box downsampling).
            let nearest = z.clone() + op.pseudo_inverse(y.clone() - op.forward(z.clone()));
            let e = rel(&x, &nearest);
            assert!(e < 1e-3, "{name}: γ = 1e5 vs z + A⁺(y − Az): {e:.2e}");
        }
    }
}

#[test]
fn circular_blur_is_adjoint_and_diagonal_in_fourier() {
    let d = Device::flex();
    let mut n = NoiseSource::new(5);
    let kernels = [
        Blur::new(lopsided_kernel(), 5, "lopsided").unwrap(),
        Blur::motion(9, 0.5, &mut n).unwrap(),
        Blur::gaussian(23, 4.0).unwrap(), // radius 11 on 12 px: wraps nearly all the way
    ];
    for b in kernels {
        let c = b.clone().with_padding(Padding::Circular);
        assert_eq!(c.padding(), Padding::Circular);
        assert_eq!(b.padding(), Padding::Reflect);
        for shape in [[2, 3, 16, 16], [1, 2, 16, 12]] {
            let e = adjointness_error(&c, shape, 7, &d);
            assert!(e < 1e-5, "{}: adjointness {e:.2e}", c.describe());
        }
    }
    // A circular blur commutes with a circular shift; a reflect one does not.
    let b = Blur::new(lopsided_kernel(), 5, "lopsided").unwrap();
    let c = b.clone().with_padding(Padding::Circular);
    let x = n.normal([1, 3, 16, 16], &d);
    let roll = |t: Tensor<4>| Tensor::cat(vec![t.clone().narrow(3, 5, 11), t.narrow(3, 0, 5)], 3);
    let e = rel(&c.forward(roll(x.clone())), &roll(c.forward(x.clone())));
    assert!(e < 1e-6, "circular shift {e:.2e}");
    let e = rel(&b.forward(roll(x.clone())), &roll(b.forward(x.clone())));
    assert!(e > 1e-2, "reflect shift {e:.2e}");
    // Away from the border the two paddings agree.
    let inner = |t: Tensor<4>| t.narrow(2, 2, 12).narrow(3, 2, 12);
    let e = rel(&inner(c.forward(x.clone())), &inner(b.forward(x)));
    assert!(e < 1e-6, "interior {e:.2e}");
    // The default is reflect (DPS's), and the descriptions differ.
    assert_ne!(c.describe(), b.describe());
}

#[test]
fn circular_blur_pseudo_inverse_is_minimum_norm_where_the_kernel_vanishes() {
    // A 3×3 box on 18×18: K̂ = 0 on the lines ω = ±2π/3 (k = 6, 12), so A is singular.
    let d = Device::flex();
    let c = Blur::new(vec![1.0 / 9.0; 9], 3, "box 3×3")
        .unwrap()
        .with_padding(Padding::Circular);
    let mut n = NoiseSource::new(6);
    let x = n.normal([2, 3, 18, 18], &d);
    let y = c.forward(x.clone());
    let xp = c.pseudo_inverse(y.clone());
    assert!(rel(&c.forward(xp.clone()), &y) < 1e-5);
    // Minimum norm: strictly shorter than x (which has null-space components), equal to CG
    // from 0.
    assert!(norm(&xp) < 0.99 * norm(&x));
    let cg = least_squares_cg(&c, y, REF_TOL, REF_ITER);
    assert!(cg.converged, "{cg:?}");
    let e = rel(&xp, &cg.x);
    assert!(e < 1e-4, "FFT A⁺ vs CG {e:.2e}");
}

#[test]
fn strong_blurs_still_answer() {
    // DPS-like Gaussian (σ = 3): circular A⁺ inverts to f32 precision; the reflect CG default
    // stops at its cap but still fits the measurement closely.
    let d = Device::flex();
    let x = NoiseSource::new(8).normal([1, 3, 32, 32], &d);
    for padding in [Padding::Circular, Padding::Reflect] {
        let op = Blur::gaussian(13, 2.0).unwrap().with_padding(padding);
        let ax = op.forward(x.clone());
        let e = rel(&op.forward(op.pseudo_inverse(ax.clone())), &ax);
        assert!(e < 1e-2, "{padding:?}: {e:.2e}");
        let p = op.prox_l2(x.clone(), ax.clone(), 2.0);
        assert!(tweedie_core::tensor::all_finite(&p));
        // Blurs start from y itself.
        assert_eq!(to_vec(&op.initialise(ax.clone())), to_vec(&ax));
    }
}

#[test]
fn measurements_carry_their_noise_level() {
    let d = Device::flex();
    let mask = Mask::center_box(8, 8, 4, &d).unwrap();
    let x: Tensor<4> = NoiseSource::new(1).normal([1, 3, 8, 8], &d);
    let m = measure_with_noise(&mask, x.clone(), 0.05, &mut NoiseSource::new(2)).unwrap();
    let y = measure(&mask, x.clone(), 0.05, &mut NoiseSource::new(2)).unwrap();
    assert_eq!(m.sigma, 0.05);
    assert_eq!(to_vec(&m.y), to_vec(&y));
    assert!(measure_with_noise(&mask, x, f64::NAN, &mut NoiseSource::new(2)).is_err());
    // Non-blurs initialise with A⁺y.
    assert_eq!(
        to_vec(&mask.initialise(m.y.clone())),
        to_vec(&mask.pseudo_inverse(m.y))
    );
}
