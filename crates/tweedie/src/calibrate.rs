//! Operator strengths matched by **difficulty** across resolutions.
//!
//! The DPS paper sets its operators for 256×256 FFHQ faces (Gaussian blur σ = 3 on a 61×61
//! kernel, 61×61 motion blur, a 128² hole, ×4 super-resolution). Our report restores 32×32
//! faces, and scaling the pixel sizes (σ = 3·32/256 = 0.375) gives a blur whose centre tap
//! holds 89 % of the mass: the measurement alone already scores ~32 dB, so "deconvolution"
//! turns into plain denoising. Instead we match the *measurement PSNR*: the PSNR of the
//! image-space view of `y = A(x₀) + σn` against `x₀` ([`measurement_psnr`]), measured with the
//! DPS setting on 256-px images, is the target, and a one-parameter strength knob per operator
//! family ([`Knob`]) is searched at the small size for the setting whose measurement PSNR on
//! the small faces is closest to it ([`search`], [`calibrate`]).
//!
//! Operators without a knob are reported only:
//! - `identity` has no strength (only σ, which is kept: DPS's 0.05);
//! - `inpaint-random` (Bernoulli, 70 % missing) and `inpaint-random-range` (exactly ⌊N·p⌋
//!   pixels, p ~ U(0.3, 0.7)) drop a *fraction* of the pixels, so in expectation they remove
//!   the same share of the image at every resolution: they are resolution-independent as they
//!   stand, and any PSNR difference between the sizes comes from the images, not the operator.
//!
//! Every random choice is seeded: image `i` of a list uses `NoiseSource::new(seed + i)` both
//! for the operator's random parts (motion path, mask) and then for the measurement noise, so
//! a search compares settings under common random numbers.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tweedie_core::{InvalidParameter, NoiseSource};
use tweedie_metrics::{MetricError, psnr};
use tweedie_operators::{Operator, OperatorError, OperatorSpec, Resizer, build, measure};

