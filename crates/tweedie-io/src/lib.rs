//! `tweedie-io`: images in and out of tensors.
//!
//! Convention: an image tensor is `[B, 3, H, W]` with values in **[−1, 1]** (the diffusion
//! models' range); [`to_unit`] maps to [0, 1] for metrics. Loading accepts PNG and JPEG,
//! 8- or 16-bit, gray (replicated to 3 channels), RGB and RGBA (alpha dropped, as PIL's
//! `convert("RGB")` does in the reference code), and applies the EXIF orientation of a JPEG
//! (APP1) or PNG (`eXIf`), so a phone photo stored on its side comes out the way up it is
//! shown. Loading refuses, with an error naming the file, truncated files (JPEGs included)
//! and images above [`ImageLimits`] (64 megapixels by default, `TWEEDIE_MAX_PIXELS` to
//! change), checked from the header before decoding.
//!
//! Inputs need not be regular files: a pipe (`/dev/stdin`), a named FIFO or a device is read
//! into memory once per process ([`read_input`]), for images, masks and kernels alike.

mod atomic;
mod grid;
mod heat;
mod image_io;
mod input;
mod plot;

pub use atomic::{TEMP_PREFIX, clean_stale_temps, write_atomic, write_atomic_with};
pub use grid::{Grid, GridCell};
pub use heat::{heat_colour, heat_map};
pub use image_io::{
    Image, ImageLimits, IoError, center_crop_square, decode_dynamic_image, decode_image,
    from_tensor, image_dimensions, list_images, load_dynamic_image, load_image, load_image_sized,
    load_image_sized_with, load_image_with, save_png, to_tensor, to_unit,
};
pub use input::{DEFAULT_MAX_STREAM_BYTES, FIFO_WRITER_WAIT, read_input};
pub use plot::{Panel, Series, save_panels};
