//! Blur: per-channel cross-correlation with a `k × k` kernel after reflect padding by k/2,
//! exactly DPS's `Blurkernel` (`nn.ReflectionPad2d(k//2)` then a grouped `nn.Conv2d`, which
//! correlates): `A(x)[c, i, j] = Σ_{u,v} K[u, v] · pad(x)[c, i + u, j + v]`, output size =
//! input size ("deconvolution" problems). The adjoint is the transposed convolution followed by
//! the adjoint of the reflect padding (mirrored borders folded back).
//!
//! With [`Padding::Circular`] the image wraps around instead, so `A = F⁻¹ diag(K̂) F` is
//! diagonalised by the 2-D DFT and `A⁺` and `prox_l2` have closed forms (computed on the host
//! in `f64`); reflect padding (the default, DPS's) uses the conjugate-gradient defaults.
//!
//! Kernels: DPS's Gaussian ([`gaussian_kernel`], `scipy.ndimage.gaussian_filter` of a delta),
//! DPS's random motion blur ([`motion_kernel`], a port of the `motionblur` package), or a kernel
//! file (`.npy`, safetensors, PNG, JSON: [`Blur::load`]).

use crate::fft;
use crate::kernel_io::{self, KernelData};
use crate::kron::{Kronecker, rank_one_factors, reflect_correlation_matrix};
use crate::{CG_MAX_ITERATIONS, CG_TOLERANCE, Operator, OperatorError};
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, PadMode};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tweedie_core::NoiseSource;

/// scipy's `_gaussian_kernel1d(σ, 0, r)`: `wᵢ = exp(−i²/(2σ²)) / Σ`, i = −r..=r, with
/// `r = ⌊truncate·σ + ½⌋` (scipy's default truncate = 4).
pub fn gaussian_weights_1d(sigma: f64, truncate: f64) -> Vec<f64> {
    let radius = (truncate * sigma + 0.5) as i64;
    let s2 = sigma * sigma;
    let w: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 / s2 * (x * x) as f64).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.into_iter().map(|v| v / sum).collect()
}

/// The `size`-long response of `scipy.ndimage.gaussian_filter1d` (mode `reflect`, truncate 4)
/// to a unit delta at `size/2`: `f[i] = Σ_k w[k] · δ(refl(i + k − r) = size/2)`, where
/// `refl` is scipy's half-sample symmetric extension `(d c b a | a b c d | d c b a)`, repeated
/// with period `2·size` (so tails longer than the kernel fold back more than once).
pub fn gaussian_delta_response_1d(size: usize, sigma: f64) -> Vec<f64> {
    let w = gaussian_weights_1d(sigma, 4.0);
    let r = (w.len() / 2) as i64;
    let n = size as i64;
    let c = n / 2;
    let reflect = |j: i64| {
        let m = j.rem_euclid(2 * n);
        if m < n { m } else { 2 * n - 1 - m }
    };
    (0..n)
        .map(|i| {
            w.iter()
                .enumerate()
                .filter(|&(k, _)| reflect(i + k as i64 - r) == c)
                .map(|(_, wk)| *wk)
                .sum()
        })
        .collect()
}

/// DPS's Gaussian blur kernel: `scipy.ndimage.gaussian_filter` (σ, mode `reflect`, truncate 4)
/// of a `size × size` array that is 1 at the centre, i.e. `K[i, j] = f[i]·f[j]` with `f` from
/// [`gaussian_delta_response_1d`], cast to `f32`. Not normalised again: when the Gaussian is
/// wider than the kernel its tails fold back at the borders (the kernel still sums to 1, as
/// reflection keeps mass).
pub fn gaussian_kernel(size: usize, sigma: f64) -> Result<Vec<f32>, OperatorError> {
    check_size(size)?;
    if !(sigma > 0.0 && sigma.is_finite()) {
        return Err(OperatorError::invalid("sigma", sigma, "blur σ must be > 0"));
    }
    let f = gaussian_delta_response_1d(size, sigma);
    Ok((0..size * size)
        .map(|i| (f[i / size] * f[i % size]) as f32)
        .collect())
}

