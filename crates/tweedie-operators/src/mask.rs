//! Inpainting: multiplication by a binary mask (1 = observed, 0 = missing).

use crate::{Operator, OperatorError};
use burn::tensor::{Device, Tensor};
use std::path::Path;
use tweedie_core::NoiseSource;
use tweedie_io::{Image, load_image, save_png};

/// A pixel mask `[1, 1, H, W]`, shared by all channels and batch items. Self-adjoint and
/// idempotent, so A⁺ = Aᵀ = A.
#[derive(Debug, Clone)]
pub struct Mask {
    mask: Tensor<4>,
    label: String,
}

impl Mask {
    /// Builds a mask from host values (1 = keep, 0 = drop), row-major `height × width`.
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

    /// A `box_h × box_w` hole with its top-left corner at (`top`, `left`).
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
                format!("{box_h}×{box_w} at ({top}, {left})"),
                format!("must be non-empty and fit inside the {height}×{width} image"),
            ));
        }
        let mut v = vec![1f32; height * width];
        for y in top..top + box_h {
            for x in left..left + box_w {
                v[y * width + x] = 0.0;
            }
        }
        Ok(Self::from_values(
            v,
            height,
            width,
            format!("box {box_h}×{box_w}"),
            device,
        ))
    }

    /// A `box_size²` hole at a random position at least `margin` pixels from the border
    /// (DPS: 128×128 on 256×256 with margin 16).
    pub fn random_box(
        height: usize,
        width: usize,
        box_size: usize,
        margin: usize,
        noise: &mut NoiseSource,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        if box_size == 0 || box_size + 2 * margin > height.min(width) {
            return Err(OperatorError::invalid(
                "box_size",
                box_size,
                format!("box plus 2×margin ({margin}) must fit inside {height}×{width}"),
            ));
        }
        let top = margin + noise.below(height - box_size - 2 * margin + 1);
        let left = margin + noise.below(width - box_size - 2 * margin + 1);
        Self::boxed(height, width, box_size, box_size, top, left, device)
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

    /// Drops each pixel independently with probability `drop` (DPS samples 0.3–0.7).
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
        Ok(Self::from_values(
            v,
            height,
            width,
            format!("random {:.0}% missing", drop * 100.0),
            device,
        ))
    }

    /// Loads a mask image (white = observed, black = missing; thresholded at mid-grey).
    /// Its size must be `height × width`.
    pub fn load(
        path: impl AsRef<Path>,
        height: usize,
        width: usize,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        let path = path.as_ref();
        let img = load_image(path)?;
        if (img.height, img.width) != (height, width) {
            return Err(OperatorError::invalid(
                "mask",
                path.display(),
                format!(
                    "is {}×{} but the images are {height}×{width}",
                    img.height, img.width
                ),
            ));
        }
        let n = height * width;
        let v = (0..n)
            .map(|i| {
                if img.data[i] + img.data[n + i] + img.data[2 * n + i] > 0.0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Self::from_values(
            v,
            height,
            width,
            format!(
                "mask {}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
            device,
        ))
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

impl Operator for Mask {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let m = self.mask.clone().to_device(&x.device());
        x * m
    }
    fn adjoint(&self, y: Tensor<4>) -> Tensor<4> {
        self.forward(y)
    }
    fn pseudo_inverse(&self, y: Tensor<4>) -> Option<Tensor<4>> {
        Some(self.forward(y))
    }
    fn describe(&self) -> String {
        format!("inpainting ({})", self.label)
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
        assert!(err.contains("12×10"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
