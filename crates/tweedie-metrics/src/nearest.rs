//! Nearest training images, for memorisation checks: does a generative model's sample sit
//! closer to its training set than a held-out image does?
//!
//! Distances are pixel RMSE on the [0, 1] scale, √(mean((a − b)²))/2 for [−1, 1] values, to
//! each reference image and to its mirror image (training sees horizontal flips), whichever
//! is nearer.

/// One image's nearest reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// Index into the reference set.
    pub index: usize,
    /// Pixel RMSE on the [0, 1] scale.
    pub distance: f64,
    /// Whether the mirrored reference was the nearer one.
    pub flipped: bool,
}

/// Errors of [`nearest_pixel`].
#[derive(Debug, thiserror::Error)]
pub enum NearestError {
    /// An image does not hold `3·h·w` values.
    #[error("{what} image {index} holds {len} values, expected {expected} (3×{h}×{w})")]
    Size {
        /// Which set.
        what: &'static str,
        /// Its index.
        index: usize,
        /// Values it holds.
        len: usize,
        /// Values expected.
        expected: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
    /// The reference set is empty, or `k` is 0.
    #[error("nearest neighbours need ≥ 1 reference image and k ≥ 1 (got {refs} and k = {k})")]
    Empty {
        /// Reference images.
        refs: usize,
        /// Neighbours asked for.
        k: usize,
    },
}

/// The channel-major `3 × h × w` image mirrored left–right.
pub fn mirror(image: &[f32], h: usize, w: usize) -> Vec<f32> {
    let mut out = image.to_vec();
    for row in out.chunks_mut(w).take(3 * h) {
        row.reverse();
    }
    out
}

/// For every query, its `k` nearest references (fewer when there are fewer), nearest first:
/// RMSE to the reference or its mirror image, whichever is nearer. Images are channel-major
/// `3 × h × w` in [−1, 1].
pub fn nearest_pixel(
    queries: &[&[f32]],
    references: &[&[f32]],
    h: usize,
    w: usize,
    k: usize,
) -> Result<Vec<Vec<Neighbour>>, NearestError> {
    if references.is_empty() || k == 0 {
        return Err(NearestError::Empty {
            refs: references.len(),
            k,
        });
    }
    let expected = 3 * h * w;
    let check = |what, set: &[&[f32]]| {
        set.iter()
            .enumerate()
            .find(|(_, x)| x.len() != expected)
            .map_or(Ok(()), |(index, x)| {
                Err(NearestError::Size {
                    what,
                    index,
                    len: x.len(),
                    expected,
                    h,
                    w,
                })
            })
    };
    check("query", queries)?;
    check("reference", references)?;
    let sq = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let d = x - y;
                d * d
            })
            .sum::<f32>() as f64
    };
    let rmse = |ss: f64| (ss / expected as f64).sqrt() / 2.0;
    Ok(queries
        .iter()
        .map(|q| {
            // ‖q − mirror(r)‖ = ‖mirror(q) − r‖: mirror the query, not every reference.
            let mq = mirror(q, h, w);
            let mut all: Vec<Neighbour> = references
                .iter()
                .enumerate()
                .map(|(index, r)| {
                    let (plain, flip) = (sq(q, r), sq(&mq, r));
                    Neighbour {
                        index,
                        distance: rmse(plain.min(flip)),
                        flipped: flip < plain,
                    }
                })
                .collect();
            let k = k.min(all.len());
            all.select_nth_unstable_by(k - 1, |a, b| a.distance.total_cmp(&b.distance));
            all.truncate(k);
            all.sort_by(|a, b| a.distance.total_cmp(&b.distance));
            all
        })
        .collect())
}

/// Order statistics of a set of distances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistanceSummary {
    /// Number of values.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// 5th percentile (nearest rank).
    pub p05: f64,
    /// Median (nearest rank).
    pub median: f64,
    /// Mean.
    pub mean: f64,
}

impl DistanceSummary {
    /// Summarises `values` (`None` when empty or not all finite).
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Self {
            n: v.len(),
            min: v[0],
            p05: rank(0.05),
            median: rank(0.5),
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }
}