/// A random motion-blur kernel made as the `motionblur` package's `Kernel(size=(k, k),
/// intensity=I).kernelMatrix` (DPS: 61×61, I = 0.5): a camera-shake path (longer and more
/// curved as I grows; I = 0 is a straight line) drawn with Pillow on a `2k × 2k` canvas,
/// Gaussian-blurred, Lanczos-downsized to `k × k`, divided by its sum — see `motion.rs` for
/// every step. Seeded through `noise`: the draws are ours, not NumPy's, so a particular DPS
/// kernel is reproduced only from its file ([`Blur::load`]).
pub fn motion_kernel(
    size: usize,
    intensity: f64,
    noise: &mut NoiseSource,
) -> Result<Vec<f32>, OperatorError> {
    check_size(size)?;
    if !(0.0..=1.0).contains(&intensity) {
        return Err(OperatorError::invalid(
            "intensity",
            intensity,
            "must lie in [0, 1]",
        ));
    }
    Ok(crate::motion::motionblur_kernel(size, intensity, noise))
}

fn check_size(size: usize) -> Result<(), OperatorError> {
    if size == 0 || size.is_multiple_of(2) {
        return Err(OperatorError::invalid(
            "kernel size",
            size,
            "must be odd and ≥ 1",
        ));
    }
    Ok(())
}

/// On-disk form of a blur kernel (JSON), so an experiment can be rerun exactly. Unknown keys
/// are refused, naming the key and the known ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelFile {
    label: String,
    size: usize,
    values: Vec<f32>,
}

/// How a [`Blur`] extends the image beyond its border (by the kernel radius k/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// Mirror without repeating the edge (`… c b | a b c … | b a …`): DPS's
    /// `nn.ReflectionPad2d`, the default.
    #[default]
    Reflect,
    /// Wrap around (`x[i mod H, j mod W]`): the blur is a circulant, diagonal in the DFT basis.
    Circular,
}

/// Frequencies where `|K̂| ≤ CIRCULAR_PINV_RCOND · max |K̂|` count as zero in a circular blur's
/// pseudo-inverse (the relative cut-off of a truncated SVD; measurements are `f32`).
pub const CIRCULAR_PINV_RCOND: f64 = 1e-6;

/// Convolution with a fixed kernel, per channel, with reflect (default) or circular padding
/// (output size = input).
#[derive(Debug, Clone)]
pub struct Blur {
    kernel: Vec<f32>,
    size: usize,
    label: String,
    padding: Padding,
    /// `(u, v)` with kernel = u vᵀ, when the kernel is rank one (every Gaussian kernel): then
    /// the reflect-padded blur is `L ⊗ R` and its prox is exact ([`crate::kron`]).
    /// Found on first use (an SVD of the kernel), not when the blur is built.
    separable: std::sync::Arc<std::sync::OnceLock<Option<RankOne>>>,
    /// The Kronecker form for the last image size it was asked for.
    kron: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<Kronecker>>>>,
}

/// A rank-one kernel's factors `(u, v)`, kernel = u vᵀ.
type RankOne = (Vec<f64>, Vec<f64>);

/// A kernel counts as separable when its second singular value is at most this fraction of
/// its first (f32 kernels: Gaussian kernels are rank one to about 1e-8).
const SEPARABLE_RTOL: f64 = 1e-6;

impl Blur {
    /// A blur with an explicit kernel (`size²` values, row-major, odd `size`), applied as given
    /// (a blur kernel normally sums to 1).
    pub fn new(
        kernel: Vec<f32>,
        size: usize,
        label: impl Into<String>,
    ) -> Result<Self, OperatorError> {
        check_size(size)?;
        if kernel.len() != size * size || kernel.iter().any(|v| !v.is_finite()) {
            return Err(OperatorError::invalid(
                "kernel",
                kernel.len(),
                format!("needs {} finite values", size * size),
            ));
        }
        Ok(Self {
            kernel,
            size,
            label: label.into(),
            padding: Padding::Reflect,
            separable: Default::default(),
            kron: Default::default(),
        })
    }

    /// The same kernel with another border rule, e.g.
    /// `Blur::gaussian(9, 2.0)?.with_padding(Padding::Circular)`.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// The border rule.
    pub fn padding(&self) -> Padding {
        self.padding
    }

    /// DPS's Gaussian blur with the [`gaussian_kernel`] (DPS: 61×61, σ = 3.0 at 256²).
    pub fn gaussian(size: usize, sigma: f64) -> Result<Self, OperatorError> {
        Self::new(
            gaussian_kernel(size, sigma)?,
            size,
            format!("gaussian blur {size}×{size} σ={sigma}"),
        )
    }

