//! Operator specifications: the serialisable description a CLI or experiment file gives,
//! turned into a concrete operator by [`build`].

use crate::{Blur, Downsample, Identity, Mask, Operator, OperatorError};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tweedie_core::NoiseSource;

/// What measurement to simulate. Sizes are in pixels of the image being restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum OperatorSpec {
    /// No degradation (pure denoising).
    Identity,
    /// A `size²` hole: centred, or at a random position `margin` pixels from the border.
    InpaintBox {
        /// Side of the square hole.
        size: usize,
        /// `Some(margin)`: random position; `None`: centred.
        random_margin: Option<usize>,
    },
    /// Each pixel missing independently with probability `drop`.
    InpaintRandom {
        /// Missing fraction in [0, 1).
        drop: f64,
    },
    /// A user-supplied mask image (white = observed).
    InpaintMask {
        /// The mask PNG.
        path: PathBuf,
    },
    /// Gaussian blur.
    GaussianBlur {
        /// Odd kernel size.
        size: usize,
        /// Standard deviation in pixels.
        sigma: f64,
    },
    /// Random motion blur.
    MotionBlur {
        /// Odd kernel size.
        size: usize,
        /// Trajectory intensity in [0, 1].
        intensity: f64,
    },
    /// Box-filter downsampling.
    SuperResolution {
        /// Integer factor.
        factor: usize,
    },
}

impl OperatorSpec {
    /// The DPS paper's settings, scaled to an image of side `side` (their values are for 256):
    /// `name` ∈ {identity, inpaint-box, inpaint-random, gaussian-blur, motion-blur, sr4}.
    pub fn dps_default(name: &str, side: usize) -> Result<Self, OperatorError> {
        let scale = side as f64 / 256.0;
        let odd = |v: f64| {
            let k = v.round().max(1.0) as usize;
            if k % 2 == 0 { k + 1 } else { k }
        };
        Ok(match name {
            "identity" => Self::Identity,
            "inpaint-box" => Self::InpaintBox {
                size: side / 2,
                random_margin: None,
            },
            "inpaint-random" => Self::InpaintRandom { drop: 0.7 },
            "gaussian-blur" => Self::GaussianBlur {
                size: odd(61.0 * scale).min(2 * (side / 2) - 1),
                sigma: 3.0 * scale,
            },
            "motion-blur" => Self::MotionBlur {
                size: odd(61.0 * scale).min(2 * (side / 2) - 1),
                intensity: 0.5,
            },
            "sr4" => Self::SuperResolution { factor: 4 },
            other => {
                return Err(OperatorError::invalid(
                    "operator",
                    other,
                    "unknown operator; expected one of identity, inpaint-box, inpaint-random, inpaint-mask, gaussian-blur, motion-blur, sr4",
                ));
            }
        })
    }
}

/// Builds the operator for `height × width` images; random parts are drawn from `noise`.
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
                format!("radius must be smaller than the {height}×{width} image"),
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
        OperatorSpec::SuperResolution { factor } => {
            let op = Downsample::new(*factor)?;
            if height % factor != 0 || width % factor != 0 {
                return Err(OperatorError::invalid(
                    "factor",
                    factor,
                    format!("the {height}×{width} image is not divisible by it"),
                ));
            }
            Box::new(op)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::adjoint_error;

    #[test]
    fn every_dps_operator_builds_and_is_adjoint_consistent() {
        let d = Device::flex();
        for name in [
            "identity",
            "inpaint-box",
            "inpaint-random",
            "gaussian-blur",
            "motion-blur",
            "sr4",
        ] {
            let spec = OperatorSpec::dps_default(name, 32).unwrap();
            let op = build(&spec, 32, 32, &mut NoiseSource::new(1), &d).unwrap();
            let err = adjoint_error(op.as_ref(), [1, 3, 32, 32], 7);
            assert!(err < 1e-5, "{name}: relative adjoint error {err}");
            assert!(!op.describe().is_empty());
        }
        assert!(OperatorSpec::dps_default("nope", 32).is_err());
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
}
