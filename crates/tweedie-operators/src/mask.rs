//! Inpainting: multiplication by a binary mask (1 = observed, 0 = missing).

use crate::{Operator, OperatorError};
use burn::tensor::{Device, Tensor};
use image::DynamicImage;
use std::path::{Path, PathBuf};
use tweedie_core::NoiseSource;
use tweedie_io::{Image, ImageLimits, load_dynamic_image, save_png};

/// A pixel mask `[1, 1, H, W]`, shared by all channels and batch items. Self-adjoint, and for a
/// binary mask idempotent, so A⁺ = Aᵀ = A. (`A⁺` and `prox_l2` are written for any diagonal
/// `m`, binary or not.)
#[derive(Debug, Clone)]
pub struct Mask {
    mask: Tensor<4>,
    label: String,
}

impl Mask {
    /// Builds a mask from host values (1 = keep, 0 = drop), row-major `height × width`, as
    /// given (not checked: every other constructor refuses a mask that observes nothing).
    pub fn from_values(
        values: Vec<f32>,
        height: usize,
        width: usize,
        label: String,
        device: &Device,
    ) -> Self {
        let mask = tweedie_core::tensor::from_vec(values, [1, 1, height, width], device);
        Self { mask, label }
    }

    /// [`Mask::from_values`] for a mask that must observe something: refused, naming
    /// `label`, when every value is 0.
    fn checked(
        values: Vec<f32>,
        height: usize,
        width: usize,
        label: String,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        let observed = values.iter().filter(|m| **m != 0.0).count();
        if observed == 0 {
            return Err(OperatorError::invalid(
                "mask",
                label,
                format!(
                    "observes no pixel of the {width}×{height} (W×H) image: the measurement \
                     would carry nothing and the result would be an unconditional sample"
                ),
            ));
        }
        Ok(Self::from_values(values, height, width, label, device))
    }

    /// A `box_h × box_w` hole with its top-left corner at (`top`, `left`); a hole that covers
    /// the whole image (nothing observed) is refused.
    pub fn boxed(
        height: usize,
        width: usize,
        box_h: usize,
        box_w: usize,
        top: usize,
        left: usize,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        if box_h == 0 || box_w == 0 || top + box_h > height || left + box_w > width {
            return Err(OperatorError::invalid(
                "box",
                format!("{box_w}×{box_h} (W×H) at x = {left}, y = {top}"),
                format!("must be non-empty and fit inside the {width}×{height} (W×H) image"),
            ));
        }
        let mut v = vec![1f32; height * width];
        for y in top..top + box_h {
            for x in left..left + box_w {
                v[y * width + x] = 0.0;
            }
        }
        Self::checked(v, height, width, format!("box {box_h}×{box_w}"), device)
    }

    /// A `box_size²` hole placed as DPS's `random_sq_bbox(mask_shape=(s, s), margin=(m, m))`:
    /// top `t ~ U{m, …, H − m − s − 1}` and left `l ~ U{m, …, W − m − s − 1}` (NumPy's
    /// `randint(m, H − m − s)`, upper end excluded, so the hole is ≥ m pixels from the top/left
    /// border and ≥ m + 1 from the bottom/right). DPS: 128×128 on 256×256 with m = 16.
    pub fn random_box(
        height: usize,
        width: usize,
        box_size: usize,
        margin: usize,
        noise: &mut NoiseSource,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        if box_size == 0 {
            return Err(OperatorError::invalid("box_size", box_size, "must be ≥ 1"));
        }
        let (top, left) = random_sq_bbox(height, width, box_size, box_size, margin, noise)?;
        Self::boxed(height, width, box_size, box_size, top, left, device)
    }