    /// Random motion blur with a [`motion_kernel`] (DPS: 61×61, intensity 0.5).
    pub fn motion(
        size: usize,
        intensity: f64,
        noise: &mut NoiseSource,
    ) -> Result<Self, OperatorError> {
        Self::new(
            motion_kernel(size, intensity, noise)?,
            size,
            format!("motion blur {size}×{size} i={intensity}"),
        )
    }

    /// The kernel values (row-major).
    pub fn kernel(&self) -> &[f32] {
        &self.kernel
    }

    /// The kernel side k.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Saves the kernel as JSON (`{label, size, values}`).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), OperatorError> {
        let path = path.as_ref();
        let f = KernelFile {
            label: self.label.clone(),
            size: self.size,
            values: self.kernel.clone(),
        };
        let json = serde_json::to_vec_pretty(&f).map_err(|e| {
            OperatorError::file_from(format!("{}: encoding the kernel", path.display()), e)
        })?;
        kernel_io::write(path, &json)
    }

    /// Saves the kernel as a `k × k` float32 `.npy` (what `np.save` writes; [`Blur::load`]
    /// reads it back exactly).
    pub fn save_npy(&self, path: impl AsRef<Path>) -> Result<(), OperatorError> {
        kernel_io::write(
            path.as_ref(),
            &kernel_io::encode_npy(&self.kernel, self.size, self.size),
        )
    }

    /// Saves the kernel as safetensors: one F32 tensor `kernel` of shape `[k, k]`.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), OperatorError> {
        kernel_io::write(
            path.as_ref(),
            &kernel_io::encode_safetensors(&self.kernel, self.size)?,
        )
    }

    /// Saves the kernel as an 8-bit grey PNG for viewing, scaled so its maximum is white
    /// (loading it gives the kernel up to 8-bit quantisation; use `.npy` to rerun exactly).
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<(), OperatorError> {
        kernel_io::write(
            path.as_ref(),
            &kernel_io::encode_png(&self.kernel, self.size)?,
        )
    }

    /// Loads a kernel file, recognised by its first bytes (then its extension):
    /// - `.npy`: a 2-D float32/float64 array (e.g. `np.save("k.npy", Kernel(...).kernelMatrix)`);
    /// - safetensors: its only tensor, or the one named `kernel`, 2-D F32/F64;
    /// - PNG or JPEG: grey levels (colour → luma; EXIF orientation applied);
    /// - JSON written by [`Blur::save`].
    ///
    /// Every format is then checked and normalised by the same rule: square with an odd side,
    /// every value finite, a positive sum that is not a near-cancellation of negative and
    /// positive values (sum ≥ 10⁻³ of the values' magnitudes), values not all subnormal; the
    /// kernel is divided by its sum, unless that is 1 within 10⁻⁵ (then it is used bit for
    /// bit, as DPS's kernels and this tool's own saved kernels are). A rescaled kernel says so
    /// in its [`describe`](Operator::describe) text.
    ///
    /// `path` may be a pipe (`/dev/stdin`) or a named FIFO: it is read into memory once per
    /// process ([`tweedie_io::read_input`]); a FIFO that nobody writes to is an error after
    /// [`tweedie_io::FIFO_WRITER_WAIT`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, OperatorError> {
        let path = path.as_ref();
        let bytes = tweedie_io::read_input(path, tweedie_io::DEFAULT_MAX_STREAM_BYTES)?;
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let rescaled = |k: &KernelData| {
            if k.was_rescaled() {
                format!(", divided by its sum {}", kernel_io::short(k.stored_sum))
            } else {
                String::new()
            }
        };
        let from_2d = |values: Vec<f32>, shape: Vec<usize>, kind: &str| {
            if shape.len() != 2 {
                return Err(OperatorError::file(format!(
                    "{}: the kernel must be a 2-D array, got shape {shape:?}",
                    path.display()
                )));
            }
            let k = kernel_io::normalise(path, values, shape[0], shape[1])?;
            let label = format!(
                "blur kernel {name} ({kind} {0}×{0}{1})",
                k.size,
                rescaled(&k)
            );
            Self::new(k.values, k.size, label)
        };
        let png_magic: &[u8] = b"\x89PNG";
        let jpeg_magic: &[u8] = b"\xFF\xD8\xFF";
        if bytes.starts_with(b"\x93NUMPY")
            || (ext == "npy" && !bytes.starts_with(png_magic) && !bytes.starts_with(jpeg_magic))
        {
            let (v, shape) = kernel_io::read_npy(path, &bytes)?;
            from_2d(v, shape, "npy")
        } else if bytes.starts_with(png_magic)
            || bytes.starts_with(jpeg_magic)
            || matches!(
                ext.as_str(),
                "png" | "jpg" | "jpeg" | "bmp" | "tif" | "tiff"
            )
        {
            let (v, shape) = kernel_io::read_image(path, &bytes)?;
            from_2d(v, shape, "image")
        } else if ext == "json" || bytes.first() == Some(&b'{') && ext != "safetensors" {
            let f: KernelFile = serde_json::from_slice(&bytes).map_err(|e| {
                OperatorError::file_from(format!("{}: not a kernel file", path.display()), e)
            })?;
            if f.values.len() != f.size * f.size {
                return Err(OperatorError::file(format!(
                    "{}: not a kernel file: {} values for size {}",
                    path.display(),
                    f.values.len(),
                    f.size
                )));
            }
            let k = kernel_io::normalise(path, f.values, f.size, f.size)?;
            let label = format!("{}{}", f.label, rescaled(&k));
            Self::new(k.values, k.size, label)
        } else {
            let (v, shape) = kernel_io::read_safetensors(path, &bytes)?;
            from_2d(v, shape, "safetensors")
        }
    }

    fn weight(&self, channels: usize, device: &Device) -> Tensor<4> {
        let k = tweedie_core::tensor::from_vec(
            self.kernel.clone(),
            [1, 1, self.size, self.size],
            device,
        );
        k.repeat_dim(0, channels)
    }

    /// The reflect-padded blur as `L ⊗ R` on `h × w` images, when the kernel is separable
    /// (built once per image size: two eigen-decompositions of `n × n` matrices).
    fn kronecker(&self, h: usize, w: usize) -> Option<std::sync::Arc<Kronecker>> {
        let (u, v) = self
            .separable
            .get_or_init(|| rank_one_factors(&self.kernel, self.size, SEPARABLE_RTOL))
            .as_ref()?;
        let mut cached = self.kron.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cached.as_ref().filter(|k| k.input_size() == (h, w)) {
            return Some(k.clone());
        }
        let k = std::sync::Arc::new(Kronecker::new(
            &reflect_correlation_matrix(u, h),
            h,
            h,
            &reflect_correlation_matrix(v, w),
            w,
            w,
        ));
        *cached = Some(k.clone());
        Some(k)
    }

    fn check_fits(&self, h: usize, w: usize) {
        let p = self.size / 2;
        assert!(
            p < h && p < w,
            "{}: kernel radius {p} must be smaller than the image ({w}×{h}, W×H)",
            self.label
        );
    }
}

