//! Decoding, resizing and encoding images.

use crate::atomic::write_atomic;
use burn::tensor::{Device, Tensor};
use image::{DynamicImage, ImageReader, Rgb32FImage};
use std::path::{Path, PathBuf};
use tweedie_core::tensor::{from_vec, to_vec};

/// Errors of image I/O; every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a decodable PNG/JPEG (corrupt, truncated or another format).
    #[error("{path}: cannot decode image: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// Encoding failed.
    #[error("{path}: cannot encode image: {reason}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The image is unusable for the request (size, shape).
    #[error("{what}: {reason}")]
    Invalid {
        /// The file or tensor described.
        what: String,
        /// Why.
        reason: String,
    },
}

/// An RGB image on the host: `data` is CHW (3 × H × W) in [−1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channel-major values in [−1, 1].
    pub data: Vec<f32>,
}

impl Image {
    /// A `width × height` image filled with `value` (in [−1, 1]).
    pub fn filled(width: usize, height: usize, value: f32) -> Self {
        Self {
            width,
            height,
            data: vec![value; 3 * width * height],
        }
    }

    fn from_rgb32f(img: &Rgb32FImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0f32; 3 * w * h];
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                data[c * w * h + y as usize * w + x as usize] = p.0[c] * 2.0 - 1.0;
            }
        }
        Self {
            width: w,
            height: h,
            data,
        }
    }

    fn to_rgb32f(&self) -> Rgb32FImage {
        let (w, h) = (self.width, self.height);
        Rgb32FImage::from_fn(w as u32, h as u32, |x, y| {
            let i = y as usize * w + x as usize;
            image::Rgb([0, 1, 2].map(|c| (self.data[c * w * h + i] + 1.0) / 2.0))
        })
    }

    /// 8-bit RGB pixels (values clamped to [−1, 1] first).
    pub fn to_rgb8(&self) -> image::RgbImage {
        let (w, h) = (self.width, self.height);
        image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let i = y as usize * w + x as usize;
            image::Rgb([0, 1, 2].map(|c| {
                let v = (self.data[c * w * h + i].clamp(-1.0, 1.0) + 1.0) * 127.5;
                v.round() as u8
            }))
        })
    }

    /// Resizes to `width × height` (Catmull-Rom, scale-aware so downsampling does not alias).
    pub fn resize(&self, width: usize, height: usize) -> Self {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let out = image::imageops::resize(
            &self.to_rgb32f(),
            width as u32,
            height as u32,
            image::imageops::FilterType::CatmullRom,
        );
        Self::from_rgb32f(&out)
    }

    /// Crops the rectangle at (`x`, `y`) of size `w × h`.
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Self {
        assert!(
            x + w <= self.width && y + h <= self.height,
            "crop outside the image"
        );
        let mut data = Vec::with_capacity(3 * w * h);
        for c in 0..3 {
            for row in y..y + h {
                let start = c * self.width * self.height + row * self.width + x;
                data.extend_from_slice(&self.data[start..start + w]);
            }
        }
        Self {
            width: w,
            height: h,
            data,
        }
    }

    /// Mirrors the image left–right.
    pub fn flip_horizontal(&self) -> Self {
        let (w, h) = (self.width, self.height);
        let mut data = self.data.clone();
        for c in 0..3 {
            for y in 0..h {
                let row = &mut data[c * w * h + y * w..c * w * h + (y + 1) * w];
                row.reverse();
            }
        }
        Self {
            width: w,
            height: h,
            data,
        }
    }
}

/// Crops the largest centred square (side = min(width, height)).
pub fn center_crop_square(img: &Image) -> Image {
    let side = img.width.min(img.height);
    img.crop((img.width - side) / 2, (img.height - side) / 2, side, side)
}

/// Loads a PNG or JPEG as RGB in [−1, 1] (see the crate docs for mode handling).
pub fn load_image(path: impl AsRef<Path>) -> Result<Image, IoError> {
    let path = path.as_ref();
    let reader = ImageReader::open(path)
        .map_err(|source| IoError::File {
            path: path.into(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| IoError::File {
            path: path.into(),
            source,
        })?;
    let dynamic: DynamicImage = reader.decode().map_err(|source| IoError::Decode {
        path: path.into(),
        source,
    })?;
    if dynamic.width() == 0 || dynamic.height() == 0 {
        return Err(IoError::Invalid {
            what: path.display().to_string(),
            reason: "image is empty".into(),
        });
    }
    Ok(Image::from_rgb32f(&dynamic.to_rgb32f()))
}

/// Loads an image, centre-crops it to a square and resizes it to `size × size`.
pub fn load_image_sized(path: impl AsRef<Path>, size: usize) -> Result<Image, IoError> {
    Ok(center_crop_square(&load_image(path)?).resize(size, size))
}

/// Saves an image as an 8-bit RGB PNG, atomically.
pub fn save_png(img: &Image, path: impl AsRef<Path>) -> Result<(), IoError> {
    let path = path.as_ref();
    let mut bytes = Vec::new();
    img.to_rgb8()
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| IoError::Encode {
            path: path.into(),
            reason: e.to_string(),
        })?;
    write_atomic(path, &bytes).map_err(|source| IoError::File {
        path: path.into(),
        source,
    })
}

/// Stacks equally sized images into a `[B, 3, H, W]` tensor.
pub fn to_tensor(images: &[Image], device: &Device) -> Result<Tensor<4>, IoError> {
    let first = images.first().ok_or_else(|| IoError::Invalid {
        what: "image batch".into(),
        reason: "no images given".into(),
    })?;
    let (w, h) = (first.width, first.height);
    let mut data = Vec::with_capacity(images.len() * 3 * w * h);
    for (i, img) in images.iter().enumerate() {
        if (img.width, img.height) != (w, h) {
            return Err(IoError::Invalid {
                what: format!("image {i} of the batch"),
                reason: format!(
                    "is {}×{}, expected {w}×{h} like the first",
                    img.width, img.height
                ),
            });
        }
        data.extend_from_slice(&img.data);
    }
    Ok(from_vec(data, [images.len(), 3, h, w], device))
}

/// Splits a `[B, 3, H, W]` tensor into host images.
pub fn from_tensor(x: &Tensor<4>) -> Result<Vec<Image>, IoError> {
    let [b, c, h, w] = x.dims();
    if c != 3 {
        return Err(IoError::Invalid {
            what: format!("tensor {:?}", x.dims()),
            reason: "expected 3 channels".into(),
        });
    }
    let v = to_vec(x);
    Ok(v.chunks(3 * h * w)
        .take(b)
        .map(|d| Image {
            width: w,
            height: h,
            data: d.to_vec(),
        })
        .collect())
}

/// Maps [−1, 1] to [0, 1].
pub fn to_unit<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.add_scalar(1.0).mul_scalar(0.5)
}

/// The PNG/JPEG files of a folder (recursive), sorted by path.
pub fn list_images(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, IoError> {
    let dir = dir.as_ref();
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| IoError::File {
            path: d.clone(),
            source,
        })?;
        for e in entries {
            let p = e
                .map_err(|source| IoError::File {
                    path: d.clone(),
                    source,
                })?
                .path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