    /// DPS's `mask_generator(mask_type="box")`: a `h × w` hole with `h, w ~ U{min_size, …,
    /// max_size}` drawn independently (DPS's `mask_len_range = (lo, hi)` is `min_size = lo`,
    /// `max_size = hi − 1`: NumPy's `randint` excludes `hi`), then placed by
    /// [`Mask::random_box`]'s rule with margin `m` (DPS: sizes 128..=128, m = 16 at 256²).
    pub fn random_sized_box(
        height: usize,
        width: usize,
        min_size: usize,
        max_size: usize,
        margin: usize,
        noise: &mut NoiseSource,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        if min_size == 0 || min_size > max_size {
            return Err(OperatorError::invalid(
                "box size range",
                format!("{min_size}..={max_size}"),
                "needs 1 ≤ min_size ≤ max_size",
            ));
        }
        let box_h = min_size + noise.below(max_size - min_size + 1);
        let box_w = min_size + noise.below(max_size - min_size + 1);
        let (top, left) = random_sq_bbox(height, width, box_h, box_w, margin, noise)?;
        Self::boxed(height, width, box_h, box_w, top, left, device)
    }

    /// A centred `box_size²` hole.
    pub fn center_box(
        height: usize,
        width: usize,
        box_size: usize,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        if box_size == 0 || box_size > height.min(width) {
            return Err(OperatorError::invalid(
                "box_size",
                box_size,
                format!("must lie in 1..={}", height.min(width)),
            ));
        }
        Self::boxed(
            height,
            width,
            box_size,
            box_size,
            (height - box_size) / 2,
            (width - box_size) / 2,
            device,
        )
    }

    /// Drops each pixel independently with probability `drop` (Bernoulli: the number missing
    /// varies; DPS's exact-count rule is [`Mask::random_pixels_range`]).
    pub fn random_pixels(
        height: usize,
        width: usize,
        drop: f64,
        noise: &mut NoiseSource,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        if !(0.0..1.0).contains(&drop) {
            return Err(OperatorError::invalid("drop", drop, "must lie in [0, 1)"));
        }
        let v = (0..height * width)
            .map(|_| if noise.uniform() < drop { 0.0 } else { 1.0 })
            .collect();
        Self::checked(
            v,
            height,
            width,
            format!("random {:.0}% missing", drop * 100.0),
            device,
        )
    }

    /// Drops exactly `⌊H·W·drop⌋` pixels chosen uniformly without replacement (DPS's
    /// `np.random.choice(N, int(N·p), replace=False)`), the same on every channel.
    pub fn random_pixels_exact(
        height: usize,
        width: usize,
        drop: f64,
        noise: &mut NoiseSource,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        if !(0.0..1.0).contains(&drop) {
            return Err(OperatorError::invalid("drop", drop, "must lie in [0, 1)"));
        }
        let n = height * width;
        let count = (n as f64 * drop) as usize;
        // Partial Fisher–Yates: the first `count` entries of a random permutation.
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..count {
            let j = i + noise.below(n - i);
            idx.swap(i, j);
        }
        let mut v = vec![1f32; n];
        for &i in &idx[..count] {
            v[i] = 0.0;
        }
        Self::checked(
            v,
            height,
            width,
            format!("random {count} of {n} pixels missing"),
            device,
        )
    }

    /// DPS's `mask_generator(mask_type="random")`: a drop ratio `p ~ U(min_drop, max_drop)`
    /// (DPS: 0.3, 0.7), then exactly `⌊H·W·p⌋` pixels dropped ([`Mask::random_pixels_exact`]).
    pub fn random_pixels_range(
        height: usize,
        width: usize,
        min_drop: f64,
        max_drop: f64,
        noise: &mut NoiseSource,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        if !(0.0 <= min_drop && min_drop <= max_drop && max_drop < 1.0) {
            return Err(OperatorError::invalid(
                "drop range",
                format!("[{min_drop}, {max_drop})"),
                "needs 0 ≤ min_drop ≤ max_drop < 1",
            ));
        }
        let p = min_drop + (max_drop - min_drop) * noise.uniform();
        Self::random_pixels_exact(height, width, p, noise, device)
    }

