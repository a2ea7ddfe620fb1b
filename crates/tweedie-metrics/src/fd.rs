//! Fréchet distances between two image sets: our own sample-quality numbers (**not FID**).
//!
//! Each set is summarised by a Gaussian fit (mean μ, covariance Σ with the n − 1 denominator)
//! of a per-image feature vector, and two sets are compared by the Fréchet (2-Wasserstein)
//! distance between their Gaussians:
//!
//! FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}).
//!
//! Two features:
//! - **FD-Alex** ([`alex_features`]): the images are resized to 224×224 (bilinear,
//!   half-pixel centres), passed through LPIPS's scaling layer and the LPIPS AlexNet backbone
//!   (this crate's `assets/lpips_alexnet.safetensors`, torchvision's AlexNet convs), and conv5
//!   after its ReLU is averaged over positions: 256 numbers per image. FID uses Inception-v3 pool3
//!   (2048-d) on 299×299 images, so the values are **not** comparable with published FIDs,
//!   only with each other.
//! - **colour-FD** ([`mean_rgb`]): the per-image mean R, G, B on the [0, 1] scale (3 numbers),
//!   which measures colour casts directly: a set shifted by δ in every channel moves by 3δ².
//!
//! The matrix square root is computed in f64 from symmetric eigen-decompositions (cyclic
//! Jacobi): tr (Σ₁Σ₂)^{1/2} = tr (S Σ₂ S)^{1/2} with S = Σ₁^{1/2}, both PSD, negative rounding
//! eigenvalues clamped to 0, so singular covariances (fewer images than dimensions) are fine.

use crate::lpips::{Backbone, Lpips};
use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

/// The side images are resized to before AlexNet (AlexNet's own input size).
pub const FD_ALEX_SIZE: usize = 224;

/// Errors of the Fréchet distances.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    /// A covariance needs at least two samples.
    #[error("{what}: a Gaussian fit needs at least 2 images, got {n}")]
    TooFew {
        /// Which set.
        what: String,
        /// How many samples it had.
        n: usize,
    },
    /// The samples (or the two Gaussians) differ in dimension.
    #[error("feature dimensions differ: {0} vs {1}")]
    DimMismatch(usize, usize),
    /// The features need the AlexNet backbone.
    #[error("FD-Alex needs the LPIPS AlexNet backbone, got {0:?}")]
    Backbone(Backbone),
    /// Images must be `[B, 3, H, W]`.
    #[error("expected images [B, 3, H, W], got {0:?}")]
    Shape([usize; 4]),
    /// A feature is NaN or infinite.
    #[error("{0}: a feature is not finite")]
    NotFinite(String),
}

/// A Gaussian fit of `d`-dimensional samples: mean μ and covariance
/// Σ = Σᵢ (xᵢ − μ)(xᵢ − μ)ᵀ / (n − 1), row-major `d × d`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// μ.
    pub mean: Vec<f64>,
    /// Σ, row-major `d × d`.
    pub cov: Vec<f64>,
    /// Number of samples fitted.
    pub n: usize,
}

impl Gaussian {
    /// Fits μ and Σ (unbiased, n − 1 denominator, as `numpy.cov`) to `samples`, all of one
    /// dimension; `what` names the set in errors.
    pub fn fit(samples: &[Vec<f64>], what: &str) -> Result<Self, FdError> {
        let n = samples.len();
        if n < 2 {
            return Err(FdError::TooFew {
                what: what.to_string(),
                n,
            });
        }
        let d = samples[0].len();
        if let Some(s) = samples.iter().find(|s| s.len() != d) {
            return Err(FdError::DimMismatch(d, s.len()));
        }
        if samples.iter().flatten().any(|v| !v.is_finite()) {
            return Err(FdError::NotFinite(what.to_string()));
        }
        let mut mean = vec![0.0; d];
        for s in samples {
            for (m, v) in mean.iter_mut().zip(s) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0; d * d];
        let mut c = vec![0.0; d];
        for s in samples {
            for (ci, (v, m)) in c.iter_mut().zip(s.iter().zip(&mean)) {
                *ci = v - m;
            }
            for i in 0..d {
                let ci = c[i];
                let row = &mut cov[i * d..(i + 1) * d];
                // Upper triangle only; mirrored below.
                for j in i..d {
                    row[j] += ci * c[j];
                }
            }
        }
        for i in 0..d {
            for j in i..d {
                let v = cov[i * d + j] / (n - 1) as f64;
                cov[i * d + j] = v;
                cov[j * d + i] = v;
            }
        }
        Ok(Self { mean, cov, n })
    }

