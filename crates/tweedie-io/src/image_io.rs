//! Decoding, resizing and encoding images.

use crate::atomic::write_atomic;
use crate::input::{Source, open_input};
use burn::tensor::{Device, Tensor};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Rgb32FImage};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Cursor, Seek, SeekFrom};
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
    /// The header declares more pixels than [`ImageLimits::max_pixels`] allows; nothing was
    /// decoded.
    #[error(
        "{path}: image is {width}×{height} = {pixels} pixels, above the limit of {limit} pixels \
         (set {var} to raise it)",
        pixels = *width as u64 * *height as u64,
        var = ImageLimits::ENV_VAR
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The limit in force.
        limit: u64,
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

/// Bounds on the images the loaders accept, checked from the file header before any pixel is
/// decoded, so an oversized image costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most pixels (width × height) an image may have.
    pub max_pixels: u64,
}

impl ImageLimits {
    /// The default pixel limit: 64 megapixels (e.g. 8000 × 8000), about 0.8 GB as f32 RGB.
    pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;
    /// The environment variable that overrides [`ImageLimits::DEFAULT_MAX_PIXELS`] (a whole
    /// number of pixels) for [`load_image`] and [`load_image_sized`].
    pub const ENV_VAR: &'static str = "TWEEDIE_MAX_PIXELS";

    /// The default limits, with `TWEEDIE_MAX_PIXELS` applied when it is set; a value that is
    /// not a positive whole number is an error naming the variable.
    pub fn from_env() -> Result<Self, IoError> {
        match std::env::var(Self::ENV_VAR) {
            Err(std::env::VarError::NotPresent) => Ok(Self::default()),
            Err(std::env::VarError::NotUnicode(v)) => Err(Self::bad_env(&v.to_string_lossy())),
            Ok(v) => match v.trim().replace('_', "").parse::<u64>() {
                Ok(n) if n > 0 => Ok(Self { max_pixels: n }),
                _ => Err(Self::bad_env(&v)),
            },
        }
    }

    fn bad_env(value: &str) -> IoError {
        IoError::Invalid {
            what: Self::ENV_VAR.into(),
            reason: format!("expected a positive whole number of pixels, got {value:?}"),
        }
    }

    /// The `image` crate's decoder limits matching these: room for the largest accepted image
    /// at 16-bit RGBA (8 bytes a pixel), and never below `image`'s own default of 512 MiB.
    fn decoder_limits(&self) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(
            self.max_pixels
                .saturating_mul(8)
                .max(limits.max_alloc.unwrap_or(0)),
        );
        limits
    }
}

impl ImageLimits {
    /// The most bytes an image may take when it comes through a pipe or device, read into
    /// memory: room for the largest accepted image stored uncompressed at 16-bit RGBA, plus
    /// 64 MiB of headers and metadata.
    pub fn max_stream_bytes(&self) -> u64 {
        self.max_pixels.saturating_mul(8).saturating_add(64 << 20)
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_pixels: Self::DEFAULT_MAX_PIXELS,
        }
    }
}

/// Reads one byte, `None` at the end of the data.
fn next_byte(r: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    let b = r.fill_buf()?.first().copied();
    if b.is_some() {
        r.consume(1);
    }
    Ok(b)
}

/// Whether JPEG data reaches its end-of-image marker (FF D9): walks the marker segments by
/// their lengths (so an EXIF thumbnail's own EOI inside APP1 is skipped) and the entropy-coded
/// data between them (where FF is always followed by 00, a restart marker or the next marker).
/// A truncated file ends before EOI; the `image` crate's JPEG decoder accepts it and fills the
/// missing part with grey, so this is checked separately.
fn jpeg_reaches_eoi(r: &mut impl BufRead) -> std::io::Result<bool> {
    if (next_byte(r)?, next_byte(r)?) != (Some(0xFF), Some(0xD8)) {
        return Ok(false);
    }
    loop {
        // The next 0xFF.
        loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            if let Some(i) = buf.iter().position(|&b| b == 0xFF) {
                r.consume(i + 1);
                break;
            }
            let n = buf.len();
            r.consume(n);
        }
        // The marker code, after any fill bytes (0xFF).
        let marker = loop {
            match next_byte(r)? {
                None => return Ok(false),
                Some(0xFF) => continue,
                Some(m) => break m,
            }
        };
        match marker {
            0xD9 => return Ok(true),
            // Stuffed zero in entropy-coded data, TEM, restart markers, SOI: no length field.
            0x00 | 0x01 | 0xD0..=0xD8 => {}
            _ => {
                let (Some(hi), Some(lo)) = (next_byte(r)?, next_byte(r)?) else {
                    return Ok(false);
                };
                let Some(skip) = u16::from_be_bytes([hi, lo]).checked_sub(2) else {
                    return Ok(false);
                };
                let skip = u64::from(skip);
                if std::io::copy(
                    &mut std::io::Read::take(&mut *r, skip),
                    &mut std::io::sink(),
                )? < skip
                {
                    return Ok(false);
                }
            }
        }
    }
}

