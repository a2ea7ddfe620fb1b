//! Operator specifications: the serialisable description a CLI or experiment file gives,
//! turned into a concrete operator by [`build`].

use crate::{Blur, Downsample, Identity, Mask, Operator, OperatorError, Resizer};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tweedie_core::NoiseSource;

/// What measurement to simulate. Sizes are in pixels of the image being restored.
///
/// Serialised with an `op` tag (kebab-case variant name), e.g.
/// `{"op": "gaussian-blur", "size": 61, "sigma": 3.0}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OperatorSpec {
    /// No degradation (pure denoising). `op: "identity"`.
    Identity,
    /// A `size²` hole: centred, or at a random position (DPS's `random_sq_bbox` rule: corner in
    /// `[margin, side − margin − size)`). `op: "inpaint-box"`.
    InpaintBox {
        /// Side of the square hole.
        size: usize,
        /// `Some(margin)`: random position; `None`: centred.
        random_margin: Option<usize>,
    },
    /// Each pixel missing independently with probability `drop` (Bernoulli; the count varies).
    /// `op: "inpaint-random"`.
    InpaintRandom {
        /// Missing fraction in [0, 1).
        drop: f64,
    },
    /// DPS's random box (`mask_generator(mask_type="box")`): sides `h, w ~ U{min_size, …,
    /// max_size}`, corner by `random_sq_bbox` with `margin`. `op: "inpaint-random-box"`.
    InpaintRandomBox {
        /// Smallest side (DPS's `mask_len_range[0]`).
        min_size: usize,
        /// Largest side, inclusive (DPS's `mask_len_range[1] − 1`).
        max_size: usize,
        /// Margin to the border (DPS: 16 at 256²).
        margin: usize,
    },
    /// DPS's random pixels (`mask_generator(mask_type="random")`): `p ~ U(min_drop, max_drop)`,
    /// exactly `⌊H·W·p⌋` pixels missing. `op: "inpaint-random-range"`.
    InpaintRandomRange {
        /// Lower end of the drop ratio (DPS: 0.3).
        min_drop: f64,
        /// Upper end of the drop ratio (DPS: 0.7).
        max_drop: f64,
    },
    /// A user-supplied mask image (white = observed). `op: "inpaint-mask"`.
    InpaintMask {
        /// The mask PNG.
        path: PathBuf,
    },
    /// DPS's Gaussian blur: kernel = `scipy.ndimage.gaussian_filter` of a centred delta.
    /// `op: "gaussian-blur"`.
    GaussianBlur {
        /// Odd kernel size.
        size: usize,
        /// Standard deviation in pixels.
        sigma: f64,
    },
    /// Random motion blur (the `motionblur` package's `Kernel`, seeded). `op: "motion-blur"`.
    MotionBlur {
        /// Odd kernel size.
        size: usize,
        /// Trajectory intensity in [0, 1].
        intensity: f64,
    },
    /// Blur with a kernel from a file (`.npy`, safetensors, PNG or our JSON; see
    /// [`Blur::load`]), e.g. the kernel a DPS run used. `op: "kernel-blur"`.
    KernelBlur {
        /// The kernel file.
        path: PathBuf,
    },
    /// DPS's super-resolution: the antialiased bicubic `Resizer` by `1/factor`.
    /// `op: "super-resolution"`.
    SuperResolution {
        /// Integer factor.
        factor: usize,
    },
    /// DPS's bicubic `Resizer` at any scale in (0, 1] (output side ⌈side·scale⌉), e.g. the
    /// strength that matches ×4 at 256 px on a smaller image. `op: "super-resolution-scale"`.
    SuperResolutionScale {
        /// The scale factor (DPS's `Resizer` `scale_factor`), 0 < scale ≤ 1.
        scale: f64,
    },
    /// Box-filter downsampling (mean of `factor × factor` blocks). `op: "super-resolution-box"`.
    SuperResolutionBox {
        /// Integer factor.
        factor: usize,
    },
}

/// The names [`OperatorSpec::dps_default`] knows.
pub const DPS_OPERATOR_NAMES: &[&str] = &[
    "identity",
    "inpaint-box",
    "inpaint-random",
    "inpaint-random-box",
    "inpaint-random-range",
    "gaussian-blur",
    "motion-blur",
    "sr4",
    "sr4-box",
];