/// Errors of the calibration.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// An operator could not be built or applied (bad spec, unknown name, bad σ).
    #[error(transparent)]
    Operator(#[from] OperatorError),
    /// A metric failed (shape mismatch).
    #[error(transparent)]
    Metric(#[from] MetricError),
    /// An image list was empty.
    #[error("no {0} images given: the calibration needs at least one")]
    NoImages(&'static str),
    /// An image tensor was not `[B ≥ 1, 3, H ≥ 1, W ≥ 1]`.
    #[error("image {index} has shape {dims:?}: expected [B ≥ 1, 3, H ≥ 1, W ≥ 1]")]
    BadImage {
        /// Position in the list.
        index: usize,
        /// Its shape.
        dims: [usize; 4],
    },
    /// A search target or setting was out of range.
    #[error(transparent)]
    Invalid(#[from] InvalidParameter),
}

/// Motion-blur trajectory intensity used at every size (DPS: 0.5).
pub const MOTION_INTENSITY: f64 = 0.5;

/// Bisection stops once the measurement PSNR is within this many dB of the target…
pub const PSNR_TOLERANCE_DB: f64 = 0.05;

/// …or the Gaussian σ bracket is narrower than this (pixels).
pub const SIGMA_TOLERANCE: f64 = 1e-3;

/// The smallest Gaussian σ searched (its kernel is 1×1: no blur).
pub const SIGMA_MIN: f64 = 0.1;

/// The image-space view of a measurement `y` of an image of shape `image_dims`:
/// [`Operator::initialise`], i.e. `A⁺y` for masks (`A⁺y = m ⊙ y`, so missing pixels read
/// 0 = mid-grey and carry no noise), super-resolution (`M_h⁺ Y M_w⁺ᵀ`, box: block
/// replication) and the identity (`y`), and `y` itself for blurs (the blurred, noisy image,
/// without the noise a deconvolution would amplify).
pub fn measurement_image(op: &dyn Operator, y: Tensor<4>, image_dims: [usize; 4]) -> Tensor<4> {
    let v = op.initialise(y);
    debug_assert_eq!(
        v.dims(),
        image_dims,
        "an operator's initialise maps to image space"
    );
    v
}

/// Checks an image list and returns the smallest side `min(H, W)` over it.
fn check_images(images: &[Tensor<4>], what: &'static str) -> Result<usize, CalibrationError> {
    if images.is_empty() {
        return Err(CalibrationError::NoImages(what));
    }
    let mut side = usize::MAX;
    for (index, x) in images.iter().enumerate() {
        let dims = x.dims();
        if dims[0] == 0 || dims[1] != 3 || dims[2] == 0 || dims[3] == 0 {
            return Err(CalibrationError::BadImage { index, dims });
        }
        side = side.min(dims[2].min(dims[3]));
    }
    Ok(side)
}

/// Makes an operator for an `h × w` image, drawing its random parts from the source.
type MakeOperator<'a> =
    &'a dyn Fn(usize, usize, &mut NoiseSource) -> Result<Box<dyn Operator>, OperatorError>;

/// Mean measurement PSNR with operators made by `make(h, w, noise)` per image.
fn mean_psnr(
    images: &[Tensor<4>],
    sigma: f64,
    seed: u64,
    make: MakeOperator<'_>,
) -> Result<f64, CalibrationError> {
    check_images(images, "calibration")?;
    let (mut sum, mut count) = (0.0, 0usize);
    for (i, x) in images.iter().enumerate() {
        let dims = x.dims();
        let mut noise = NoiseSource::new(seed.wrapping_add(i as u64));
        let op = make(dims[2], dims[3], &mut noise)?;
        let y = measure(op.as_ref(), x.clone(), sigma, &mut noise)?;
        let view = measurement_image(op.as_ref(), y, dims).clamp(-1.0, 1.0);
        for p in psnr(&view, x)? {
            sum += p;
            count += 1;
        }
    }
    Ok(sum / count as f64)
}

/// The mean over `images` (each `[1, 3, H, W]` in [−1, 1]; a batch counts as its items) of
/// `PSNR(clamp(V(yᵢ), −1, 1), xᵢ)` in dB ([0, 1] scale), where
/// `yᵢ = Aᵢ(xᵢ) + σ n` with σ in the [−1, 1] scale (DPS: 0.05), `V` is
/// [`measurement_image`], and `Aᵢ = build(spec, H, W, NoiseSource::new(seed + i))`; the same
/// source then draws `n`. Random operators (motion kernels, random masks) thus differ per
/// image but are seeded. σ = 0 with the identity gives +∞.
pub fn measurement_psnr(
    spec: &OperatorSpec,
    images: &[Tensor<4>],
    sigma: f64,
    seed: u64,
    device: &Device,
) -> Result<f64, CalibrationError> {
    mean_psnr(images, sigma, seed, &|h, w, noise| {
        build(spec, h, w, noise, device)
    })
}

/// The Gaussian-blur spec for σ on images of side `side`: kernel size
/// `k = 2·⌊4σ + ½⌋ + 1` (the odd size covering scipy's truncate-4 radius), capped at the
/// largest odd size whose radius is below the side, `2·side − 1`.
pub fn gaussian_blur_spec(sigma: f64, side: usize) -> OperatorSpec {
    let radius = (4.0 * sigma + 0.5).floor().max(0.0) as usize;
    let cap = 2 * side.max(1) - 1;
    OperatorSpec::GaussianBlur {
        size: (2 * radius + 1).min(cap),
        sigma,
    }
}

/// A one-parameter strength for an operator family, each monotone in difficulty (a larger
/// value gives a lower measurement PSNR, except [`Knob::ResizeOutput`], where a larger output
/// is easier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Knob {
    /// Gaussian σ in pixels (continuous, kernel from [`gaussian_blur_spec`]); bisection to
    /// [`PSNR_TOLERANCE_DB`] or [`SIGMA_TOLERANCE`] over `[SIGMA_MIN, side]`.
    GaussianSigma,
    /// Motion-blur kernel side `k ∈ {3, 5, …, 2·side − 1}` with intensity
    /// [`MOTION_INTENSITY`]; all scanned.
    MotionSize,
    /// Side `s ∈ 1..side` of the centred hole (`inpaint-box`); all scanned (a hole of the
    /// whole side observes nothing, and such a mask is refused).
    CentredBoxSide,
    /// Side `s ∈ 1..side` of DPS's random box (`inpaint-random-box`, min = max = s) with
    /// margin `min(round(16·side/256), ⌊(side − s − 1)/2⌋)` as [`OperatorSpec::dps_default`];
    /// all scanned.
    RandomBoxSide,
    /// Output side `n ∈ 1..side` of DPS's bicubic `Resizer` at scale `n/side` (`sr4`); all
    /// scanned. Expressible as an [`OperatorSpec`] only when `n` divides the side.
    ResizeOutput,
    /// Box-filter factor `f ≥ 2` dividing every image's sides (`sr4-box`); all scanned.
    BoxFactor,
}

impl Knob {
    /// The knob of a [`OperatorSpec::dps_default`] name, `None` for the operators reported
    /// only (`identity`, `inpaint-random`, `inpaint-random-range`, and unknown names).
    pub fn for_operator(name: &str) -> Option<Knob> {
        Some(match name {
            "gaussian-blur" => Knob::GaussianSigma,
            "motion-blur" => Knob::MotionSize,
            "inpaint-box" => Knob::CentredBoxSide,
            "inpaint-random-box" => Knob::RandomBoxSide,
            "sr4" => Knob::ResizeOutput,
            "sr4-box" => Knob::BoxFactor,
            _ => return None,
        })
    }
}

/// One operator setting at one image size and its mean measurement PSNR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// The spec (`None` only for report-only settings that no spec expresses).
    pub spec: Option<OperatorSpec>,
    /// The knob's value (σ, kernel side, box side, output side, factor), if searched.
    pub value: Option<f64>,
    /// A short description, e.g. `"gaussian-blur 5×5 σ=0.812"`.
    pub description: String,
    /// Side of the images it was measured on (the smallest, if they differ).
    pub side: usize,
    /// Mean measurement PSNR in dB ([`measurement_psnr`]).
    pub psnr: f64,
    /// Number of images averaged.
    pub images: usize,
}

impl Setting {
    fn from_spec(spec: OperatorSpec, value: Option<f64>, side: usize, psnr: f64, n: usize) -> Self {
        Self {
            description: describe_spec(&spec),
            spec: Some(spec),
            value,
            side,
            psnr,
            images: n,
        }
    }
}

/// One operator's calibration: the reference (DPS) setting, the difficulty-matched small-size
/// setting and the naive pixel-scaled one, each with its measurement PSNR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// The [`OperatorSpec::dps_default`] name.
    pub name: String,
    /// The knob searched, `None` when reported only.
    pub knob: Option<Knob>,
    /// `dps_default(name, reference side)` on the reference images (the DPS paper's setting
    /// at 256 px): its PSNR is the target.
    pub reference: Setting,
    /// The small-size setting whose PSNR is closest to the target (for knob-less operators:
    /// the pixel-scaled spec).
    pub chosen: Setting,
    /// `dps_default(name, small side)`: the pixel-scaled setting, for comparison.
    pub pixel_scaled: Setting,
    /// `sr4` only: the integer factor dividing the side whose PSNR is closest to the target
    /// (a `super-resolution` spec), for when the matched scale `n/side` is not `1/f`.
    pub integer_factor: Option<Setting>,
    /// Why the setting was chosen or kept.
    pub note: String,
}

