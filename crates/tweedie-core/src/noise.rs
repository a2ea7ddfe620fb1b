//! Seeded Gaussian noise, drawn on the host so that the same seed gives the same numbers on
//! every backend.

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// A deterministic source of standard normal noise.
#[derive(Debug)]
pub struct NoiseSource {
    rng: StdRng,
}

impl NoiseSource {
    /// A noise source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A vector of `n` i.i.d. N(0, 1) samples.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect()
    }

    /// A tensor of i.i.d. N(0, 1) samples with the given shape.
    pub fn normal<const D: usize>(&mut self, shape: [usize; D], device: &Device) -> Tensor<D> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(self.normal_vec(n), shape), device)
    }

    /// A tensor of i.i.d. N(0, 1) samples shaped like `like`.
    pub fn normal_like<const D: usize>(&mut self, like: &Tensor<D>) -> Tensor<D> {
        self.normal(like.dims(), &like.device())
    }

    /// A uniform sample in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        rand::RngExt::random::<f64>(&mut self.rng)
    }

    /// A uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        rand::RngExt::random_range(&mut self.rng, 0..n)
    }

    /// A fresh, independent source derived from this one (for per-item streams).
    pub fn fork(&mut self) -> NoiseSource {
        NoiseSource::new(rand::RngExt::random::<u64>(&mut self.rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_and_moments_are_standard() {
        let a = NoiseSource::new(7).normal_vec(20_000);
        let b = NoiseSource::new(7).normal_vec(20_000);
        let c = NoiseSource::new(8).normal_vec(20_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        // 4 standard errors: se(mean) = 1/√n, se(var) ≈ √(2/n).
        assert!(mean.abs() < 4.0 / n.sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 4.0 * (2.0 / n).sqrt(), "var {var}");
    }
}