/// Adjoint of reflect padding by `p` along dimension `dim` (size `n` before padding).
fn reflect_pad_adjoint(g: Tensor<4>, dim: usize, p: usize) -> Tensor<4> {
    if p == 0 {
        return g;
    }
    let n = g.dims()[dim] - 2 * p;
    let narrow = |t: Tensor<4>, a: usize, b: usize| t.narrow(dim, a, b - a);
    let mut out = narrow(g.clone(), p, p + n);
    let top = narrow(g.clone(), 0, p).flip([dim]);
    let bottom = narrow(g, p + n, n + 2 * p).flip([dim]);
    let add_at = |out: Tensor<4>, start: usize, v: Tensor<4>| {
        let len = v.dims()[dim];
        let mut ranges: Vec<std::ops::Range<usize>> = out.dims().iter().map(|d| 0..*d).collect();
        ranges[dim] = start..start + len;
        let r: [std::ops::Range<usize>; 4] = ranges.try_into().unwrap();
        let cur = out.clone().slice(r.clone());
        out.slice_assign(r, cur + v)
    };
    out = add_at(out, 1, top);
    out = add_at(out, n - 1 - p, bottom);
    out
}

/// Circular padding by `p` along `dim`: `[x[n−p..n], x, x[0..p]]`.
fn circular_pad(x: Tensor<4>, dim: usize, p: usize) -> Tensor<4> {
    if p == 0 {
        return x;
    }
    let n = x.dims()[dim];
    let head = x.clone().narrow(dim, n - p, p);
    let tail = x.clone().narrow(dim, 0, p);
    Tensor::cat(vec![head, x, tail], dim)
}

