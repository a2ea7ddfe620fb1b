//! Seeded Gaussian noise, drawn on the host so that the same seed gives the same numbers on
//! every backend, or played back from recorded tensors so that a chain can be replayed step by
//! step against a reference run (e.g. the official DPS code's recorded draws).

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// A deterministic source of standard normal noise: seeded, or replaying recorded draws.
///
/// ```
/// use tweedie_core::{Device, NoiseSource, tensor};
///
/// let device = Device::flex();
/// // The same seed gives the same numbers (drawn on the host, so on every backend too).
/// let a = NoiseSource::new(42).normal([2, 3], &device);
/// let b = NoiseSource::new(42).normal([2, 3], &device);
/// assert_eq!(a.dims(), [2, 3]);
/// assert_eq!(tensor::to_vec(&a), tensor::to_vec(&b));
/// assert_ne!(NoiseSource::new(43).normal_vec(6), tensor::to_vec(&a));
///
/// // A replaying source serves recorded draws in order (e.g. a reference run's noise).
/// let mut replay = NoiseSource::replay(vec![vec![0.5, -1.0], vec![2.0]], 0);
/// assert_eq!(replay.normal_vec(2), [0.5, -1.0]);
/// assert_eq!(replay.replay_remaining(), Some(1));
/// assert_eq!(tensor::to_vec(&replay.normal([1, 1], &device)), [2.0]);
/// ```
#[derive(Debug)]
pub struct NoiseSource {
    rng: StdRng,
    replay: Option<Replay>,
    /// Per-item streams: a Gaussian draw of n values takes n/k from each, in order.
    items: Option<Vec<NoiseSource>>,
}

/// Recorded Gaussian draws, served in order.
#[derive(Debug)]
struct Replay {
    draws: std::collections::VecDeque<Vec<f32>>,
    served: usize,
}

impl NoiseSource {
    /// A noise source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            replay: None,
            items: None,
        }
    }

    /// A source for a batch of `items.len()` items, each drawing from its own stream: a
    /// Gaussian draw of n values ([`NoiseSource::normal`], [`NoiseSource::normal_like`],
    /// [`NoiseSource::normal_vec`]) is the concatenation of n/k values from each of the k
    /// streams, in order. A batched chain whose every draw covers the whole batch (item-major,
    /// as `[B, …]` tensors are) then gives item i exactly the noise a batch-1 chain drawing
    /// from `items[i]` alone would get. Scalar draws ([`NoiseSource::uniform`],
    /// [`NoiseSource::below`], [`NoiseSource::fork`]) come from a generator seeded with 0.
    ///
    /// ```
    /// use tweedie_core::NoiseSource;
    ///
    /// let mut batch = NoiseSource::per_item(vec![NoiseSource::new(1), NoiseSource::new(2)]);
    /// let v = batch.normal_vec(6);
    /// assert_eq!(v[..3], NoiseSource::new(1).normal_vec(3)[..]);
    /// assert_eq!(v[3..], NoiseSource::new(2).normal_vec(3)[..]);
    /// ```
    ///
    /// # Panics
    /// When `items` is empty.
    pub fn per_item(items: Vec<NoiseSource>) -> Self {
        assert!(!items.is_empty(), "per-item noise needs at least one item");
        Self {
            rng: StdRng::seed_from_u64(0),
            replay: None,
            items: Some(items),
        }
    }

    /// A source that plays back `draws` in order: the k-th Gaussian tensor asked for
    /// ([`NoiseSource::normal`], [`NoiseSource::normal_like`], [`NoiseSource::normal_vec`]) is
    /// `draws[k]`, which must have exactly as many elements as that request (row-major, the
    /// tensor's shape). Scalar draws ([`NoiseSource::uniform`], [`NoiseSource::below`],
    /// [`NoiseSource::fork`]) still come from a generator seeded with `seed`.
    ///
    /// For a sampler chain the order is: x_T, then one tensor per step that adds noise (every
    /// step but the last). Check [`NoiseSource::replay_remaining`] afterwards.
    pub fn replay(draws: Vec<Vec<f32>>, seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            replay: Some(Replay {
                draws: draws.into(),
                served: 0,
            }),
            items: None,
        }
    }

    /// How many recorded draws are left unplayed (`None` for a seeded source).
    pub fn replay_remaining(&self) -> Option<usize> {
        self.replay.as_ref().map(|r| r.draws.len())
    }

    /// A vector of `n` i.i.d. N(0, 1) samples (the next recorded draw when replaying).
    ///
    /// # Panics
    /// When replaying and the recorded draws are exhausted or the next one does not have `n`
    /// elements: the replay no longer matches the chain, and continuing would give a silently
    /// different result. Callers check shapes and counts up front. For a
    /// [`NoiseSource::per_item`] source, when `n` is not a multiple of the number of items.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        if let Some(items) = self.items.as_mut() {
            let k = items.len();
            assert_eq!(
                n % k,
                0,
                "per-item noise: {n} values cannot be split among {k} items"
            );
            return items.iter_mut().flat_map(|s| s.normal_vec(n / k)).collect();
        }
        if let Some(r) = self.replay.as_mut() {
            let k = r.served;
            let draw = r.draws.pop_front().unwrap_or_else(|| {
                panic!(
                    "noise replay: draw #{k} asked for {n} values but the recording is exhausted"
                )
            });
            assert_eq!(
                draw.len(),
                n,
                "noise replay: draw #{k} has {} values but {n} were asked for",
                draw.len()
            );
            r.served += 1;
            return draw;
        }
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

    #[test]
    fn replay_serves_recorded_draws_in_order() {
        let device = Device::flex();
        let mut n = NoiseSource::replay(vec![vec![1.0, 2.0], vec![3.0, 4.0, 5.0, 6.0]], 0);
        assert_eq!(n.replay_remaining(), Some(2));
        let a = n.normal([1, 2], &device);
        let b = n.normal([2, 2], &device);
        assert_eq!(crate::tensor::to_vec(&a), [1.0, 2.0]);
        assert_eq!(crate::tensor::to_vec(&b), [3.0, 4.0, 5.0, 6.0]);
        assert_eq!(n.replay_remaining(), Some(0));
        assert_eq!(NoiseSource::new(0).replay_remaining(), None);
    }

    #[test]
    fn per_item_draws_each_items_share_from_its_own_stream() {
        let device = Device::flex();
        let mut batch = NoiseSource::per_item(vec![NoiseSource::new(3), NoiseSource::new(4)]);
        let (mut a, mut b) = (NoiseSource::new(3), NoiseSource::new(4));
        for _ in 0..3 {
            let got = crate::tensor::to_vec(&batch.normal([2, 1, 2, 2], &device));
            let mut want = a.normal_vec(4);
            want.extend(b.normal_vec(4));
            assert_eq!(got, want);
        }
    }

    #[test]
    #[should_panic(expected = "draw #0 has 2 values but 3 were asked for")]
    fn replay_refuses_a_draw_of_the_wrong_size() {
        NoiseSource::replay(vec![vec![1.0, 2.0]], 0).normal_vec(3);
    }
}