/// A compact description of a spec for tables.
fn describe_spec(spec: &OperatorSpec) -> String {
    match spec {
        OperatorSpec::Identity => "identity".into(),
        OperatorSpec::InpaintBox {
            size,
            random_margin: None,
        } => format!("centred box {size}²"),
        OperatorSpec::InpaintBox {
            size,
            random_margin: Some(m),
        } => format!("random box {size}² margin {m}"),
        OperatorSpec::InpaintRandom { drop } => format!("Bernoulli drop {drop}"),
        OperatorSpec::InpaintRandomBox {
            min_size,
            max_size,
            margin,
        } if min_size == max_size => format!("random box {min_size}² margin {margin}"),
        OperatorSpec::InpaintRandomBox {
            min_size,
            max_size,
            margin,
        } => format!("random box {min_size}..={max_size} margin {margin}"),
        OperatorSpec::InpaintRandomRange { min_drop, max_drop } => {
            format!("drop U({min_drop}, {max_drop})")
        }
        OperatorSpec::InpaintMask { path } => format!("mask {}", path.display()),
        OperatorSpec::GaussianBlur { size, sigma } => format!("{size}×{size} σ={sigma:.3}"),
        OperatorSpec::MotionBlur { size, intensity } => format!("{size}×{size} i={intensity}"),
        OperatorSpec::KernelBlur { path } => format!("kernel {}", path.display()),
        OperatorSpec::SuperResolution { factor } => format!("bicubic ×{factor}"),
        OperatorSpec::SuperResolutionBox { factor } => format!("box ×{factor}"),
        OperatorSpec::SuperResolutionScale { scale } => format!("bicubic ×{:.2}", 1.0 / scale),
    }
}