/// Adjoint of [`circular_pad`]: the wrapped borders are added back where they came from.
fn circular_pad_adjoint(g: Tensor<4>, dim: usize, p: usize) -> Tensor<4> {
    if p == 0 {
        return g;
    }
    let n = g.dims()[dim] - 2 * p;
    let core = g.clone().narrow(dim, p, n);
    let head = g.clone().narrow(dim, 0, p); // came from x[n−p..n]
    let tail = g.narrow(dim, p + n, p); // came from x[0..p]
    let zeros = |len: usize| {
        let mut dims = core.dims();
        dims[dim] = len;
        Tensor::<4>::zeros(dims, &core.device())
    };
    let head = if n > p {
        Tensor::cat(vec![zeros(n - p), head], dim)
    } else {
        head
    };
    let tail = if n > p {
        Tensor::cat(vec![tail, zeros(n - p)], dim)
    } else {
        tail
    };
    core + head + tail
}

impl Blur {
    /// `K̂` of the circular blur on `h × w` images (see [`fft::transfer_function`]).
    fn transfer(&self, h: usize, w: usize) -> Vec<rustfft::num_complex::Complex64> {
        fft::transfer_function(&self.kernel, self.size, h, w)
    }
}

impl Operator for Blur {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, c, h, w] = x.dims();
        self.check_fits(h, w);
        let p = self.size / 2;
        let padded = match self.padding {
            Padding::Reflect => x.pad([(0, 0), (0, 0), (p, p), (p, p)], PadMode::Reflect),
            Padding::Circular => circular_pad(circular_pad(x, 2, p), 3, p),
        };
        let device = padded.device();
        conv2d(
            padded,
            self.weight(c, &device),
            None,
            ConvOptions::new([1, 1], [0, 0], [1, 1], c),
        )
    }

    fn adjoint(&self, y: Tensor<4>) -> Tensor<4> {
        let [_, c, h, w] = y.dims();
        self.check_fits(h, w);
        let p = self.size / 2;
        let device = y.device();
        let full = conv_transpose2d(
            y,
            self.weight(c, &device),
            None,
            ConvTransposeOptions::new([1, 1], [0, 0], [0, 0], [1, 1], c),
        );
        match self.padding {
            Padding::Reflect => reflect_pad_adjoint(reflect_pad_adjoint(full, 2, p), 3, p),
            Padding::Circular => circular_pad_adjoint(circular_pad_adjoint(full, 2, p), 3, p),
        }
    }

    /// Reflect padding: the CG default ([`crate::least_squares_cg`]). Circular padding:
    /// `A⁺y = F⁻¹( ŷ / K̂ where |K̂| > ε, else 0 )` with `ε = CIRCULAR_PINV_RCOND · max |K̂|`
    /// (`1/K̂ = conj(K̂)/|K̂|²`), on the host in `f64` (not differentiable).
    fn pseudo_inverse(&self, y: Tensor<4>) -> Tensor<4> {
        match self.padding {
            Padding::Reflect => crate::least_squares_cg(self, y, CG_TOLERANCE, CG_MAX_ITERATIONS).x,
            Padding::Circular => {
                let [_, _, h, w] = y.dims();
                self.check_fits(h, w);
                let k_hat = self.transfer(h, w);
                let eps = CIRCULAR_PINV_RCOND * k_hat.iter().map(|k| k.norm()).fold(0.0, f64::max);
                fft::per_frequency(&k_hat, &[y], |k, v| {
                    if k.norm() > eps { v[0] / k } else { 0.0.into() }
                })
            }
        }
    }

    /// Reflect padding: exact through the Kronecker form `L ⊗ R` when the kernel is separable
    /// (`z + (I + γAᵀA)⁻¹γAᵀ(y − Az)` by the eigen-decompositions of `LᵀL` and `RᵀR`, see
    /// [`crate::kron`]), else the CG default ([`crate::prox_l2_cg`]). Circular padding:
    /// `x = F⁻¹( (ẑ + γ conj(K̂) ŷ) / (1 + γ|K̂|²) )`, on the host in `f64` (not
    /// differentiable).
    fn prox_l2(&self, z: Tensor<4>, y: Tensor<4>, gamma: f64) -> Tensor<4> {
        crate::cg::check_gamma(gamma);
        match self.padding {
            Padding::Reflect => {
                let [_, _, h, w] = y.dims();
                self.check_fits(h, w);
                match self.kronecker(h, w) {
                    Some(k) => k.prox(z.clone(), self.adjoint(y - self.forward(z)), gamma),
                    None => crate::prox_l2_cg(self, z, y, gamma, CG_TOLERANCE, CG_MAX_ITERATIONS).x,
                }
            }
            Padding::Circular => {
                let [_, _, h, w] = y.dims();
                self.check_fits(h, w);
                let k_hat = self.transfer(h, w);
                fft::per_frequency(&k_hat, &[z, y], |k, v| {
                    (v[0] + k.conj() * v[1] * gamma) / (1.0 + gamma * k.norm_sqr())
                })
            }
        }
    }

    /// The measurement itself: a blurred image is already a good image-space start (better
    /// than `A⁺y`, which amplifies noise where `K̂` is small).
    fn initialise(&self, y: Tensor<4>) -> Tensor<4> {
        y
    }

    fn describe(&self) -> String {
        match self.padding {
            Padding::Reflect => self.label.clone(),
            Padding::Circular => format!("{} (circular)", self.label),
        }
    }

    fn save_params(&self, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, OperatorError> {
        let npy = dir.join(format!("{stem}_kernel.npy"));
        let png = dir.join(format!("{stem}_kernel.png"));
        self.save_npy(&npy)?;
        self.save_png(&png)?;
        Ok(vec![npy, png])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::adjoint_error;

    #[test]
    fn kernels_are_normalised_and_seeded() {
        let g = gaussian_kernel(61, 3.0).unwrap();
        assert!((g.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(g[30 * 61 + 30], g.iter().cloned().fold(0.0, f32::max));
        let a = motion_kernel(31, 0.5, &mut NoiseSource::new(4)).unwrap();
        let b = motion_kernel(31, 0.5, &mut NoiseSource::new(4)).unwrap();
        let c = motion_kernel(31, 0.5, &mut NoiseSource::new(5)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        // A motion kernel is spread out: no single pixel holds most of the mass.
        assert!(a.iter().cloned().fold(0.0, f32::max) < 0.5);
        assert!(gaussian_kernel(4, 1.0).is_err());
        assert!(gaussian_kernel(5, 0.0).is_err());
        assert!(motion_kernel(5, 1.5, &mut NoiseSource::new(1)).is_err());
    }

    #[test]
    fn blur_adjoint_matches_forward() {
        let g = Blur::gaussian(7, 1.5).unwrap();
        assert!(adjoint_error(&g, [2, 3, 12, 10], 1) < 1e-5);
        let m = Blur::motion(9, 0.5, &mut NoiseSource::new(2)).unwrap();
        assert!(adjoint_error(&m, [1, 3, 16, 16], 2) < 1e-5);
        // Large kernel relative to the image (radius close to the size).
        let big = Blur::gaussian(61, 3.0).unwrap();
        assert!(adjoint_error(&big, [1, 3, 32, 32], 3) < 1e-5);
    }

    #[test]
    fn blur_preserves_constants_and_size() {
        let d = Device::flex();
        let g = Blur::gaussian(5, 1.0).unwrap();
        let x = Tensor::<4>::ones([1, 3, 8, 8], &d).mul_scalar(0.3);
        let y = g.forward(x);
        assert_eq!(y.dims(), [1, 3, 8, 8]);
        for v in tweedie_core::tensor::to_vec(&y) {
            assert!((v - 0.3).abs() < 1e-5);
        }
    }

    #[test]
    fn kernel_json_round_trips() {
        let dir = std::env::temp_dir().join(format!("tweedie-kernel-{}", std::process::id()));
        let path = dir.join("k.json");
        let m = Blur::motion(11, 0.3, &mut NoiseSource::new(8)).unwrap();
        m.save(&path).unwrap();
        let back = Blur::load(&path).unwrap();
        assert_eq!(back.kernel(), m.kernel());
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(
            Blur::load(&path)
                .unwrap_err()
                .to_string()
                .contains("not a kernel file")
        );
        std::fs::remove_dir_all(dir).ok();
    }

    /// The RMS distance of the kernel's mass from its principal axis (√ of the smaller
    /// eigenvalue of its second-moment matrix): ≈ the stroke half-width for a straight line.
    fn cross_width(k: &[f32], n: usize) -> f64 {
        let at = |i: usize| ((i % n) as f64, (i / n) as f64, k[i] as f64);
        let (mut mx, mut my, mut s) = (0.0, 0.0, 0.0);
        for i in 0..n * n {
            let (x, y, v) = at(i);
            (mx, my, s) = (mx + v * x, my + v * y, s + v);
        }
        (mx, my) = (mx / s, my / s);
        let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
        for i in 0..n * n {
            let (x, y, v) = at(i);
            let (dx, dy) = (x - mx, y - my);
            (a, b, c) = (a + v * dx * dx, b + v * dx * dy, c + v * dy * dy);
        }
        let (tr, det) = ((a + c) / s, (a * c - b * b) / (s * s));
        (tr / 2.0 - (tr * tr / 4.0 - det).max(0.0).sqrt())
            .max(0.0)
            .sqrt()
    }

    #[test]
    fn motion_kernels_are_the_packages_kernels() {
        // 121 draws with a 2-pixel pen (⌊D/150⌋ = 2), the others with a thin one.
        for (size, intensity) in [(61, 0.5), (31, 0.0), (15, 1.0), (121, 0.5)] {
            let k = motion_kernel(size, intensity, &mut NoiseSource::new(11)).unwrap();
            assert_eq!(k.len(), size * size);
            assert!(k.iter().all(|v| *v >= 0.0));
            let sum: f64 = k.iter().map(|v| *v as f64).sum();
            assert!((sum - 1.0).abs() < 1e-5, "{size}: sums to {sum}");
            // An 8-bit image divided by its sum, like DPS's kernels: every value is an integer
            // multiple of the smallest non-zero one.
            let min = k
                .iter()
                .cloned()
                .filter(|v| *v > 0.0)
                .fold(f32::MAX, f32::min);
            for v in &k {
                let r = v / min;
                assert!((r - r.round()).abs() < 1e-3, "{size}: {r}");
            }
            assert_eq!(
                k,
                motion_kernel(size, intensity, &mut NoiseSource::new(11)).unwrap()
            );
            assert_ne!(
                k,
                motion_kernel(size, intensity, &mut NoiseSource::new(12)).unwrap()
            );
        }
        // Intensity 0 is a straight stroke (mass within a pixel of its axis) for every seed;
        // intensity 1 paths zig-zag away from it.
        let widths = |intensity: f64| -> Vec<f64> {
            (0..16)
                .map(|seed| {
                    let k = motion_kernel(61, intensity, &mut NoiseSource::new(seed)).unwrap();
                    cross_width(&k, 61)
                })
                .collect()
        };
        let straight = widths(0.0);
        let erratic = widths(1.0);
        let max0 = straight.iter().cloned().fold(0.0, f64::max);
        let mean1 = erratic.iter().sum::<f64>() / erratic.len() as f64;
        assert!(max0 < 0.8, "intensity 0 widths {straight:?}");
        assert!(
            mean1 > 1.0 && mean1 > 1.5 * max0,
            "intensity 1 widths {erratic:?}"
        );
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tweedie-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn kernel_files_round_trip_in_every_format() {
        let dir = temp_dir("kernel-formats");
        let m = Blur::motion(15, 0.5, &mut NoiseSource::new(3)).unwrap();
        for name in ["k.npy", "k.safetensors", "k.json"] {
            let path = dir.join(name);
            match name {
                "k.npy" => m.save_npy(&path).unwrap(),
                "k.safetensors" => m.save_safetensors(&path).unwrap(),
                _ => m.save(&path).unwrap(),
            }
            assert_eq!(Blur::load(&path).unwrap().kernel(), m.kernel(), "{name}");
            // Recognised by content even without the extension.
            let bare = dir.join(format!("bare-{}", name.replace('.', "-")));
            std::fs::copy(&path, &bare).unwrap();
            assert_eq!(
                Blur::load(&bare).unwrap().kernel(),
                m.kernel(),
                "{name} (bare)"
            );
        }
        // A grey PNG is divided by its sum.
        let levels = [0u8, 50, 0, 100, 255, 100, 0, 50, 0];
        let png = dir.join("grey.png");
        image::GrayImage::from_raw(3, 3, levels.to_vec())
            .unwrap()
            .save(&png)
            .unwrap();
        let b = Blur::load(&png).unwrap();
        for (got, l) in b.kernel().iter().zip(levels) {
            assert!((got - l as f32 / 555.0).abs() < 1e-6);
        }
        // The viewing PNG loads back to the kernel up to 8-bit quantisation.
        let view = dir.join("view.png");
        m.save_png(&view).unwrap();
        let back = Blur::load(&view).unwrap();
        let max = m.kernel().iter().cloned().fold(0.0, f32::max);
        let err = back
            .kernel()
            .iter()
            .zip(m.kernel())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.02 * max, "{err} vs max {max}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn bad_kernel_files_say_what_is_wrong() {
        let dir = temp_dir("kernel-errors");
        let npy = |name: &str, v: &[f32], r: usize, c: usize| {
            let p = dir.join(name);
            std::fs::write(&p, kernel_io::encode_npy(v, r, c)).unwrap();
            Blur::load(&p).unwrap_err().to_string()
        };
        assert!(npy("a.npy", &[0.2; 6], 2, 3).contains("square"));
        assert!(npy("b.npy", &[0.1; 16], 4, 4).contains("odd"));
        assert!(npy("c.npy", &[-0.1; 9], 3, 3).contains("positive sum"));
        // A 1-D array: rewrite the header's shape.
        let one_d = dir.join("d.npy");
        let mut bytes = kernel_io::encode_npy(&[0.2; 5], 1, 5);
        let at = bytes.windows(6).position(|w| w == b"(1, 5)").unwrap();
        bytes[at..at + 6].copy_from_slice(b"(5,)  ");
        std::fs::write(&one_d, &bytes).unwrap();
        let e = Blur::load(&one_d).unwrap_err().to_string();
        assert!(e.contains("2-D"), "{e}");
        // safetensors: several tensors, none named `kernel`; a 3-D tensor.
        let st = |name: &str, tensors: Vec<(&str, Vec<usize>)>| {
            use safetensors::{Dtype, tensor::TensorView};
            let data: Vec<Vec<u8>> = tensors
                .iter()
                .map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()])
                .collect();
            let views: Vec<(&str, TensorView)> = tensors
                .iter()
                .zip(&data)
                .map(|((n, s), d)| (*n, TensorView::new(Dtype::F32, s.clone(), d).unwrap()))
                .collect();
            let p = dir.join(name);
            std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
            Blur::load(&p).unwrap_err().to_string()
        };
        let e = st("e.safetensors", vec![("a", vec![3, 3]), ("b", vec![3, 3])]);
        assert!(e.contains("none is named `kernel`"), "{e}");
        let e = st("f.safetensors", vec![("kernel", vec![1, 3, 3])]);
        assert!(e.contains("2-D"), "{e}");
        let e = st(
            "g.safetensors",
            vec![("kernel", vec![3, 3]), ("x", vec![1])],
        );
        assert!(e.contains("positive sum"), "{e}"); // all zeros, but the right tensor was chosen
        let missing = Blur::load(dir.join("nope.npy")).unwrap_err().to_string();
        assert!(missing.contains("nope.npy"), "{missing}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn save_params_writes_a_loadable_kernel() {
        let dir = temp_dir("kernel-params");
        let m = Blur::motion(9, 0.5, &mut NoiseSource::new(6)).unwrap();
        let files = m.save_params(&dir, "run0").unwrap();
        assert_eq!(
            files,
            vec![dir.join("run0_kernel.npy"), dir.join("run0_kernel.png")]
        );
        assert_eq!(Blur::load(&files[0]).unwrap().kernel(), m.kernel());
        assert_eq!(Blur::load(&files[1]).unwrap().size(), 9);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn gaussian_kernel_folds_its_tails_like_scipy() {
        // σ = 3 on a 5×5 grid: the 1-D weights have radius 12 and fold back repeatedly; the
        // result still sums to 1 and is symmetric, and is flatter than the sampled Gaussian.
        let k = gaussian_kernel(5, 3.0).unwrap();
        let sum: f32 = k.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(k[i * 5 + j], k[j * 5 + i]);
                assert_eq!(k[i * 5 + j], k[(4 - i) * 5 + (4 - j)]);
            }
        }
        let f = gaussian_delta_response_1d(5, 3.0);
        let w = gaussian_weights_1d(3.0, 4.0);
        assert_eq!(w.len(), 25);
        // Centre value: the weights at offsets whose reflection lands on the centre.
        assert!(f[2] > w[12] && f[0] > w[10]);
        // Small σ: no folding, the kernel is the normalised sampled Gaussian (radius ⌊4σ+½⌋).
        let k = gaussian_kernel(9, 0.5).unwrap();
        let f = gaussian_weights_1d(0.5, 4.0); // radius 2
        assert_eq!(f.len(), 5);
        assert!((k[4 * 9 + 4] - (f[2] * f[2]) as f32).abs() < 1e-7);
        assert_eq!(k[0], 0.0);
    }
}
