//! Box-filter super-resolution: downsampling by an integer factor f with average pooling,
//! `A(x)[i, j] = (1/f²) Σ_{u,v < f} x[f·i + u, f·j + v]` (spec `super-resolution-box`,
//! name `sr4-box`).
//!
//! This is not DPS's operator (that is the antialiased bicubic [`crate::Resizer`], spec
//! `super-resolution`); it is kept because everything about it is exact and cheap: the adjoint
//! is nearest-neighbour upsampling / f², so `A Aᵀ = I/f²`, the pseudo-inverse
//! `A⁺ = Aᵀ(AAᵀ)⁻¹ = f²Aᵀ` is nearest-neighbour upsampling, and `prox_l2` follows from
//! Woodbury.

use crate::{Operator, OperatorError};
use burn::tensor::Tensor;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;

/// `f×` downsampling by averaging `f × f` blocks (image sides must be multiples of `f`).
#[derive(Debug, Clone, Copy)]
pub struct Downsample {
    factor: usize,
}

impl Downsample {
    /// Downsampling by `factor` ≥ 1 (DPS: 4).
    pub fn new(factor: usize) -> Result<Self, OperatorError> {
        if factor == 0 {
            return Err(OperatorError::invalid("factor", factor, "must be ≥ 1"));
        }
        Ok(Self { factor })
    }

    /// The factor f.
    pub fn factor(&self) -> usize {
        self.factor
    }

    /// Nearest-neighbour upsampling by f (each value copied to an f × f block).
    fn upsample(&self, y: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = y.dims();
        let f = self.factor;
        y.reshape([b, c, h, 1, w, 1])
            .expand([b, c, h, f, w, f])
            .reshape([b, c, h * f, w * f])
    }
}

impl Operator for Downsample {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let f = self.factor;
        assert!(
            h % f == 0 && w % f == 0,
            "{w}×{h} (W×H) image is not divisible by the SR factor {f}"
        );
        avg_pool2d(x, AvgPoolOptions::new([f, f]))
    }
    fn adjoint(&self, y: Tensor<4>) -> Tensor<4> {
        let f2 = (self.factor * self.factor) as f64;
        self.upsample(y).div_scalar(f2)
    }
    /// `A⁺y = Aᵀ(AAᵀ)⁻¹y = f²Aᵀy`: nearest-neighbour upsampling (`AAᵀ = I/f²`).
    fn pseudo_inverse(&self, y: Tensor<4>) -> Tensor<4> {
        self.upsample(y)
    }
    /// Woodbury with `AAᵀ = cI`, `c = 1/f²`: `(I + γAᵀA)⁻¹ = I − γ/(1 + γc) AᵀA`, so with
    /// `u = z + γAᵀy`, `x = u − γ/(1 + γc) Aᵀ(A u)`.
    fn prox_l2(&self, z: Tensor<4>, y: Tensor<4>, gamma: f64) -> Tensor<4> {
        crate::cg::check_gamma(gamma);
        let c = 1.0 / (self.factor * self.factor) as f64;
        let u = z + self.adjoint(y).mul_scalar(gamma);
        let au = self.forward(u.clone());
        u - self.adjoint(au).mul_scalar(gamma / (1.0 + gamma * c))
    }
    fn describe(&self) -> String {
        format!("{}× super-resolution (box filter)", self.factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::adjoint_error;
    use burn::tensor::Device;
    use tweedie_core::NoiseSource;

    #[test]
    fn downsample_adjoint_and_pseudo_inverse() {
        let op = Downsample::new(4).unwrap();
        assert!(adjoint_error(&op, [2, 3, 16, 8], 1) < 1e-5);
        let d = Device::flex();
        let y = NoiseSource::new(2).normal([1, 3, 4, 4], &d);
        // A A⁺ y = y.
        let back = op.forward(op.pseudo_inverse(y.clone()));
        let err = tweedie_core::tensor::to_vec(&(back - y).abs().max())[0];
        assert!(err < 1e-6);
        assert!(Downsample::new(0).is_err());
    }
}