impl OperatorSpec {
    /// Whether the operator is a mask (inpainting: A = A², y is an image whose missing pixels
    /// carry nothing).
    pub fn is_mask(&self) -> bool {
        matches!(
            self,
            OperatorSpec::InpaintBox { .. }
                | OperatorSpec::InpaintRandom { .. }
                | OperatorSpec::InpaintRandomBox { .. }
                | OperatorSpec::InpaintRandomRange { .. }
                | OperatorSpec::InpaintMask { .. }
        )
    }

    /// The DPS paper's settings, scaled to an image of side `side` (their values are for 256):
    /// `name` ∈ [`DPS_OPERATOR_NAMES`]:
    /// - `identity`;
    /// - `inpaint-box`: a centred hole of side `side/2`;
    /// - `inpaint-random`: Bernoulli pixels, 70 % missing;
    /// - `inpaint-random-box`: DPS's box, side `side/2` (128 at 256), margin `16·side/256`;
    /// - `inpaint-random-range`: DPS's random pixels, `p ~ U(0.3, 0.7)`, exact count;
    /// - `gaussian-blur`: 61×61 scaled (odd, radius below the side), σ = 3·side/256;
    /// - `motion-blur`: 61×61 scaled, intensity 0.5;
    /// - `sr4`: DPS's bicubic `Resizer`, ×4; `sr4-box`: box filter, ×4.
    pub fn dps_default(name: &str, side: usize) -> Result<Self, OperatorError> {
        let scale = side as f64 / 256.0;
        let odd = |v: f64| {
            let k = v.round().max(1.0) as usize;
            if k.is_multiple_of(2) { k + 1 } else { k }
        };
        Ok(match name {
            "identity" => Self::Identity,
            "inpaint-box" => Self::InpaintBox {
                size: side / 2,
                random_margin: None,
            },
            "inpaint-random" => Self::InpaintRandom { drop: 0.7 },
            "inpaint-random-box" => {
                let size = side / 2;
                // 16 at 256, but always leaving DPS's corner range non-empty.
                let margin =
                    ((16.0 * scale).round() as usize).min((side - size).saturating_sub(1) / 2);
                Self::InpaintRandomBox {
                    min_size: size,
                    max_size: size,
                    margin,
                }
            }
            "inpaint-random-range" => Self::InpaintRandomRange {
                min_drop: 0.3,
                max_drop: 0.7,
            },
            "gaussian-blur" => Self::GaussianBlur {
                size: odd(61.0 * scale).min(2 * (side / 2) - 1),
                sigma: 3.0 * scale,
            },
            "motion-blur" => Self::MotionBlur {
                size: odd(61.0 * scale).min(2 * (side / 2) - 1),
                intensity: 0.5,
            },
            "sr4" => Self::SuperResolution { factor: 4 },
            "sr4-box" => Self::SuperResolutionBox { factor: 4 },
            other => {
                return Err(OperatorError::invalid(
                    "operator",
                    other,
                    format!(
                        "unknown operator; expected one of {}, inpaint-mask",
                        DPS_OPERATOR_NAMES.join(", ")
                    ),
                ));
            }
        })
    }
}

