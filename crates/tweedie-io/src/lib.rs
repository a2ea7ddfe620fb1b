//! `tweedie-io`: images in and out of tensors.
//!
//! Convention: an image tensor is `[B, 3, H, W]` with values in **[−1, 1]** (the diffusion
//! models' range); [`to_unit`] maps to [0, 1] for metrics. Loading accepts PNG and JPEG,
//! 8- or 16-bit, gray (replicated to 3 channels), RGB and RGBA (alpha dropped, as PIL's
//! `convert("RGB")` does in the reference code).

mod atomic;
mod grid;
mod image_io;

pub use atomic::{write_atomic, write_atomic_with};
pub use grid::{Grid, GridCell};
pub use image_io::{
    Image, IoError, center_crop_square, from_tensor, list_images, load_image, load_image_sized,
    save_png, to_tensor, to_unit,
};