/// An `ImageReader` over `r` from its start, its format from `path`'s extension, then from
/// the content.
fn reader_at_start<'a, R: BufRead + Seek>(
    r: &'a mut R,
    path: &Path,
) -> std::io::Result<ImageReader<&'a mut R>> {
    r.seek(SeekFrom::Start(0))?;
    let mut reader = ImageReader::new(r);
    if let Some(f) = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(ImageFormat::from_extension)
    {
        reader.set_format(f);
    }
    reader.with_guessed_format()
}

/// Decodes PNG/JPEG data from `r`, named `path` in errors: the header's size is checked
/// against `limits` before anything is decoded, a JPEG must be complete (see
/// [`jpeg_reaches_eoi`]), and the EXIF orientation is applied.
fn decode_checked<R: BufRead + Seek>(
    mut r: R,
    path: &Path,
    limits: &ImageLimits,
) -> Result<DynamicImage, IoError> {
    let file_err = |source| IoError::File {
        path: path.into(),
        source,
    };
    let decode_err = |source| IoError::Decode {
        path: path.into(),
        source,
    };
    // Header only (the limits come after, so an oversized image gets our message).
    let mut reader = reader_at_start(&mut r, path).map_err(file_err)?;
    reader.no_limits();
    let format = reader.format();
    let (width, height) = reader.into_dimensions().map_err(decode_err)?;
    if width == 0 || height == 0 {
        return Err(IoError::Invalid {
            what: path.display().to_string(),
            reason: "image is empty".into(),
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(IoError::TooLarge {
            path: path.into(),
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    if format == Some(ImageFormat::Jpeg) {
        r.seek(SeekFrom::Start(0)).map_err(file_err)?;
        if !jpeg_reaches_eoi(&mut r).map_err(file_err)? {
            return Err(IoError::Invalid {
                what: path.display().to_string(),
                reason: "cannot decode image: truncated or corrupt JPEG (the data ends before \
                         its end-of-image marker)"
                    .into(),
            });
        }
    }
    let mut reader = reader_at_start(&mut r, path).map_err(file_err)?;
    reader.limits(limits.decoder_limits());
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let mut alloc = limits.decoder_limits();
    alloc.reserve(decoder.total_bytes()).map_err(decode_err)?;
    decoder.set_limits(alloc).map_err(decode_err)?;
    // The EXIF orientation (JPEG APP1, PNG eXIf), applied so the pixels are the way up the
    // camera (and every viewer) shows them.
    let orientation = decoder.orientation().map_err(decode_err)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Rows per strip when converting to f32: about a million pixels (12 MB) at a time.
fn strip_rows(width: u32) -> u32 {
    (1 << 20) / width.max(1)
}

/// Calls `f(row, strip)` for the rectangle (`x`, `y`, `w`, `h`) of `img` as f32 RGB strips of
/// a few rows (`row` is the strip's first row, relative to `y`), so no full-size f32 copy of
/// `img` is ever made.
fn for_each_rgb32f_strip(
    img: &DynamicImage,
    (x, y, w, h): (u32, u32, u32, u32),
    mut f: impl FnMut(u32, &Rgb32FImage),
) {
    let rows = strip_rows(w).max(1);
    let mut row = 0;
    while row < h {
        let n = rows.min(h - row);
        f(row, &img.crop_imm(x, y + row, w, n).to_rgb32f());
        row += n;
    }
}

/// The whole of `img` as an [`Image`], converted strip by strip.
fn image_from_dynamic(img: &DynamicImage) -> Image {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * w * h];
    for_each_rgb32f_strip(img, (0, 0, w as u32, h as u32), |row, strip| {
        for (x, y, p) in strip.enumerate_pixels() {
            let i = (row + y) as usize * w + x as usize;
            for c in 0..3 {
                data[c * w * h + i] = p.0[c] * 2.0 - 1.0;
            }
        }
    });
    Image {
        width: w,
        height: h,
        data,
    }
}

/// Loads a PNG or JPEG as RGB in [−1, 1] (see the crate docs for mode handling), within the
/// default [`ImageLimits`] (`TWEEDIE_MAX_PIXELS` overrides the pixel limit).
///
/// The EXIF orientation (1–8) is applied. `path` may be a pipe or device (`/dev/stdin`), read
/// into memory once per process ([`read_input`](crate::read_input)).
///
/// Refused, with an error naming the file: unreadable, undecodable or truncated files
/// (including JPEGs cut short, which decoders would fill with grey), empty images, and
/// images above the pixel limit (checked from the header, before decoding).
pub fn load_image(path: impl AsRef<Path>) -> Result<Image, IoError> {
    load_image_with(path, &ImageLimits::from_env()?)
}

/// The `(width, height)` of an image file as [`load_image`] gives it (after its EXIF
/// orientation: a quarter turn swaps the stored sides), from its header only (no pixel is
/// decoded).
pub fn image_dimensions(path: impl AsRef<Path>) -> Result<(usize, usize), IoError> {
    let path = path.as_ref();
    let limits = ImageLimits::from_env()?;
    match open_input(path, limits.max_stream_bytes())? {
        Source::File(f) => dimensions_checked(std::io::BufReader::new(f), path),
        Source::Bytes(b) => dimensions_checked(Cursor::new(&b[..]), path),
    }
}

fn dimensions_checked<R: BufRead + Seek>(mut r: R, path: &Path) -> Result<(usize, usize), IoError> {
    let mut reader = reader_at_start(&mut r, path).map_err(|source| IoError::File {
        path: path.into(),
        source,
    })?;
    reader.no_limits();
    let decode_err = |source| IoError::Decode {
        path: path.into(),
        source,
    };
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (w, h) = decoder.dimensions();
    let turned = matches!(
        decoder.orientation().map_err(decode_err)?,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (w, h) = if turned { (h, w) } else { (w, h) };
    Ok((w as usize, h as usize))
}

/// [`load_image`] with explicit limits (the environment is not read).
pub fn load_image_with(path: impl AsRef<Path>, limits: &ImageLimits) -> Result<Image, IoError> {
    let path = path.as_ref();
    Ok(image_from_dynamic(&decode_file(path, limits)?))
}

/// Decodes PNG or JPEG data held in memory, as [`load_image_with`] does a file; `name` stands
/// for the data in errors.
pub fn decode_image(
    bytes: &[u8],
    name: impl AsRef<Path>,
    limits: &ImageLimits,
) -> Result<Image, IoError> {
    let dynamic = decode_checked(Cursor::new(bytes), name.as_ref(), limits)?;
    Ok(image_from_dynamic(&dynamic))
}

/// Decodes the image file `path` (regular, or a pipe or device read into memory: see
/// [`read_input`](crate::read_input)): every image loader comes through here.
fn decode_file(path: &Path, limits: &ImageLimits) -> Result<DynamicImage, IoError> {
    match open_input(path, limits.max_stream_bytes())? {
        Source::File(f) => decode_checked(std::io::BufReader::new(f), path, limits),
        Source::Bytes(b) => decode_checked(Cursor::new(&b[..]), path, limits),
    }
}

/// Loads an image file as the `image` crate's [`DynamicImage`], its own channels and bit
/// depth kept (alpha, 16 bits), with every check and the EXIF orientation of [`load_image`]:
/// for readers that need more than RGB in [−1, 1] (masks, kernel images).
pub fn load_dynamic_image(
    path: impl AsRef<Path>,
    limits: &ImageLimits,
) -> Result<DynamicImage, IoError> {
    decode_file(path.as_ref(), limits)
}

/// [`load_dynamic_image`] of PNG/JPEG data held in memory; `name` stands for the data in
/// errors.
pub fn decode_dynamic_image(
    bytes: &[u8],
    name: impl AsRef<Path>,
    limits: &ImageLimits,
) -> Result<DynamicImage, IoError> {
    decode_checked(Cursor::new(bytes), name.as_ref(), limits)
}

/// Loads an image, centre-crops it to a square and resizes it to `size × size`, within the
/// default [`ImageLimits`] (see [`load_image`]).
pub fn load_image_sized(path: impl AsRef<Path>, size: usize) -> Result<Image, IoError> {
    load_image_sized_with(path, size, &ImageLimits::from_env()?)
}

/// [`load_image_sized`] with explicit limits. Only the centred square is converted to f32
/// (strip by strip from the decoded pixels), so memory is the decoded image plus one f32 copy
/// of the square, not several full-size f32 copies.
pub fn load_image_sized_with(
    path: impl AsRef<Path>,
    size: usize,
    limits: &ImageLimits,
) -> Result<Image, IoError> {
    let path = path.as_ref();
    if size == 0 {
        return Err(IoError::Invalid {
            what: path.display().to_string(),
            reason: "requested size is 0".into(),
        });
    }
    let dynamic = decode_file(path, limits)?;
    let (w, h) = (dynamic.width(), dynamic.height());
    let side = w.min(h);
    let rect = ((w - side) / 2, (h - side) / 2, side, side);
    if side as usize == size {
        let img = image_from_dynamic(&dynamic.crop_imm(rect.0, rect.1, side, side));
        return Ok(img);
    }
    // The square as f32 RGB for the resize. Values go through [−1, 1] and back exactly as
    // `Image::resize` does (`(p·2 − 1 + 1) / 2`), so results are bit-for-bit those of
    // `center_crop_square(&load_image(path)?).resize(size, size)`.
    let mut square = Rgb32FImage::new(side, side);
    for_each_rgb32f_strip(&dynamic, rect, |row, strip| {
        for (x, y, p) in strip.enumerate_pixels() {
            square.put_pixel(
                x,
                row + y,
                image::Rgb(p.0.map(|v| (v * 2.0 - 1.0 + 1.0) / 2.0)),
            );
        }
    });
    drop(dynamic);
    let out = image::imageops::resize(
        &square,
        size as u32,
        size as u32,
        image::imageops::FilterType::CatmullRom,
    );
    Ok(Image::from_rgb32f(&out))
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
///
/// ```
/// use tweedie_core::Device;
/// use tweedie_io::{Image, from_tensor, to_tensor, to_unit};
///
/// let device = Device::flex();
/// let (black, white) = (Image::filled(4, 2, -1.0), Image::filled(4, 2, 1.0));
/// let x = to_tensor(&[black.clone(), white], &device).unwrap();
/// assert_eq!(x.dims(), [2, 3, 2, 4]); // [B, 3, H, W], values in [−1, 1]
/// assert_eq!(from_tensor(&x).unwrap()[0], black);
/// // [0, 1] for display and metrics.
/// assert_eq!(to_unit(x).max().into_scalar::<f32>(), 1.0);
/// // A batch needs one size.
/// assert!(to_tensor(&[black, Image::filled(2, 2, 0.0)], &device).is_err());
/// ```
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
///
/// Symbolic links are followed, but each folder is entered once (by its canonical path), so a
/// link loop (`a -> .`, `sub/up -> ..`) neither hangs nor repeats images; a file reached under
/// several names is listed once, under the smallest path. A link that resolves to nothing is
/// listed under its own name, so loading it reports the problem.
pub fn list_images(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, IoError> {
    let dir = dir.as_ref();
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IoError::File { path, source }
    };
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
    };
    let mut visited = HashSet::new();
    // Canonical file → the smallest path it was found under.
    let mut files: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let canonical = std::fs::canonicalize(&d).map_err(file_err(&d))?;
        if !visited.insert(canonical) {
            continue;
        }
        for e in std::fs::read_dir(&d).map_err(file_err(&d))? {
            let p = e.map_err(file_err(&d))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_image(&p) {
                let key = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
                let best = files.entry(key).or_insert_with(|| p.clone());
                if p < *best {
                    *best = p;
                }
            }
        }
    }
    let mut out: Vec<PathBuf> = files.into_values().collect();
    out.sort();
    Ok(out)
}