/// |p − target|, with equal infinities at distance 0 and NaN as +∞ (never chosen).
fn gap(p: f64, target: f64) -> f64 {
    if p == target {
        0.0
    } else {
        let d = (p - target).abs();
        if d.is_nan() { f64::INFINITY } else { d }
    }
}

/// The candidate closest to the target (the first on ties).
fn closest(cands: Vec<Setting>, target: f64) -> Option<Setting> {
    let mut best: Option<Setting> = None;
    for c in cands {
        if best
            .as_ref()
            .is_none_or(|b| gap(c.psnr, target) < gap(b.psnr, target))
        {
            best = Some(c);
        }
    }
    best
}

/// `n/side` nudged down until `⌈side·s⌉ = n` exactly (floating point may overshoot).
fn resize_scale(n: usize, side: usize) -> f64 {
    let mut s = n as f64 / side as f64;
    while (side as f64 * s).ceil() as usize > n {
        s = s.next_down();
    }
    s
}

/// Box-filter / integer SR factors `f ≥ 2` dividing every image's height and width.
fn common_factors(images: &[Tensor<4>], side: usize) -> Vec<usize> {
    (2..=side)
        .filter(|f| {
            images.iter().all(|x| {
                let d = x.dims();
                d[2].is_multiple_of(*f) && d[3].is_multiple_of(*f)
            })
        })
        .collect()
}