    /// The dimension d.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// The Fréchet distance between two Gaussians:
/// FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^{1/2}, with
/// tr (Σ₁Σ₂)^{1/2} = Σᵢ √λᵢ(S Σ₂ S), S = Σ₁^{1/2} (f64, eigen-decompositions). Rounding can
/// make the exact 0 of identical fits come out as −1e-15: results are clamped at 0.
///
/// ```
/// use tweedie_metrics::fd::{Gaussian, frechet_distance};
///
/// // 1-D: FD = (μ₁ − μ₂)² + (σ₁ − σ₂)².
/// let a = Gaussian { mean: vec![1.0], cov: vec![4.0], n: 10 };
/// let b = Gaussian { mean: vec![0.0], cov: vec![1.0], n: 10 };
/// let fd = frechet_distance(&a, &b).unwrap();
/// assert!((fd - (1.0 + 1.0)).abs() < 1e-12);
/// ```
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64, FdError> {
    Ok(frechet_terms(a, b)?.distance())
}

/// The Fréchet distance's two terms: where the sets' means differ and where their spreads do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrechetTerms {
    /// ‖μ₁ − μ₂‖² (for colour-FD: a cast of the whole set).
    pub mean: f64,
    /// tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^{1/2}, clamped at 0 (for colour-FD: per-image colours
    /// varying more or less than the other set's). Σ₁ = s²Σ₂ gives (s − 1)² tr Σ₂.
    pub covariance: f64,
}

impl FrechetTerms {
    /// The Fréchet distance: mean + covariance, clamped at 0.
    pub fn distance(&self) -> f64 {
        (self.mean + self.covariance).max(0.0)
    }
}

/// The mean and covariance terms of [`frechet_distance`], which is their sum.
///
/// ```
/// use tweedie_metrics::fd::{Gaussian, frechet_terms};
///
/// let a = Gaussian { mean: vec![1.0], cov: vec![4.0], n: 10 };
/// let b = Gaussian { mean: vec![0.0], cov: vec![1.0], n: 10 };
/// let t = frechet_terms(&a, &b).unwrap();
/// assert!((t.mean - 1.0).abs() < 1e-12 && (t.covariance - 1.0).abs() < 1e-12);
/// ```
pub fn frechet_terms(a: &Gaussian, b: &Gaussian) -> Result<FrechetTerms, FdError> {
    let d = a.dim();
    if b.dim() != d || a.cov.len() != d * d || b.cov.len() != d * d {
        return Err(FdError::DimMismatch(d, b.dim()));
    }
    let mean: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    let s = sqrt_psd(&a.cov, d);
    let mut m = matmul(&matmul(&s, &b.cov, d), &s, d);
    symmetrize(&mut m, d);
    let (eig, _) = sym_eigen(m, d);
    let tr_sqrt: f64 = eig.iter().map(|l| l.max(0.0).sqrt()).sum();
    Ok(FrechetTerms {
        mean,
        covariance: (trace(&a.cov) + trace(&b.cov) - 2.0 * tr_sqrt).max(0.0),
    })
}