/// The fraction of `samples` strictly below `threshold` (e.g. the held-out set's smallest
/// or 5th-percentile nearest-training distance).
pub fn fraction_below(samples: &[f64], threshold: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().filter(|&&d| d < threshold).count() as f64 / samples.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(h: usize, w: usize, f: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
        let mut v = Vec::with_capacity(3 * h * w);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    v.push(f(c, y, x));
                }
            }
        }
        v
    }

    #[test]
    fn finds_the_exact_copy_and_the_mirror_image() {
        let (h, w) = (4, 5);
        let refs: Vec<Vec<f32>> = (0..6)
            .map(|i| {
                image(h, w, |c, y, x| {
                    ((i * 7 + c * 3 + y * 2 + x * x) % 11) as f32 / 5.5 - 1.0
                })
            })
            .collect();
        let r: Vec<&[f32]> = refs.iter().map(|v| v.as_slice()).collect();
        // A copy of reference 3, the mirror image of reference 4, and reference 1 + 0.1.
        let shifted: Vec<f32> = refs[1].iter().map(|v| v + 0.1).collect();
        let qs = [refs[3].clone(), mirror(&refs[4], h, w), shifted];
        let q: Vec<&[f32]> = qs.iter().map(|v| v.as_slice()).collect();
        let nn = nearest_pixel(&q, &r, h, w, 2).unwrap();
        assert_eq!(
            (nn[0][0].index, nn[0][0].distance, nn[0][0].flipped),
            (3, 0.0, false)
        );
        assert_eq!((nn[1][0].index, nn[1][0].flipped), (4, true));
        assert!(nn[1][0].distance < 1e-7);
        // RMSE of a uniform +0.1 shift in [−1, 1] is 0.05 on the [0, 1] scale.
        assert_eq!(nn[2][0].index, 1);
        assert!(
            (nn[2][0].distance - 0.05).abs() < 1e-6,
            "{}",
            nn[2][0].distance
        );
        // Nearest first, and k honoured.
        assert!(
            nn.iter()
                .all(|n| n.len() == 2 && n[0].distance <= n[1].distance)
        );
    }

    #[test]
    fn matches_brute_force_order() {
        let (h, w) = (3, 3);
        let refs: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                image(h, w, |c, y, x| {
                    ((i * 13 + c * 5 + y * 3 + x * 7) % 17) as f32 / 8.5 - 1.0
                })
            })
            .collect();
        let r: Vec<&[f32]> = refs.iter().map(|v| v.as_slice()).collect();
        let q = image(h, w, |c, y, x| ((c + 2 * y + 3 * x) % 5) as f32 / 2.5 - 1.0);
        let nn = nearest_pixel(&[&q], &r, h, w, 20).unwrap();
        let mut brute: Vec<f64> = refs
            .iter()
            .map(|r| {
                let m = mirror(r, h, w);
                let d = |b: &[f32]| {
                    (q.iter()
                        .zip(b)
                        .map(|(x, y)| ((x - y) as f64).powi(2))
                        .sum::<f64>()
                        / 27.0)
                        .sqrt()
                        / 2.0
                };
                d(r).min(d(&m))
            })
            .collect();
        brute.sort_by(f64::total_cmp);
        for (a, b) in nn[0].iter().zip(&brute) {
            assert!((a.distance - b).abs() < 1e-6);
        }
    }

    #[test]
    fn bad_sizes_and_empty_sets_are_errors() {
        let good = vec![0.0f32; 12];
        let bad = vec![0.0f32; 11];
        assert!(matches!(
            nearest_pixel(&[&bad], &[&good], 2, 2, 1),
            Err(NearestError::Size {
                index: 0,
                len: 11,
                ..
            })
        ));
        assert!(matches!(
            nearest_pixel(&[&good], &[], 2, 2, 1),
            Err(NearestError::Empty { .. })
        ));
        assert!(matches!(
            nearest_pixel(&[&good], &[&good], 2, 2, 0),
            Err(NearestError::Empty { .. })
        ));
    }

    #[test]
    fn summary_and_fraction() {
        let v: Vec<f64> = (1..=100).map(|i| i as f64).collect();
        let s = DistanceSummary::of(&v).unwrap();
        assert_eq!(
            (s.n, s.min, s.p05, s.median, s.mean),
            (100, 1.0, 5.0, 50.0, 50.5)
        );
        assert!(DistanceSummary::of(&[]).is_none());
        assert!(DistanceSummary::of(&[1.0, f64::NAN]).is_none());
        assert_eq!(fraction_below(&v, 11.0), 0.1);
    }
}