    /// Loads a mask image (PNG or JPEG, grey or colour, 8 or 16 bits, with or without alpha;
    /// its EXIF orientation applied) of size `height × width`, by one rule:
    ///
    /// 1. **Alpha.** When the image has an alpha channel that is not opaque everywhere, the
    ///    alpha channel alone is the mask: alpha = 0 (fully transparent) is missing, any other
    ///    alpha observed, whatever the colour (a hole erased to transparency, on a white
    ///    layer or on the photo itself).
    /// 2. **0/1 masks.** Otherwise, when the largest value in the file is 1 (a NumPy `uint8`
    ///    array of 0s and 1s saved as an image), 1 is observed and 0 missing.
    /// 3. **Grey levels.** Otherwise a pixel is observed where the mean of its colour values
    ///    is above mid-grey (above 127.5 of 255 at 8 bits): white = observed, black = missing.
    ///
    /// A mask with no observed pixel is refused (the measurement would then carry nothing,
    /// and a "restoration" would be an unconditional sample). The rule used and the
    /// observed fraction are in the operator's [`describe`](Operator::describe) text, which
    /// the CLI's JSON records.
    pub fn load(
        path: impl AsRef<Path>,
        height: usize,
        width: usize,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        let path = path.as_ref();
        let img = load_dynamic_image(path, &ImageLimits::from_env()?)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if (h, w) != (height, width) {
            return Err(OperatorError::invalid(
                "mask",
                path.display(),
                format!("is {w}×{h} but the images are {width}×{height} (width×height)"),
            ));
        }
        let (v, rule) = mask_values(&img);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if v.iter().all(|m| *m == 0.0) {
            return Err(OperatorError::invalid(
                "mask",
                path.display(),
                format!(
                    "marks no pixel as observed: {}. The measurement would carry nothing and \
                     the result would be an unconditional sample. The rule: where the image \
                     has transparency, alpha 0 = missing; else in a file whose largest value \
                     is 1, 1 = observed; else brighter than mid-grey = observed (white = \
                     observed, black = missing)",
                    rule.why_empty()
                ),
            ));
        }
        let percent = 100.0 * v.iter().filter(|m| **m != 0.0).count() as f64 / v.len() as f64;
        let label = format!("mask {name}: {}, {percent:.1}% observed", rule.label());
        Self::checked(v, height, width, label, device)
    }

    /// Saves the mask as a black/white PNG that [`Mask::load`] reads back exactly.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), OperatorError> {
        let [_, _, h, w] = self.mask.dims();
        let v = tweedie_core::tensor::to_vec(&self.mask);
        let mut data = Vec::with_capacity(3 * h * w);
        for _ in 0..3 {
            data.extend(v.iter().map(|m| m * 2.0 - 1.0));
        }
        Ok(save_png(
            &Image {
                width: w,
                height: h,
                data,
            },
            path,
        )?)
    }

    /// The mask tensor `[1, 1, H, W]`.
    pub fn tensor(&self) -> &Tensor<4> {
        &self.mask
    }

    /// Fraction of observed pixels.
    pub fn observed_fraction(&self) -> f64 {
        let v = tweedie_core::tensor::to_vec(&self.mask);
        v.iter().map(|m| *m as f64).sum::<f64>() / v.len() as f64
    }
}

/// Which part of [`Mask::load`]'s rule read a mask file.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MaskRule {
    /// Alpha = 0 is missing.
    Alpha,
    /// A 0/1 file: 1 is observed.
    ZeroOne,
    /// Brighter than mid-grey is observed; `max` is the file's largest value of `white`.
    Grey { max: f64, white: f64 },
}

impl MaskRule {
    fn label(self) -> String {
        match self {
            MaskRule::Alpha => "alpha 0 = missing".into(),
            MaskRule::ZeroOne => "0/1 values".into(),
            MaskRule::Grey { .. } => "above mid-grey = observed".into(),
        }
    }

    /// Why a mask read by this rule came out empty.
    fn why_empty(self) -> String {
        match self {
            MaskRule::Alpha => "its alpha channel is 0 everywhere".into(),
            MaskRule::ZeroOne => "it holds only 0s".into(),
            MaskRule::Grey { max: 0.0, .. } => "it is black everywhere".into(),
            MaskRule::Grey { max, white } => format!(
                "no pixel is brighter than mid-grey: its largest value is {max} of {white}; \
                 scale it so that observed pixels are white"
            ),
        }
    }
}