/// Per-image AlexNet features (LPIPS backbone): `[−1, 1]` images `[B, 3, H, W]` resized to
/// 224×224 (bilinear, half-pixel centres), LPIPS's scaling layer, conv1…conv5 with ReLUs and
/// max-pools, then the mean of conv5 over its 13×13 positions: one 256-vector per image.
/// Batches of `batch` images at a time bound the memory (≈ 40 MB per image at 224×224).
pub fn alex_features(
    net: &Lpips,
    images: &Tensor<4>,
    batch: usize,
) -> Result<Vec<Vec<f64>>, FdError> {
    if net.backbone() != Backbone::Alex {
        return Err(FdError::Backbone(net.backbone()));
    }
    let [n, c, ..] = images.dims();
    if c != 3 {
        return Err(FdError::Shape(images.dims()));
    }
    let mut out = Vec::with_capacity(n);
    let batch = batch.max(1);
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let x = images.clone().narrow(0, start, len);
        let opts = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([FD_ALEX_SIZE, FD_ALEX_SIZE]);
        let f = net.last_conv_features(interpolate(x, opts));
        let [b, ch, ..] = f.dims();
        let pooled = f.reshape([b as i32, ch as i32, -1]).mean_dim(2);
        let v = tweedie_core::tensor::to_vec(&pooled);
        out.extend(
            v.chunks(ch)
                .map(|r| r.iter().map(|x| *x as f64).collect::<Vec<f64>>()),
        );
        start += len;
    }
    Ok(out)
}

/// Per-image mean colour of `[−1, 1]` images `[B, 3, H, W]` on the [0, 1] scale:
/// m_c = mean over pixels of (x_c + 1)/2, one `[R, G, B]` vector per image.
pub fn mean_rgb(images: &Tensor<4>) -> Result<Vec<Vec<f64>>, FdError> {
    let [n, c, ..] = images.dims();
    if c != 3 {
        return Err(FdError::Shape(images.dims()));
    }
    let m = images
        .clone()
        .reshape([n as i32, 3, -1])
        .mean_dim(2)
        .add_scalar(1.0)
        .mul_scalar(0.5);
    Ok(tweedie_core::tensor::to_vec(&m)
        .chunks(3)
        .map(|r| r.iter().map(|x| *x as f64).collect())
        .collect())
}

/// The features of one image set, collected batch by batch ([`SetFeatures::add`]).
#[derive(Debug, Clone, Default)]
pub struct SetFeatures {
    /// AlexNet conv5 means, 256 per image ([`alex_features`]).
    pub alex: Vec<Vec<f64>>,
    /// Mean RGB on [0, 1], 3 per image ([`mean_rgb`]).
    pub colour: Vec<Vec<f64>>,
}

impl SetFeatures {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a batch of `[−1, 1]` images `[B, 3, H, W]` (AlexNet run `batch` images at a time).
    pub fn add(&mut self, net: &Lpips, images: &Tensor<4>, batch: usize) -> Result<(), FdError> {
        let alex = alex_features(net, images, batch)?;
        let colour = mean_rgb(images)?;
        self.alex.extend(alex);
        self.colour.extend(colour);
        Ok(())
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.alex.len()
    }

    /// True when no image was added.
    pub fn is_empty(&self) -> bool {
        self.alex.is_empty()
    }
}

/// Both distances between two sets.
#[derive(Debug, Clone, PartialEq)]
pub struct FdScores {
    /// FD of the AlexNet conv5 Gaussians (256-d).
    pub fd_alex: f64,
    /// FD of the mean-RGB Gaussians (3-d, [0, 1] scale).
    pub fd_colour: f64,
    /// colour-FD split into its mean term (a cast) and its covariance term (a spread).
    pub colour_terms: FrechetTerms,
    /// The Gaussian fits of sets `a` and `b`'s per-image mean RGB (μ and Σ on [0, 1]).
    pub colour_fits: [Gaussian; 2],
}