/// Searches `knob` on `images` for the setting whose [`measurement_psnr`] is closest to
/// `target_psnr` (dB): bisection for [`Knob::GaussianSigma`] (the PSNR falls with σ; the
/// best point evaluated is returned, the bracket end when the target lies outside the
/// reachable range), a scan of every value otherwise (ties: the smallest value).
pub fn search(
    knob: Knob,
    images: &[Tensor<4>],
    target_psnr: f64,
    sigma: f64,
    seed: u64,
    device: &Device,
) -> Result<Setting, CalibrationError> {
    let side = check_images(images, "calibration")?;
    if target_psnr.is_nan() {
        return Err(InvalidParameter::new("target PSNR", target_psnr, "must be a number").into());
    }
    let n = images.len();
    let eval = |spec: OperatorSpec, value: f64| -> Result<Setting, CalibrationError> {
        let p = measurement_psnr(&spec, images, sigma, seed, device)?;
        Ok(Setting::from_spec(spec, Some(value), side, p, n))
    };
    let scan = |cands: Vec<(OperatorSpec, f64)>| -> Result<Setting, CalibrationError> {
        let settings = cands
            .into_iter()
            .map(|(s, v)| eval(s, v))
            .collect::<Result<Vec<_>, _>>()?;
        closest(settings, target_psnr).ok_or_else(|| {
            InvalidParameter::new(
                "image side",
                side,
                format!("too small for any {knob:?} setting"),
            )
            .into()
        })
    };
    match knob {
        Knob::GaussianSigma => {
            let at = |s: f64| eval(gaussian_blur_spec(s, side), s);
            let (mut lo, mut hi) = (SIGMA_MIN, (side as f64).max(SIGMA_MIN));
            let lo_set = at(lo)?;
            if target_psnr >= lo_set.psnr || hi <= lo {
                return Ok(lo_set);
            }
            let hi_set = at(hi)?;
            if target_psnr <= hi_set.psnr {
                return Ok(hi_set);
            }
            let mut best = if gap(lo_set.psnr, target_psnr) <= gap(hi_set.psnr, target_psnr) {
                lo_set
            } else {
                hi_set
            };
            for _ in 0..64 {
                // σ on a 1e-3 grid, so that the chosen value is the one printed and reused
                // (`--blur-sigma 0.801`), with its PSNR measured at exactly that value.
                let mid = (0.5 * (lo + hi) * 1e3).round() / 1e3;
                let s = at(mid)?;
                let (p, g) = (s.psnr, gap(s.psnr, target_psnr));
                if g < gap(best.psnr, target_psnr) {
                    best = s;
                }
                if g <= PSNR_TOLERANCE_DB || hi - lo < SIGMA_TOLERANCE {
                    break;
                }
                if p > target_psnr {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            Ok(best)
        }
        Knob::MotionSize => scan(
            (3..=2 * side - 1)
                .step_by(2)
                .map(|k| {
                    let spec = OperatorSpec::MotionBlur {
                        size: k,
                        intensity: MOTION_INTENSITY,
                    };
                    (spec, k as f64)
                })
                .collect(),
        ),
        Knob::CentredBoxSide => scan(
            (1..side)
                .map(|s| {
                    let spec = OperatorSpec::InpaintBox {
                        size: s,
                        random_margin: None,
                    };
                    (spec, s as f64)
                })
                .collect(),
        ),
        Knob::RandomBoxSide => scan(
            (1..side)
                .map(|s| {
                    let margin = ((16.0 * side as f64 / 256.0).round() as usize)
                        .min((side - s).saturating_sub(1) / 2);
                    let spec = OperatorSpec::InpaintRandomBox {
                        min_size: s,
                        max_size: s,
                        margin,
                    };
                    (spec, s as f64)
                })
                .collect(),
        ),
        Knob::BoxFactor => scan(
            common_factors(images, side)
                .into_iter()
                .map(|f| (OperatorSpec::SuperResolutionBox { factor: f }, f as f64))
                .collect(),
        ),
        Knob::ResizeOutput => {
            let mut settings = Vec::with_capacity(side);
            for out in 1..side {
                let scale = resize_scale(out, side);
                let p = mean_psnr(images, sigma, seed, &|h, w, _| {
                    Ok(Box::new(Resizer::with_scale(h, w, scale)?))
                })?;
                let spec = Some(if side.is_multiple_of(out) {
                    OperatorSpec::SuperResolution { factor: side / out }
                } else {
                    OperatorSpec::SuperResolutionScale { scale }
                });
                settings.push(Setting {
                    spec,
                    value: Some(out as f64),
                    description: format!(
                        "bicubic to {out}/{side} (×{:.2})",
                        side as f64 / out as f64
                    ),
                    side,
                    psnr: p,
                    images: n,
                });
            }
            closest(settings, target_psnr).ok_or_else(|| {
                InvalidParameter::new("image side", side, "must be ≥ 2 to resize").into()
            })
        }
    }
}

/// Calibrates each operator of `ops` (names of [`OperatorSpec::dps_default`]: identity,
/// inpaint-box, inpaint-random, inpaint-random-box, inpaint-random-range, gaussian-blur,
/// motion-blur, sr4, sr4-box): the target is the [`measurement_psnr`] of
/// `dps_default(name, R)` on `reference` (R = its smallest side; with 256-px images, the DPS
/// paper's setting), then the operator's [`Knob`] is [`search`]ed on `small`, and
/// `dps_default(name, S)` (S = the small side) is measured for comparison. Same `sigma` and
/// `seed` everywhere.
pub fn calibrate(
    reference: &[Tensor<4>],
    small: &[Tensor<4>],
    ops: &[&str],
    sigma: f64,
    seed: u64,
    device: &Device,
) -> Result<Vec<Calibration>, CalibrationError> {
    let ref_side = check_images(reference, "reference")?;
    let small_side = check_images(small, "small")?;
    let mut out = Vec::with_capacity(ops.len());
    for &name in ops {
        let ref_spec = OperatorSpec::dps_default(name, ref_side)?;
        let target = measurement_psnr(&ref_spec, reference, sigma, seed, device)?;
        let reference_setting =
            Setting::from_spec(ref_spec, None, ref_side, target, reference.len());
        let naive_spec = OperatorSpec::dps_default(name, small_side)?;
        let naive_psnr = measurement_psnr(&naive_spec, small, sigma, seed, device)?;
        let pixel_scaled =
            Setting::from_spec(naive_spec, None, small_side, naive_psnr, small.len());
        let knob = Knob::for_operator(name);
        let (chosen, note) = match knob {
            None => {
                let note = match name {
                    "identity" => "no operator strength: σ is kept (DPS's)".to_string(),
                    _ => "fraction-based mask: removes the same expected share of pixels at \
                          any resolution, so kept as DPS's"
                        .to_string(),
                };
                (pixel_scaled.clone(), note)
            }
            Some(k) => {
                let chosen = search(k, small, target, sigma, seed, device)?;
                let note = format!(
                    "{k:?} matched to {target:.2} dB (off by {:+.2} dB; pixel scaling: {:+.2} dB)",
                    chosen.psnr - target,
                    naive_psnr - target
                );
                (chosen, note)
            }
        };
        let integer_factor = if knob == Some(Knob::ResizeOutput) {
            let mut cands = Vec::new();
            for f in common_factors(small, small_side) {
                let spec = OperatorSpec::SuperResolution { factor: f };
                let p = measurement_psnr(&spec, small, sigma, seed, device)?;
                cands.push(Setting::from_spec(
                    spec,
                    Some(f as f64),
                    small_side,
                    p,
                    small.len(),
                ));
            }
            closest(cands, target)
        } else {
            None
        };
        out.push(Calibration {
            name: name.to_string(),
            knob,
            reference: reference_setting,
            chosen,
            pixel_scaled,
            integer_factor,
            note,
        });
    }
    Ok(out)
}

/// A Markdown table of calibrations: operator | reference setting | PSNR | matched setting |
/// PSNR | pixel-scaled setting | PSNR (dB, measurement vs ground truth).
pub fn table(calibrations: &[Calibration]) -> String {
    let mut s = String::new();
    if let Some(c) = calibrations.first() {
        s += &format!(
            "| operator | DPS @{r} | PSNR | matched @{m} | PSNR | pixel-scaled @{m} | PSNR |\n",
            r = c.reference.side,
            m = c.chosen.side
        );
        s += "|---|---|---:|---|---:|---|---:|\n";
    }
    for c in calibrations {
        let mut chosen = c.chosen.description.clone();
        if let Some(f) = &c.integer_factor {
            chosen += &format!(" (integer: {} → {:.2})", f.description, f.psnr);
        }
        s += &format!(
            "| {} | {} | {:.2} | {} | {:.2} | {} | {:.2} |\n",
            c.name,
            c.reference.description,
            c.reference.psnr,
            chosen,
            c.chosen.psnr,
            c.pixel_scaled.description,
            c.pixel_scaled.psnr
        );
    }
    s
}
