//! Convolution with a blur kernel (Gaussian or motion), reflect padding so the output keeps
//! the image size ("deconvolution" problems).

use crate::{Operator, OperatorError};
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, PadMode};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tweedie_core::NoiseSource;

/// A normalised `size × size` Gaussian kernel with standard deviation `sigma` (pixels).
pub fn gaussian_kernel(size: usize, sigma: f64) -> Result<Vec<f32>, OperatorError> {
    check_size(size)?;
    if !(sigma > 0.0 && sigma.is_finite()) {
        return Err(OperatorError::invalid("sigma", sigma, "blur σ must be > 0"));
    }
    let c = (size / 2) as f64;
    let mut k: Vec<f64> = (0..size * size)
        .map(|i| {
            let (y, x) = ((i / size) as f64 - c, (i % size) as f64 - c);
            (-(x * x + y * y) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    Ok(k.into_iter().map(|v| v as f32).collect())
}

/// A random motion-blur kernel: a camera-shake trajectory (Boracchi & Foi 2012, as used by
/// DeblurGAN and the `motionblur` package of the DPS code) rasterised with bilinear splatting
/// onto a `size × size` grid and normalised. `intensity` ∈ [0, 1] controls how erratic the
/// path is (DPS: 0.5). Seeded through `noise`.
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
    let iters = 2000usize;
    let max_len = 0.75 * size as f64;
    let expl = 0.005 + 0.095 * intensity; // exploration: larger ⇒ more erratic
    let centripetal = 0.7 * noise.uniform();
    let big_shake = 0.2 * noise.uniform();
    let shake = 10.0 * noise.uniform();
    let angle = std::f64::consts::TAU * noise.uniform();
    let step = max_len / (iters - 1) as f64;
    let (mut vx, mut vy) = (angle.cos() * step, angle.sin() * step);
    let (mut px, mut py) = (vec![0.0f64; iters], vec![0.0f64; iters]);
    let normal = |noise: &mut NoiseSource| noise.normal_vec(1)[0] as f64;
    for t in 0..iters - 1 {
        let (mut dx, mut dy) = (0.0, 0.0);
        if noise.uniform() < big_shake * expl {
            // a sudden jerk: reverse-ish direction
            let a = std::f64::consts::PI + (noise.uniform() - 0.5);
            dx += 2.0 * (vx * a.cos() - vy * a.sin());
            dy += 2.0 * (vx * a.sin() + vy * a.cos());
        }
        dx += expl * (shake * normal(noise) - centripetal * px[t]) * step;
        dy += expl * (shake * normal(noise) - centripetal * py[t]) * step;
        vx += dx;
        vy += dy;
        let norm = (vx * vx + vy * vy).sqrt().max(1e-12);
        vx *= step / norm;
        vy *= step / norm;
        px[t + 1] = px[t] + vx;
        py[t + 1] = py[t] + vy;
    }
    // Centre the path on the kernel grid.
    let (mx, my) = (
        (px.iter().cloned().fold(f64::MAX, f64::min) + px.iter().cloned().fold(f64::MIN, f64::max))
            / 2.0,
        (py.iter().cloned().fold(f64::MAX, f64::min) + py.iter().cloned().fold(f64::MIN, f64::max))
            / 2.0,
    );
    let c = (size / 2) as f64;
    let mut k = vec![0f64; size * size];
    for (x, y) in px.iter().zip(&py) {
        let (x, y) = (x - mx + c, y - my + c);
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        for (ddx, ddy, w) in [
            (0, 0, (1.0 - fx) * (1.0 - fy)),
            (1, 0, fx * (1.0 - fy)),
            (0, 1, (1.0 - fx) * fy),
            (1, 1, fx * fy),
        ] {
            let (xi, yi) = (x0 as i64 + ddx, y0 as i64 + ddy);
            if xi >= 0 && yi >= 0 && (xi as usize) < size && (yi as usize) < size {
                k[yi as usize * size + xi as usize] += w;
            }
        }
    }
    let s: f64 = k.iter().sum();
    Ok(k.into_iter().map(|v| (v / s) as f32).collect())
}

fn check_size(size: usize) -> Result<(), OperatorError> {
    if size == 0 || size % 2 == 0 {
        return Err(OperatorError::invalid(
            "kernel size",
            size,
            "must be odd and ≥ 1",
        ));
    }
    Ok(())
}

/// On-disk form of a blur kernel (JSON), so an experiment can be rerun exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KernelFile {
    label: String,
    size: usize,
    values: Vec<f32>,
}

/// Convolution with a fixed kernel, per channel, with reflect padding (output size = input).
#[derive(Debug, Clone)]
pub struct Blur {
    kernel: Vec<f32>,
    size: usize,
    label: String,
}

impl Blur {
    /// A blur with an explicit normalised kernel (`size²` values, row-major, odd `size`).
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
        })
    }

    /// Gaussian blur (DPS: 61×61, σ = 3.0).
    pub fn gaussian(size: usize, sigma: f64) -> Result<Self, OperatorError> {
        Self::new(
            gaussian_kernel(size, sigma)?,
            size,
            format!("gaussian blur {size}×{size} σ={sigma}"),
        )
    }

    /// Random motion blur (DPS: 61×61, intensity 0.5).
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

    /// Saves the kernel as JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), OperatorError> {
        let path = path.as_ref();
        let f = KernelFile {
            label: self.label.clone(),
            size: self.size,
            values: self.kernel.clone(),
        };
        let json = serde_json::to_vec_pretty(&f).map_err(|e| OperatorError::Io(e.to_string()))?;
        tweedie_io::write_atomic(path, &json)
            .map_err(|e| OperatorError::Io(format!("{}: {e}", path.display())))
    }

    /// Loads a kernel saved by [`Blur::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, OperatorError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| OperatorError::Io(format!("{}: {e}", path.display())))?;
        let f: KernelFile = serde_json::from_slice(&bytes).map_err(|e| {
            OperatorError::Io(format!("{}: not a kernel file: {e}", path.display()))
        })?;
        Self::new(f.values, f.size, f.label)
    }

    fn weight(&self, channels: usize, device: &Device) -> Tensor<4> {
        let k = tweedie_core::tensor::from_vec(
            self.kernel.clone(),
            [1, 1, self.size, self.size],
            device,
        );
        k.repeat_dim(0, channels)
    }

    fn check_fits(&self, h: usize, w: usize) {
        let p = self.size / 2;
        assert!(
            p < h && p < w,
            "{}: kernel radius {p} must be smaller than the image ({h}×{w})",
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

impl Operator for Blur {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, c, h, w] = x.dims();
        self.check_fits(h, w);
        let p = self.size / 2;
        let padded = x.pad([(0, 0), (0, 0), (p, p), (p, p)], PadMode::Reflect);
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
        reflect_pad_adjoint(reflect_pad_adjoint(full, 2, p), 3, p)
    }

    fn describe(&self) -> String {
        self.label.clone()
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
}