/// FD-Alex and colour-FD between sets `a` and `b` (each needs ≥ 2 images); `names` label the
/// sets in errors.
pub fn fd_scores(
    a: &SetFeatures,
    b: &SetFeatures,
    names: (&str, &str),
) -> Result<FdScores, FdError> {
    let fit = |f: &[Vec<f64>], what: &str| Gaussian::fit(f, what);
    let colour_fits = [fit(&a.colour, names.0)?, fit(&b.colour, names.1)?];
    let colour_terms = frechet_terms(&colour_fits[0], &colour_fits[1])?;
    Ok(FdScores {
        fd_alex: frechet_distance(&fit(&a.alex, names.0)?, &fit(&b.alex, names.1)?)?,
        fd_colour: colour_terms.distance(),
        colour_terms,
        colour_fits,
    })
}

/// What FD-Alex and colour-FD look like between *real* sets of a given size, `draws` times:
/// either a reference set B split at random into `n` images and the rest ([`split_floor`]), or
/// `n` images drawn from a pool of real images scored against a fixed set ([`draw_floor`]).
/// The distances of a finite sample are never 0 (their means and covariances are estimates);
/// this is the floor a set of n images — samples included — cannot be expected to beat.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitFloor {
    /// Images in each drawn set.
    pub n: usize,
    /// FD-Alex of each draw.
    pub fd_alex: Vec<f64>,
    /// colour-FD of each draw.
    pub fd_colour: Vec<f64>,
}

impl SplitFloor {
    /// The q-quantile (0 ≤ q ≤ 1, linear interpolation) of `values`; NaN when empty.
    pub fn quantile(values: &[f64], q: f64) -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let x = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
    }
}

/// The features of `set` at `idx`.
fn subset(set: &SetFeatures, idx: &[usize]) -> SetFeatures {
    SetFeatures {
        alex: idx.iter().map(|&i| set.alex[i].clone()).collect(),
        colour: idx.iter().map(|&i| set.colour[i].clone()).collect(),
    }
}

/// `draws` seeded uniform n-subsets of `0..len` (partial Fisher–Yates), each passed to
/// `score` with the indices left out; collects the scores into a [`SplitFloor`].
fn floor_draws(
    len: usize,
    n: usize,
    draws: usize,
    seed: u64,
    mut score: impl FnMut(&[usize], &[usize]) -> Result<FdScores, FdError>,
) -> Result<SplitFloor, FdError> {
    let mut rng = tweedie_core::NoiseSource::new(seed);
    let mut order: Vec<usize> = (0..len).collect();
    let (mut fd_alex, mut fd_colour) = (Vec::with_capacity(draws), Vec::with_capacity(draws));
    for _ in 0..draws {
        for i in 0..n {
            let j = i + rng.below(order.len() - i);
            order.swap(i, j);
        }
        let (part, rest) = order.split_at(n);
        let s = score(part, rest)?;
        fd_alex.push(s.fd_alex);
        fd_colour.push(s.fd_colour);
    }
    Ok(SplitFloor {
        n,
        fd_alex,
        fd_colour,
    })
}

/// [`SplitFloor`] of `b`: for each of `draws` draws (seeded), n images of `b` without
/// replacement against the other `b.len() − n`; needs 2 ≤ n ≤ b.len() − 2.
pub fn split_floor(
    b: &SetFeatures,
    n: usize,
    draws: usize,
    seed: u64,
) -> Result<SplitFloor, FdError> {
    if n < 2 || b.len() < n + 2 {
        return Err(FdError::TooFew {
            what: format!("a split of {} images into {n} and the rest", b.len()),
            n: n.min(b.len().saturating_sub(n)),
        });
    }
    floor_draws(b.len(), n, draws, seed, |part, rest| {
        fd_scores(
            &subset(b, part),
            &subset(b, rest),
            ("split part", "split rest"),
        )
    })
}