/// The mask values (1 observed, 0 missing, row-major) of a mask image by [`Mask::load`]'s
/// rule, and which part of the rule decided.
fn mask_values(img: &DynamicImage) -> (Vec<f32>, MaskRule) {
    let colour = img.color();
    // The format's white: 255 at 8 bits, 65535 at 16, 1 for floating point.
    let white = match colour.bytes_per_pixel() / colour.channel_count() {
        1 => 255.0,
        2 => 65535.0,
        _ => 1.0,
    };
    let rgba = img.to_rgba32f();
    if colour.has_alpha() && rgba.pixels().any(|p| p.0[3] < 1.0) {
        let v = rgba.pixels().map(|p| f32::from(p.0[3] > 0.0)).collect();
        return (v, MaskRule::Alpha);
    }
    let max = rgba
        .pixels()
        .flat_map(|p| p.0[..3].iter().copied())
        .fold(0f32, f32::max);
    let max_raw = (f64::from(max) * white).round();
    // Mean of the colour values, in the format's [0, 1]; a 0/1 file's 1 is 1/white.
    let (scale, rule) = if white > 1.0 && max_raw == 1.0 {
        (white as f32, MaskRule::ZeroOne)
    } else {
        (
            1.0,
            MaskRule::Grey {
                max: max_raw,
                white,
            },
        )
    };
    let v = rgba
        .pixels()
        .map(|p| f32::from((p.0[0] + p.0[1] + p.0[2]) * scale > 1.5))
        .collect();
    (v, rule)
}

/// DPS's `random_sq_bbox` position for an `box_h × box_w` hole: `(top, left)` with
/// `top ~ U{m, …, H − m − box_h − 1}`, `left ~ U{m, …, W − m − box_w − 1}` (drawn in that order).
fn random_sq_bbox(
    height: usize,
    width: usize,
    box_h: usize,
    box_w: usize,
    margin: usize,
    noise: &mut NoiseSource,
) -> Result<(usize, usize), OperatorError> {
    let max_t = height as i64 - margin as i64 - box_h as i64;
    let max_l = width as i64 - margin as i64 - box_w as i64;
    if max_t <= margin as i64 || max_l <= margin as i64 {
        return Err(OperatorError::invalid(
            "box",
            format!("{box_w}×{box_h} (W×H) with margin {margin}"),
            format!(
                "needs box + 2×margin < image side ({width}×{height}, W×H): DPS draws the corner in [margin, side − margin − box)"
            ),
        ));
    }
    let top = margin + noise.below((max_t - margin as i64) as usize);
    let left = margin + noise.below((max_l - margin as i64) as usize);
    Ok((top, left))
}

