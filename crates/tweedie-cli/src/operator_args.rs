//! Operator options shared by `restore`, `eval` and `report`: raw flags → a validated
//! [`OperatorSpec`].

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use tweedie_operators::OperatorSpec;

/// A measurement operator by name (DPS's settings, scaled to the model's resolution).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpArg {
    /// No degradation (denoising only).
    Identity,
    /// A centred square hole, half the image side.
    InpaintBox,
    /// DPS's box: half the side, at a random position with a margin (16 px at 256).
    InpaintRandomBox,
    /// Each pixel missing with probability `--drop` (default 0.7).
    InpaintRandom,
    /// DPS's random pixels: p ~ U(0.3, 0.7), exactly ⌊HWp⌋ missing.
    InpaintRandomRange,
    /// A mask image (`--mask`: white or 1 = observed, alpha 0 = missing).
    InpaintMask,
    /// DPS's Gaussian blur (scipy `gaussian_filter` kernel); `--kernel FILE` replaces it.
    GaussianBlur,
    /// A random motion blur (the `motionblur` package's kernel); `--kernel FILE` replaces it.
    MotionBlur,
    /// DPS's ×f super-resolution: the antialiased bicubic `Resizer`.
    Sr4,
    /// ×f super-resolution by a box filter (mean of f×f blocks).
    Sr4Box,
}

impl OpArg {
    /// The command-line name (`inpaint-box`, …).
    pub fn name(self) -> String {
        crate::args::value_name(&self)
    }
}

/// Per-operator settings (each defaults to DPS's value scaled to the model's resolution).
#[derive(Args, Debug, Clone, Default)]
pub struct OperatorArgs {
    /// Box side for inpaint-box and inpaint-random-box (default: half the image).
    #[arg(long)]
    pub box_size: Option<usize>,
    /// Missing fraction for inpaint-random.
    #[arg(long)]
    pub drop: Option<f64>,
    /// Mask image (PNG/JPEG, the images' size) for inpaint-mask. The rule: where the image
    /// has transparency, alpha 0 = missing (colour ignored); else a file whose largest value
    /// is 1 is a 0/1 mask (NumPy uint8), 1 = observed; else brighter than mid-grey =
    /// observed (white = observed, black = missing). A mask that observes nothing is
    /// refused. May be a pipe (/dev/stdin) or FIFO.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// A blur kernel file (`.npy`, safetensors, PNG/JPEG grey levels, or the JSON `restore`
    /// saves) for gaussian-blur or motion-blur, e.g. the `*_kernel.npy` of an earlier run or
    /// a DPS kernel. Every format is divided by its sum (kept exactly when that is already
    /// 1); a sum ≤ 0, a non-finite value, or negative values cancelling the positive ones is
    /// refused. May be a pipe (/dev/stdin) or FIFO.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Blur kernel size (odd; default: DPS's 61 scaled to the resolution).
    #[arg(long)]
    pub kernel_size: Option<usize>,
    /// Gaussian blur σ in pixels (default: DPS's 3.0 scaled to the resolution).
    #[arg(long)]
    pub blur_sigma: Option<f64>,
    /// Motion blur intensity in [0, 1].
    #[arg(long)]
    pub intensity: Option<f64>,
    /// Super-resolution factor for sr4 and sr4-box.
    #[arg(long, default_value_t = 4)]
    pub factor: usize,
}

impl OperatorArgs {
    /// Checks that `op` with these options can describe an image measured elsewhere
    /// (`restore --measured`): an operator drawn at random (motion blur without `--kernel`,
    /// random masks and boxes) cannot, so its kernel or mask must be given.
    pub fn check_measured(&self, op: OpArg) -> Result<()> {
        match op {
            OpArg::MotionBlur if self.kernel.is_none() => bail!(
                "--measured with --op motion-blur needs --kernel FILE: without it the kernel is drawn at random and cannot be the one that blurred the measured image (give the kernel as .npy, safetensors, PNG or the JSON `restore` saves)"
            ),
            OpArg::InpaintRandom | OpArg::InpaintRandomBox | OpArg::InpaintRandomRange => bail!(
                "--measured with --op {} cannot work: its mask is drawn at random and cannot say which pixels of the measured image are observed; use --op inpaint-mask --mask FILE (white = observed)",
                op.name()
            ),
            _ => Ok(()),
        }
    }