/// [`SplitFloor`] of real sets of n images drawn from `pool` (each draw seeded, without
/// replacement) against all of `reference`: what a set of n real images from `pool`'s
/// distribution scores against `reference`, e.g. 1,024 training faces against the held-out
/// faces that samples are scored against. Needs 2 ≤ n < pool.len() (a draw of the whole
/// pool would be the same every time) and 2 ≤ reference.len().
pub fn draw_floor(
    pool: &SetFeatures,
    reference: &SetFeatures,
    n: usize,
    draws: usize,
    seed: u64,
) -> Result<SplitFloor, FdError> {
    if n < 2 || pool.len() <= n {
        return Err(FdError::TooFew {
            what: format!("draws of {n} images from a pool of {}", pool.len()),
            n: pool.len(),
        });
    }
    floor_draws(pool.len(), n, draws, seed, |part, _| {
        fd_scores(&subset(pool, part), reference, ("floor draw", "reference"))
    })
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        let row = &mut out[i * d..(i + 1) * d];
        for k in 0..d {
            let aik = a[i * d + k];
            if aik == 0.0 {
                continue;
            }
            for (o, bk) in row.iter_mut().zip(&b[k * d..(k + 1) * d]) {
                *o += aik * bk;
            }
        }
    }
    out
}

fn symmetrize(m: &mut [f64], d: usize) {
    for i in 0..d {
        for j in i + 1..d {
            let v = 0.5 * (m[i * d + j] + m[j * d + i]);
            m[i * d + j] = v;
            m[j * d + i] = v;
        }
    }
}

/// The PSD square root V diag(√max(λ, 0)) Vᵀ of a symmetric `d × d` matrix.
fn sqrt_psd(a: &[f64], d: usize) -> Vec<f64> {
    let mut sym = a.to_vec();
    symmetrize(&mut sym, d);
    let (eig, v) = sym_eigen(sym, d);
    let r: Vec<f64> = eig.iter().map(|l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for j in i..d {
            let s: f64 = (0..d).map(|k| v[i * d + k] * r[k] * v[j * d + k]).sum();
            out[i * d + j] = s;
            out[j * d + i] = s;
        }
    }
    out
}