/// Builds the operator for `height × width` images; random parts (motion path, mask) are drawn
/// from `noise`. Kernels must have a radius below the image side; SR factors must divide it.
///
/// ```
/// use tweedie_core::{Device, NoiseSource, Tensor};
/// use tweedie_operators::{OperatorSpec, build};
///
/// let device = Device::flex();
/// let mut noise = NoiseSource::new(0);
/// // A centred 2×2 hole in 4×4 images.
/// let spec = OperatorSpec::InpaintBox { size: 2, random_margin: None };
/// let op = build(&spec, 4, 4, &mut noise, &device).unwrap();
/// assert_eq!(op.describe(), "inpainting (box 2×2)");
/// let y = op.forward(Tensor::ones([1, 3, 4, 4], &device));
/// assert_eq!(y.dims(), [1, 3, 4, 4]);
/// // The hole is zeroed in every channel: 3 · (16 − 4) observed ones remain.
/// assert_eq!(y.sum().into_scalar::<f32>(), 36.0);
///
/// // ×2 box-filter super-resolution halves each side; a factor that does not divide the
/// // side is refused.
/// let sr = build(&OperatorSpec::SuperResolutionBox { factor: 2 }, 4, 4, &mut noise, &device);
/// assert_eq!(sr.unwrap().forward(Tensor::ones([1, 3, 4, 4], &device)).dims(), [1, 3, 2, 2]);
/// assert!(build(&OperatorSpec::SuperResolutionBox { factor: 3 }, 4, 4, &mut noise, &device).is_err());
/// ```
pub fn build(
    spec: &OperatorSpec,
    height: usize,
    width: usize,
    noise: &mut NoiseSource,
    device: &Device,
) -> Result<Box<dyn Operator>, OperatorError> {
    let check_kernel = |size: usize| {
        if size / 2 >= height.min(width) {
            return Err(OperatorError::invalid(
                "kernel size",
                size,
                format!("radius must be smaller than the {width}×{height} (W×H) image"),
            ));
        }
        Ok(())
    };
    let check_divisible = |factor: usize| {
        if factor == 0 {
            return Err(OperatorError::invalid("factor", factor, "must be ≥ 1"));
        }
        if !height.is_multiple_of(factor) || !width.is_multiple_of(factor) {
            return Err(OperatorError::invalid(
                "factor",
                factor,
                format!("the {width}×{height} (W×H) image is not divisible by it"),
            ));
        }
        Ok(())
    };
    Ok(match spec {
        OperatorSpec::Identity => Box::new(Identity),
        OperatorSpec::InpaintBox {
            size,
            random_margin: None,
        } => Box::new(Mask::center_box(height, width, *size, device)?),
        OperatorSpec::InpaintBox {
            size,
            random_margin: Some(m),
        } => Box::new(Mask::random_box(height, width, *size, *m, noise, device)?),
        OperatorSpec::InpaintRandom { drop } => {
            Box::new(Mask::random_pixels(height, width, *drop, noise, device)?)
        }
        OperatorSpec::InpaintMask { path } => Box::new(Mask::load(path, height, width, device)?),
        OperatorSpec::GaussianBlur { size, sigma } => {
            check_kernel(*size)?;
            Box::new(Blur::gaussian(*size, *sigma)?)
        }
        OperatorSpec::MotionBlur { size, intensity } => {
            check_kernel(*size)?;
            Box::new(Blur::motion(*size, *intensity, noise)?)
        }
        OperatorSpec::KernelBlur { path } => {
            let blur = Blur::load(path)?;
            check_kernel(blur.size())?;
            Box::new(blur)
        }
        OperatorSpec::InpaintRandomBox {
            min_size,
            max_size,
            margin,
        } => Box::new(Mask::random_sized_box(
            height, width, *min_size, *max_size, *margin, noise, device,
        )?),
        OperatorSpec::InpaintRandomRange { min_drop, max_drop } => Box::new(
            Mask::random_pixels_range(height, width, *min_drop, *max_drop, noise, device)?,
        ),
        OperatorSpec::SuperResolution { factor } => {
            check_divisible(*factor)?;
            Box::new(Resizer::new(height, width, *factor)?)
        }
        OperatorSpec::SuperResolutionScale { scale } => {
            Box::new(Resizer::with_scale(height, width, *scale)?)
        }
        OperatorSpec::SuperResolutionBox { factor } => {
            let op = Downsample::new(*factor)?;
            check_divisible(*factor)?;
            Box::new(op)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::adjoint_error;
    use burn::tensor::Tensor;

    #[test]
    fn every_dps_operator_builds_and_is_adjoint_consistent() {
        let d = Device::flex();
        for side in [32, 64, 256] {
            for name in DPS_OPERATOR_NAMES {
                let spec = OperatorSpec::dps_default(name, side).unwrap();
                let op = build(&spec, side, side, &mut NoiseSource::new(1), &d).unwrap();
                if side == 32 {
                    let err = adjoint_error(op.as_ref(), [1, 3, 32, 32], 7);
                    assert!(err < 1e-5, "{name}: relative adjoint error {err}");
                }
                assert!(!op.describe().is_empty());
            }
        }
        assert_eq!(
            OperatorSpec::dps_default("inpaint-random-box", 256).unwrap(),
            OperatorSpec::InpaintRandomBox {
                min_size: 128,
                max_size: 128,
                margin: 16
            }
        );
        assert_eq!(
            OperatorSpec::dps_default("sr4", 256).unwrap(),
            OperatorSpec::SuperResolution { factor: 4 }
        );
        let e = OperatorSpec::dps_default("nope", 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sr4-box"), "{e}");
    }

    #[test]
    fn spec_json_round_trips_and_bad_specs_error() {
        let s = OperatorSpec::GaussianBlur {
            size: 15,
            sigma: 0.75,
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<OperatorSpec>(&j).unwrap(), s);
        let d = Device::flex();
        let mut n = NoiseSource::new(0);
        assert!(
            build(
                &OperatorSpec::SuperResolution { factor: 3 },
                32,
                32,
                &mut n,
                &d
            )
            .is_err()
        );
        assert!(
            build(
                &OperatorSpec::GaussianBlur {
                    size: 65,
                    sigma: 3.0
                },
                32,
                32,
                &mut n,
                &d
            )
            .is_err()
        );
        assert!(
            build(
                &OperatorSpec::InpaintBox {
                    size: 40,
                    random_margin: None
                },
                32,
                32,
                &mut n,
                &d
            )
            .is_err()
        );
    }

    #[test]
    fn new_variants_round_trip_with_their_op_names() {
        let cases = [
            (
                OperatorSpec::InpaintRandomBox {
                    min_size: 128,
                    max_size: 128,
                    margin: 16,
                },
                "inpaint-random-box",
            ),
            (
                OperatorSpec::InpaintRandomRange {
                    min_drop: 0.3,
                    max_drop: 0.7,
                },
                "inpaint-random-range",
            ),
            (
                OperatorSpec::KernelBlur {
                    path: PathBuf::from("runs/k.npy"),
                },
                "kernel-blur",
            ),
            (
                OperatorSpec::SuperResolution { factor: 4 },
                "super-resolution",
            ),
            (
                OperatorSpec::SuperResolutionBox { factor: 4 },
                "super-resolution-box",
            ),
            (
                OperatorSpec::SuperResolutionScale { scale: 0.65 },
                "super-resolution-scale",
            ),
        ];
        for (spec, op) in cases {
            let j = serde_json::to_value(&spec).unwrap();
            assert_eq!(j["op"], op);
            assert_eq!(serde_json::from_value::<OperatorSpec>(j).unwrap(), spec);
        }
        // A non-integer Resizer scale builds, has the expected output size and is adjoint.
        let op = build(
            &OperatorSpec::SuperResolutionScale { scale: 21.0 / 32.0 },
            32,
            32,
            &mut NoiseSource::new(0),
            &Device::flex(),
        )
        .unwrap();
        let y = op.forward(Tensor::zeros([1, 3, 32, 32], &Device::flex()));
        assert_eq!(y.dims(), [1, 3, 21, 21]);
        assert!(crate::testutil::adjoint_error(op.as_ref(), [1, 3, 32, 32], 3) < 1e-5);
        let parsed: OperatorSpec =
            serde_json::from_str(r#"{"op": "kernel-blur", "path": "k.safetensors"}"#).unwrap();
        assert_eq!(
            parsed,
            OperatorSpec::KernelBlur {
                path: "k.safetensors".into()
            }
        );
    }

    #[test]
    fn kernel_blur_and_new_masks_build_or_explain() {
        let d = Device::flex();
        let mut n = NoiseSource::new(3);
        let dir = std::env::temp_dir().join(format!("tweedie-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.npy");
        Blur::motion(9, 0.5, &mut n)
            .unwrap()
            .save_npy(&path)
            .unwrap();
        let op = build(&OperatorSpec::KernelBlur { path }, 16, 16, &mut n, &d).unwrap();
        assert!(adjoint_error(op.as_ref(), [1, 3, 16, 16], 2) < 1e-5);
        assert!(op.describe().contains("k.npy"));
        // A kernel wider than the image, and a missing file.
        let big = dir.join("big.npy");
        Blur::gaussian(41, 3.0).unwrap().save_npy(&big).unwrap();
        assert!(build(&OperatorSpec::KernelBlur { path: big }, 16, 16, &mut n, &d).is_err());
        let missing = OperatorSpec::KernelBlur {
            path: dir.join("missing.npy"),
        };
        assert!(build(&missing, 16, 16, &mut n, &d).is_err());
        // Box plus margins too large; drop range upside down; box SR not divisible.
        let bad = [
            OperatorSpec::InpaintRandomBox {
                min_size: 12,
                max_size: 12,
                margin: 2,
            },
            OperatorSpec::InpaintRandomRange {
                min_drop: 0.8,
                max_drop: 0.2,
            },
            OperatorSpec::SuperResolutionBox { factor: 3 },
            OperatorSpec::SuperResolution { factor: 0 },
        ];
        for spec in bad {
            assert!(build(&spec, 16, 16, &mut n, &d).is_err(), "{spec:?}");
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