    /// The spec of `op` for images of side `side`: DPS's defaults with the options applied.
    /// Options that do not apply to `op` are an error rather than silently ignored.
    pub fn spec(&self, op: OpArg, side: usize) -> Result<OperatorSpec> {
        let unused = |flag: &str, given: bool| -> Result<()> {
            if given {
                bail!("{flag} does not apply to --op {}", op.name());
            }
            Ok(())
        };
        let is_blur = matches!(op, OpArg::GaussianBlur | OpArg::MotionBlur);
        unused("--kernel", self.kernel.is_some() && !is_blur)?;
        unused("--kernel-size", self.kernel_size.is_some() && !is_blur)?;
        unused(
            "--blur-sigma",
            self.blur_sigma.is_some() && op != OpArg::GaussianBlur,
        )?;
        unused(
            "--intensity",
            self.intensity.is_some() && op != OpArg::MotionBlur,
        )?;
        unused(
            "--box-size",
            self.box_size.is_some() && !matches!(op, OpArg::InpaintBox | OpArg::InpaintRandomBox),
        )?;
        unused("--drop", self.drop.is_some() && op != OpArg::InpaintRandom)?;
        unused("--mask", self.mask.is_some() && op != OpArg::InpaintMask)?;
        if let Some(path) = &self.kernel {
            if self.kernel_size.is_some() || self.blur_sigma.is_some() || self.intensity.is_some() {
                bail!(
                    "--kernel gives the whole kernel: drop --kernel-size, --blur-sigma and --intensity"
                );
            }
            return Ok(OperatorSpec::KernelBlur { path: path.clone() });
        }
        if op == OpArg::InpaintMask {
            let Some(path) = self.mask.clone() else {
                bail!("--op inpaint-mask needs --mask PNG");
            };
            return Ok(OperatorSpec::InpaintMask { path });
        }
        Ok(match OperatorSpec::dps_default(&op.name(), side)? {
            OperatorSpec::InpaintBox {
                size,
                random_margin,
            } => OperatorSpec::InpaintBox {
                size: self.box_size.unwrap_or(size),
                random_margin,
            },
            OperatorSpec::InpaintRandomBox {
                min_size,
                max_size,
                margin,
            } => match self.box_size {
                Some(s) => OperatorSpec::InpaintRandomBox {
                    min_size: s,
                    max_size: s,
                    margin,
                },
                None => OperatorSpec::InpaintRandomBox {
                    min_size,
                    max_size,
                    margin,
                },
            },
            OperatorSpec::InpaintRandom { drop } => OperatorSpec::InpaintRandom {
                drop: self.drop.unwrap_or(drop),
            },
            OperatorSpec::GaussianBlur { size, sigma } => OperatorSpec::GaussianBlur {
                size: self.kernel_size.unwrap_or(size),
                sigma: self.blur_sigma.unwrap_or(sigma),
            },
            OperatorSpec::MotionBlur { size, intensity } => OperatorSpec::MotionBlur {
                size: self.kernel_size.unwrap_or(size),
                intensity: self.intensity.unwrap_or(intensity),
            },
            OperatorSpec::SuperResolution { .. } => OperatorSpec::SuperResolution {
                factor: self.factor,
            },
            OperatorSpec::SuperResolutionBox { .. } => OperatorSpec::SuperResolutionBox {
                factor: self.factor,
            },
            other => other,
        })
    }
}

/// The operator spec of `op` at `size`: the calibrated one when the calibration file has it
/// (and was made for this size), else DPS's settings scaled by pixel size. Also returns where
/// it came from.
pub fn operator_spec(
    op: OpArg,
    size: usize,
    calibrations: &[tweedie::calibrate::Calibration],
) -> Result<(OperatorSpec, &'static str)> {
    let calibrated = calibrations
        .iter()
        .find(|c| c.name == op.name())
        .and_then(|c| c.chosen.spec.clone());
    Ok(match calibrated {
        Some(spec) => (spec, "calibrated"),
        None => (OperatorSpec::dps_default(&op.name(), size)?, "pixel-scaled"),
    })
}

/// Reads a `tweedie calibrate --out` file made for `size`-px images: the whole JSON and its
/// calibrations. A file made for another size is refused (its strengths would be wrong).
pub fn read_calibrations(
    path: &std::path::Path,
    size: usize,
) -> Result<(serde_json::Value, Vec<tweedie::calibrate::Calibration>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--calibration {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("--calibration {}: {e}", path.display()))?;
    const KEYS: [&str; 10] = [
        "calibrations",
        "crop",
        "faces",
        "faces_used",
        "reference",
        "reference_images",
        "reference_size",
        "seed",
        "sigma",
        "size",
    ];
    if let Some(k) = v
        .as_object()
        .and_then(|o| o.keys().find(|k| !KEYS.contains(&k.as_str())))
    {
        bail!(
            "--calibration {}: unknown key {k:?} (a `tweedie calibrate --out` file has {})",
            path.display(),
            KEYS.join(", ")
        );
    }
    if v["size"].as_u64() != Some(size as u64) {
        bail!(
            "--calibration {} was made for {} px images, the model is {size} px",
            path.display(),
            v["size"]
        );
    }
    let cals = serde_json::from_value(v["calibrations"].clone())
        .map_err(|e| anyhow::anyhow!("--calibration {}: {e}", path.display()))?;
    Ok((v, cals))
}