/// Eigenvalues and eigenvectors (columns of the row-major `V`, A = V diag(λ) Vᵀ) of a
/// symmetric `d × d` matrix by cyclic Jacobi rotations, to f64 precision.
fn sym_eigen(mut a: Vec<f64>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let norm2: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (i + 1..d).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        if off <= 1e-30 * norm2 || off == 0.0 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                // The smaller root of t² + 2θt − 1 = 0 (|rotation| ≤ π/4).
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A ← Jᵀ A J, V ← V J, J the rotation [[c, s], [−s, c]] in the (p, q) plane.
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1-D N(0, 1) features split 100 / 900: E[FD] ≈ (1/100 + 1/900) (means) +
    /// 1/(2·99) + 1/(2·899) (the two standard deviations' sampling variances) ≈ 0.0167.
    #[test]
    fn split_floor_matches_the_sampling_noise_of_gaussian_data() {
        let mut rng = tweedie_core::NoiseSource::new(11);
        let draws: Vec<f64> = rng.normal_vec(1000).into_iter().map(f64::from).collect();
        let set = SetFeatures {
            alex: draws.iter().map(|v| vec![*v]).collect(),
            colour: draws.iter().map(|v| vec![2.0 * v]).collect(),
        };
        let f = split_floor(&set, 100, 300, 5).unwrap();
        assert_eq!((f.n, f.fd_alex.len(), f.fd_colour.len()), (100, 300, 300));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let want = 1.0 / 100.0 + 1.0 / 900.0 + 1.0 / 198.0 + 1.0 / 1798.0;
        assert!(
            (mean(&f.fd_alex) / want - 1.0).abs() < 0.2,
            "{} vs {want}",
            mean(&f.fd_alex)
        );
        // Colour features are 2× the same values: FD scales by 4, draw for draw.
        for (a, c) in f.fd_alex.iter().zip(&f.fd_colour) {
            assert!((c - 4.0 * a).abs() < 1e-9 * (1.0 + c));
        }
        // Seeded: the same seed repeats, another differs.
        assert_eq!(
            split_floor(&set, 100, 3, 5).unwrap().fd_alex,
            f.fd_alex[..3]
        );
        assert_ne!(
            split_floor(&set, 100, 3, 6).unwrap().fd_alex,
            f.fd_alex[..3]
        );
        // Sizes that leave fewer than 2 images on a side are errors.
        assert!(split_floor(&set, 1, 3, 5).is_err() && split_floor(&set, 999, 3, 5).is_err());
        // draw_floor: 100 of a pool against a fixed reference of 900 drawn from the same
        // N(0, 1): E[FD] ≈ 1/100 + 1/900 + 1/198 + 1/1798 again, the reference's own
        // estimation error included (averaged over references, not over draws: ±20 %).
        let reference = SetFeatures {
            alex: set.alex[100..].to_vec(),
            colour: set.colour[100..].to_vec(),
        };
        let pool = {
            let mut rng = tweedie_core::NoiseSource::new(12);
            let v: Vec<f64> = rng.normal_vec(2000).into_iter().map(f64::from).collect();
            SetFeatures {
                alex: v.iter().map(|x| vec![*x]).collect(),
                colour: v.iter().map(|x| vec![2.0 * x]).collect(),
            }
        };
        let d = draw_floor(&pool, &reference, 100, 300, 5).unwrap();
        assert_eq!((d.n, d.fd_alex.len()), (100, 300));
        let m = mean(&d.fd_alex);
        assert!(m > 0.5 * want && m < 1.5 * want, "{m} vs {want}");
        // A pool shifted by 0.5 scores ≈ 0.25 more: the floor measures the pool against the
        // reference, not the pool against itself.
        let shifted = SetFeatures {
            alex: pool.alex.iter().map(|x| vec![x[0] + 0.5]).collect(),
            colour: pool.colour.clone(),
        };
        let ds = draw_floor(&shifted, &reference, 100, 50, 5).unwrap();
        assert!(
            (mean(&ds.fd_alex) - m - 0.25).abs() < 0.1,
            "{} vs {m}",
            mean(&ds.fd_alex)
        );
        assert_eq!(
            draw_floor(&pool, &reference, 100, 3, 5).unwrap().fd_alex,
            d.fd_alex[..3]
        );
        assert!(
            draw_floor(&pool, &reference, 1, 3, 5).is_err()
                && draw_floor(&pool, &reference, 2000, 3, 5).is_err()
        );
        assert_eq!(SplitFloor::quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(SplitFloor::quantile(&[1.0, 2.0], 0.25), 1.25);
    }
    use burn::tensor::Device;
    use tweedie_core::NoiseSource;

    fn random_spd(d: usize, seed: u64) -> Vec<f64> {
        let mut n = NoiseSource::new(seed);
        let g: Vec<f64> = (0..d * d).map(|_| n.uniform() * 2.0 - 1.0).collect();
        // G Gᵀ + 0.1 I
        let mut m = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                m[i * d + j] = (0..d).map(|k| g[i * d + k] * g[j * d + k]).sum::<f64>();
            }
            m[i * d + i] += 0.1;
        }
        m
    }

    #[test]
    fn jacobi_reconstructs_and_sqrt_squares_back() {
        let d = 12;
        let a = random_spd(d, 3);
        let (eig, v) = sym_eigen(a.clone(), d);
        // A = V Λ Vᵀ and VᵀV = I.
        for i in 0..d {
            for j in 0..d {
                let r: f64 = (0..d).map(|k| v[i * d + k] * eig[k] * v[j * d + k]).sum();
                assert!((r - a[i * d + j]).abs() < 1e-10, "{r} vs {}", a[i * d + j]);
                let o: f64 = (0..d).map(|k| v[k * d + i] * v[k * d + j]).sum();
                assert!((o - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        let s = sqrt_psd(&a, d);
        let back = matmul(&s, &s, d);
        for (x, y) in back.iter().zip(&a) {
            assert!((x - y).abs() < 1e-10, "{x} vs {y}");
        }
    }

    #[test]
    fn fd_matches_the_formula_on_diagonal_and_one_dimensional_cases() {
        // Diagonal: FD = ‖μ₁ − μ₂‖² + Σᵢ (√a_i − √b_i)².
        let a = Gaussian {
            mean: vec![1.0, 2.0, -1.0],
            cov: vec![4.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.25],
            n: 5,
        };
        let b = Gaussian {
            mean: vec![0.0, 2.5, 1.0],
            cov: vec![1.0, 0.0, 0.0, 0.0, 16.0, 0.0, 0.0, 0.0, 0.0],
            n: 5,
        };
        let want = (1.0 + 0.25 + 4.0) + (1.0 + 1.0 + 0.25);
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        // Symmetric in its arguments.
        assert!((frechet_distance(&b, &a).unwrap() - want).abs() < 1e-12);
        // A rotated copy of both (Σ → R Σ Rᵀ, μ → R μ) leaves FD unchanged, exercising the
        // non-diagonal path: rotate by 30° in the (0, 1) plane.
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let r = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let rt = [c, s, 0.0, -s, c, 0.0, 0.0, 0.0, 1.0];
        let rot = |g: &Gaussian| Gaussian {
            mean: (0..3)
                .map(|i| (0..3).map(|k| r[i * 3 + k] * g.mean[k]).sum())
                .collect(),
            cov: matmul(&matmul(&r, &g.cov, 3), &rt, 3),
            n: g.n,
        };
        let got = frechet_distance(&rot(&a), &rot(&b)).unwrap();
        assert!((got - want).abs() < 1e-10, "{got} vs {want}");
        // Fitting: samples {0, 2} give μ = 1, σ² = 2; {1, 2, 3}: μ = 2, σ² = 1.
        let ga = Gaussian::fit(&[vec![0.0], vec![2.0]], "a").unwrap();
        let gb = Gaussian::fit(&[vec![1.0], vec![2.0], vec![3.0]], "b").unwrap();
        assert_eq!(
            (ga.mean[0], ga.cov[0], gb.mean[0], gb.cov[0]),
            (1.0, 2.0, 2.0, 1.0)
        );
        let want = 1.0 + (2f64.sqrt() - 1.0).powi(2);
        assert!((frechet_distance(&ga, &gb).unwrap() - want).abs() < 1e-12);
        // Errors: too few samples, mismatched dimensions.
        assert!(matches!(
            Gaussian::fit(&[vec![1.0]], "x"),
            Err(FdError::TooFew { n: 1, .. })
        ));
        assert!(frechet_distance(&ga, &a).is_err());
    }

    #[test]
    fn terms_split_a_shift_from_a_wider_spread() {
        // Σ₁ = s²Σ₂ (a full, non-diagonal Σ₂), same mean: the whole FD is in the covariance
        // term, (s − 1)² tr Σ₂; a shift δ adds ‖δ‖² to the mean term only.
        let d = 3;
        let cov = random_spd(d, 5);
        let tr: f64 = (0..d).map(|i| cov[i * d + i]).sum();
        let narrow = Gaussian {
            mean: vec![0.5, 0.4, 0.3],
            cov: cov.clone(),
            n: 10,
        };
        let wide = Gaussian {
            cov: cov.iter().map(|v| v * 1.1 * 1.1).collect(),
            ..narrow.clone()
        };
        let t = frechet_terms(&wide, &narrow).unwrap();
        assert!(
            t.mean == 0.0 && (t.covariance - 0.01 * tr).abs() < 1e-10,
            "{t:?}"
        );
        let shifted = Gaussian {
            mean: vec![0.6, 0.4, 0.1],
            ..wide.clone()
        };
        let t = frechet_terms(&shifted, &narrow).unwrap();
        assert!((t.mean - 0.05).abs() < 1e-12, "{t:?}");
        assert!((t.covariance - 0.01 * tr).abs() < 1e-10, "{t:?}");
        // Covariances that do not commute: 2×2 closed form, tr √M = √(tr M + 2√det M) for
        // M = Σ₁Σ₂ (its eigenvalues are those of the SPD Σ₁^{1/2} Σ₂ Σ₁^{1/2}).
        let (s1, s2) = (random_spd(2, 5), random_spd(2, 6));
        let m = matmul(&s1, &s2, 2);
        assert!(
            (m[1] - matmul(&s2, &s1, 2)[1]).abs() > 1e-3,
            "the pair commutes"
        );
        let det = m[0] * m[3] - m[1] * m[2];
        let tr_sqrt = (m[0] + m[3] + 2.0 * det.sqrt()).sqrt();
        let want = s1[0] + s1[3] + s2[0] + s2[3] - 2.0 * tr_sqrt;
        let g = |cov: Vec<f64>| Gaussian {
            mean: vec![0.0, 0.0],
            cov,
            n: 10,
        };
        let t = frechet_terms(&g(s1), &g(s2)).unwrap();
        assert!(
            t.mean == 0.0 && (t.covariance - want).abs() < 1e-10,
            "{t:?} vs {want}"
        );
    }

    #[test]
    fn fd_is_zero_for_identical_sets_and_grows_with_a_colour_cast() {
        let device = Device::flex();
        let net = Lpips::alex_default(&device).unwrap();
        let mut noise = NoiseSource::new(7);
        // 12 smooth-ish random 32×32 images: noise plus a per-image colour offset.
        let base = noise.normal([12, 3, 32, 32], &device).mul_scalar(0.3)
            + noise.normal([12, 3, 1, 1], &device).mul_scalar(0.2);
        let x = base.clamp(-0.9, 0.9);
        let mut a = SetFeatures::new();
        a.add(&net, &x, 5).unwrap();
        assert_eq!((a.len(), a.alex[0].len(), a.colour[0].len()), (12, 256, 3));
        // Batching does not change the features.
        let mut whole = SetFeatures::new();
        whole.add(&net, &x, 12).unwrap();
        for (u, v) in a.alex.iter().flatten().zip(whole.alex.iter().flatten()) {
            assert!((u - v).abs() < 1e-4 * v.abs().max(1.0), "{u} vs {v}");
        }
        let same = fd_scores(&a, &a, ("a", "a")).unwrap();
        assert!(
            same.fd_alex.abs() < 1e-6 && same.fd_colour.abs() < 1e-9,
            "{same:?}"
        );
        // The same images with a red cast (+0.1 on [0, 1] = +0.2 on [−1, 1] in red).
        let shift = tweedie_core::tensor::from_vec(vec![0.2, 0.0, 0.0], [1, 3, 1, 1], &device);
        let mut b = SetFeatures::new();
        b.add(&net, &(x.clone() + shift), 12).unwrap();
        let cast = fd_scores(&a, &b, ("a", "cast")).unwrap();
        // Mean RGB moves by exactly (0.1, 0, 0), covariance unchanged: colour-FD = 0.01.
        assert!((cast.fd_colour - 0.01).abs() < 1e-5, "{cast:?}");
        let t = cast.colour_terms;
        assert!((t.mean - 0.01).abs() < 1e-5 && t.covariance < 1e-9, "{t:?}");
        let m = &cast.colour_fits[1].mean;
        assert!(
            (m[0] - cast.colour_fits[0].mean[0] - 0.1).abs() < 1e-6,
            "{m:?}"
        );
        assert!(cast.fd_alex > 100.0 * same.fd_alex.max(1e-6), "{cast:?}");
        // One image has no covariance.
        let mut one = SetFeatures::new();
        one.add(&net, &x.clone().narrow(0, 0, 1), 4).unwrap();
        assert!(fd_scores(&one, &a, ("one", "a")).is_err());
    }
}
