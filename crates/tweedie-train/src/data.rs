//! The training images: decoded once, centre-cropped and resized, kept in memory.

use crate::TrainError;
use burn::tensor::{Device, Tensor};
use std::path::{Path, PathBuf};
use tweedie_core::{InvalidParameter, NoiseSource};
use tweedie_io::{Image, center_crop_square, list_images, load_image};

/// How images are prepared.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    /// Output side in pixels.
    pub size: usize,
    /// Side of the centred square crop before resizing (`None`: the largest centred square).
    pub crop: Option<usize>,
}

/// An in-memory image set in [−1, 1].
pub struct Dataset {
    images: Vec<Image>,
    /// Files that could not be decoded (skipped).
    pub skipped: Vec<PathBuf>,
}

impl Dataset {
    /// Loads every PNG/JPEG under `dir` (recursively). Unreadable files are skipped and
    /// counted, not fatal; an empty result is an error, and so are a crop of 0 and an image
    /// smaller than the crop (see [`prepare_checked`]).
    pub fn load(dir: &Path, opts: &DatasetOptions) -> Result<Self, TrainError> {
        if opts.crop == Some(0) {
            return Err(InvalidParameter::new("crop", 0, CROP_AT_LEAST_ONE).into());
        }
        let files = list_images(dir)
            .map_err(|e| TrainError::data_from("cannot list the training images", e))?;
        let mut images = Vec::with_capacity(files.len());
        let mut skipped = Vec::new();
        for f in files {
            match load_image(&f) {
                Ok(img) => images.push(
                    prepare_checked(&img, opts)
                        .map_err(|e| TrainError::data_from(f.display().to_string(), e))?,
                ),
                Err(_) => skipped.push(f),
            }
        }
        if images.is_empty() {
            return Err(TrainError::data(format!(
                "{}: no readable PNG/JPEG images",
                dir.display()
            )));
        }
        Ok(Self { images, skipped })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The images.
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// A random batch (with replacement) with random horizontal flips.
    pub fn batch(&self, n: usize, rng: &mut NoiseSource, device: &Device) -> Tensor<4> {
        let items: Vec<Image> = (0..n)
            .map(|_| {
                let img = &self.images[rng.below(self.images.len())];
                if rng.uniform() < 0.5 {
                    img.flip_horizontal()
                } else {
                    img.clone()
                }
            })
            .collect();
        tweedie_io::to_tensor(&items, device).expect("equal-sized images")
    }
}

/// Centre crop (to `crop` or the largest square) and resize to `size`. A crop that does not
/// fit the image falls back to the largest square; [`prepare_checked`] refuses it instead.
pub fn prepare(img: &Image, opts: &DatasetOptions) -> Image {
    let sq = match opts.crop {
        Some(c) if c <= img.width && c <= img.height => {
            img.crop((img.width - c) / 2, (img.height - c) / 2, c, c)
        }
        _ => center_crop_square(img),
    };
    sq.resize(opts.size, opts.size)
}

const CROP_AT_LEAST_ONE: &str = "must be ≥ 1 (the side of the centred square, in pixels)";

/// As [`prepare`], but a crop of 0 or one larger than the image is an error (naming both
/// sizes) instead of an all-black image or a silent fallback to the largest square.
pub fn prepare_checked(img: &Image, opts: &DatasetOptions) -> Result<Image, InvalidParameter> {
    match opts.crop {
        Some(0) => Err(InvalidParameter::new("crop", 0, CROP_AT_LEAST_ONE)),
        Some(c) if c > img.width || c > img.height => Err(InvalidParameter::new(
            "crop",
            c,
            format!("must fit inside the image ({}×{})", img.width, img.height),
        )),
        _ => Ok(prepare(img, opts)),
    }
}