impl Operator for Mask {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let m = self.mask.clone().to_device(&x.device());
        x * m
    }
    fn adjoint(&self, y: Tensor<4>) -> Tensor<4> {
        self.forward(y)
    }
    /// `A⁺y = m y / m²` where `m ≠ 0`, else 0 (`= m ⊙ y` for a binary mask).
    fn pseudo_inverse(&self, y: Tensor<4>) -> Tensor<4> {
        let m = self.mask.clone().to_device(&y.device());
        let m2 = m.clone().powf_scalar(2.0);
        let zero = m2.clone().equal_elem(0.0);
        y * m / m2.mask_fill(zero, 1.0)
    }
    /// `x = (z + γ m y) / (1 + γ m²)` (`AᵀA = m²`; `= (z + γ m y)/(1 + γ m)` for a binary
    /// mask): observed pixels move towards `y`, missing ones keep `z`.
    fn prox_l2(&self, z: Tensor<4>, y: Tensor<4>, gamma: f64) -> Tensor<4> {
        crate::cg::check_gamma(gamma);
        let m = self.mask.clone().to_device(&y.device());
        let den = m.clone().powf_scalar(2.0).mul_scalar(gamma).add_scalar(1.0);
        (z + y * m.mul_scalar(gamma)) / den
    }
    fn describe(&self) -> String {
        format!("inpainting ({})", self.label)
    }

    fn save_params(&self, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, OperatorError> {
        let path = dir.join(format!("{stem}_mask.png"));
        self.save(&path)?;
        Ok(vec![path])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::adjoint_error;

    #[test]
    fn masks_are_self_adjoint_and_idempotent() {
        let d = Device::flex();
        let mut n = NoiseSource::new(3);
        for m in [
            Mask::boxed(16, 16, 8, 8, 4, 4, &d).unwrap(),
            Mask::random_box(16, 16, 8, 2, &mut n, &d).unwrap(),
            Mask::random_pixels(16, 16, 0.5, &mut n, &d).unwrap(),
        ] {
            assert!(adjoint_error(&m, [2, 3, 16, 16], 5) < 1e-5);
            let x = n.normal([1, 3, 16, 16], &d);
            let once = m.forward(x.clone());
            let twice = m.forward(once.clone());
            assert_eq!(
                tweedie_core::tensor::to_vec(&once),
                tweedie_core::tensor::to_vec(&twice)
            );
        }
    }

    #[test]
    fn box_mask_hides_exactly_the_box() {
        let d = Device::flex();
        let m = Mask::boxed(8, 8, 2, 3, 1, 2, &d).unwrap();
        assert!((m.observed_fraction() - (64.0 - 6.0) / 64.0).abs() < 1e-12);
        assert!(Mask::boxed(8, 8, 4, 4, 6, 0, &d).is_err());
        assert!(Mask::random_pixels(8, 8, 1.0, &mut NoiseSource::new(1), &d).is_err());
    }

    #[test]
    fn random_masks_are_seeded() {
        let d = Device::flex();
        let a = Mask::random_pixels(16, 16, 0.5, &mut NoiseSource::new(9), &d).unwrap();
        let b = Mask::random_pixels(16, 16, 0.5, &mut NoiseSource::new(9), &d).unwrap();
        assert_eq!(
            tweedie_core::tensor::to_vec(a.tensor()),
            tweedie_core::tensor::to_vec(b.tensor())
        );
        let frac = a.observed_fraction();
        assert!((frac - 0.5).abs() < 0.15, "{frac}");
    }

    #[test]
    fn mask_png_round_trips_and_wrong_size_is_rejected() {
        let d = Device::flex();
        let dir = std::env::temp_dir().join(format!("tweedie-mask-{}", std::process::id()));
        let path = dir.join("mask.png");
        let m = Mask::random_pixels(12, 10, 0.4, &mut NoiseSource::new(2), &d).unwrap();
        m.save(&path).unwrap();
        let back = Mask::load(&path, 12, 10, &d).unwrap();
        assert_eq!(
            tweedie_core::tensor::to_vec(m.tensor()),
            tweedie_core::tensor::to_vec(back.tensor())
        );
        let err = Mask::load(&path, 16, 16, &d).unwrap_err().to_string();
        // Sizes are width×height, as everywhere else: the mask is 10 wide and 12 high.
        assert!(err.contains("is 10×12"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    /// The hole of a box mask: (top, left, height, width).
    fn hole(m: &Mask) -> (usize, usize, usize, usize) {
        let [_, _, h, w] = m.tensor().dims();
        let v = tweedie_core::tensor::to_vec(m.tensor());
        let zeros: Vec<(usize, usize)> = (0..h * w)
            .filter(|&i| v[i] == 0.0)
            .map(|i| (i / w, i % w))
            .collect();
        let top = zeros.iter().map(|z| z.0).min().unwrap();
        let left = zeros.iter().map(|z| z.1).min().unwrap();
        let bh = zeros.iter().map(|z| z.0).max().unwrap() + 1 - top;
        let bw = zeros.iter().map(|z| z.1).max().unwrap() + 1 - left;
        assert_eq!(zeros.len(), bh * bw, "the hole is a rectangle");
        (top, left, bh, bw)
    }

    #[test]
    fn random_box_is_placed_like_random_sq_bbox() {
        // DPS: t = randint(m, H − m − s), i.e. t ∈ [m, H − m − s − 1].
        let d = Device::flex();
        let (side, size, margin) = (20, 8, 3);
        let mut n = NoiseSource::new(4);
        let (mut tops, mut lefts) = (Vec::new(), Vec::new());
        for _ in 0..400 {
            let m = Mask::random_box(side, side, size, margin, &mut n, &d).unwrap();
            let (t, l, bh, bw) = hole(&m);
            assert_eq!((bh, bw), (size, size));
            tops.push(t);
            lefts.push(l);
        }
        for v in [&tops, &lefts] {
            assert_eq!(*v.iter().min().unwrap(), margin);
            assert_eq!(*v.iter().max().unwrap(), side - margin - size - 1);
        }
        // Box + 2·margin must be smaller than the side (DPS's randint needs low < high).
        assert!(Mask::random_box(14, 14, 8, 3, &mut n, &d).is_err());
        assert!(Mask::random_box(15, 15, 8, 3, &mut n, &d).is_ok());
    }

    #[test]
    fn random_sized_box_draws_sides_then_position() {
        let d = Device::flex();
        let mut n = NoiseSource::new(8);
        let (h, w, margin) = (32, 24, 2);
        let mut sides = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let m = Mask::random_sized_box(h, w, 4, 7, margin, &mut n, &d).unwrap();
            let (t, l, bh, bw) = hole(&m);
            assert!((4..=7).contains(&bh) && (4..=7).contains(&bw));
            assert!(t >= margin && t + bh < h - margin);
            assert!(l >= margin && l + bw < w - margin);
            sides.insert(bh);
            sides.insert(bw);
            assert!(adjoint_error(&m, [1, 3, h, w], 1) < 1e-6);
        }
        assert_eq!(sides.into_iter().collect::<Vec<_>>(), vec![4, 5, 6, 7]);
        assert!(Mask::random_sized_box(32, 32, 5, 4, 2, &mut n, &d).is_err());
        assert!(Mask::random_sized_box(32, 32, 0, 4, 2, &mut n, &d).is_err());
    }

    #[test]
    fn random_pixel_masks_drop_an_exact_count() {
        let d = Device::flex();
        let (h, w) = (17, 13);
        let n_px = h * w;
        for drop in [0.0, 0.3, 0.5, 0.7, 0.99] {
            let m = Mask::random_pixels_exact(h, w, drop, &mut NoiseSource::new(2), &d).unwrap();
            let missing = tweedie_core::tensor::to_vec(m.tensor())
                .iter()
                .filter(|v| **v == 0.0)
                .count();
            assert_eq!(missing, (n_px as f64 * drop) as usize, "drop {drop}");
        }
        // p ~ U(0.3, 0.7) is the first draw, then exactly ⌊N·p⌋ pixels.
        for seed in 0..20 {
            let p = 0.3 + 0.4 * NoiseSource::new(seed).uniform();
            let m =
                Mask::random_pixels_range(h, w, 0.3, 0.7, &mut NoiseSource::new(seed), &d).unwrap();
            let missing = tweedie_core::tensor::to_vec(m.tensor())
                .iter()
                .filter(|v| **v == 0.0)
                .count();
            assert_eq!(missing, (n_px as f64 * p) as usize, "seed {seed}");
            assert!(adjoint_error(&m, [2, 3, h, w], 3) < 1e-6);
        }
        let a = Mask::random_pixels_range(8, 8, 0.3, 0.7, &mut NoiseSource::new(1), &d).unwrap();
        let b = Mask::random_pixels_range(8, 8, 0.3, 0.7, &mut NoiseSource::new(1), &d).unwrap();
        assert_eq!(
            tweedie_core::tensor::to_vec(a.tensor()),
            tweedie_core::tensor::to_vec(b.tensor())
        );
        let mut n = NoiseSource::new(0);
        assert!(Mask::random_pixels_exact(8, 8, 1.0, &mut n, &d).is_err());
        assert!(Mask::random_pixels_range(8, 8, 0.7, 0.3, &mut n, &d).is_err());
        assert!(Mask::random_pixels_range(8, 8, 0.3, 1.0, &mut n, &d).is_err());
    }

    #[test]
    fn save_params_writes_a_loadable_mask() {
        let d = Device::flex();
        let dir = std::env::temp_dir().join(format!("tweedie-mask-params-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = Mask::random_pixels_range(12, 9, 0.3, 0.7, &mut NoiseSource::new(5), &d).unwrap();
        let files = m.save_params(&dir, "img3").unwrap();
        assert_eq!(files, vec![dir.join("img3_mask.png")]);
        let back = Mask::load(&files[0], 12, 9, &d).unwrap();
        assert_eq!(
            tweedie_core::tensor::to_vec(m.tensor()),
            tweedie_core::tensor::to_vec(back.tensor())
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
