//! `tweedie-io`: images in and out of tensors.
//!
//! Convention: an image tensor is `[B, 3, H, W]` with values in **[−1, 1]** (the diffusion
//! models' range); [`to_unit`] maps to [0, 1] for metrics. Loading accepts PNG and JPEG,
//! 8- or 16-bit, gray (replicated to 3 channels), RGB and RGBA (alpha dropped, as PIL's
//! `convert("RGB")` does in the reference code). Loading refuses, with an error naming the
//! file, truncated files (JPEGs included) and images above [`ImageLimits`] (64 megapixels by
//! default, `TWEEDIE_MAX_PIXELS` to change), checked from the header before decoding.

mod atomic;
mod grid;
mod heat;
mod image_io;
mod plot;

pub use atomic::{clean_stale_temps, write_atomic, write_atomic_with};
pub use grid::{Grid, GridCell};
pub use heat::{heat_colour, heat_map};
pub use image_io::{
    Image, ImageLimits, IoError, center_crop_square, decode_image, from_tensor, image_dimensions,
    list_images, load_image, load_image_sized, load_image_sized_with, load_image_with, save_png,
    to_tensor, to_unit,
};
pub use plot::{Panel, Series, save_panels};
