//! Blur-kernel files: NumPy `.npy`, safetensors, grey PNG and our JSON, read into a square
//! row-major `f32` kernel, and written back (`.npy` exact, PNG for viewing).
//!
//! Every format is checked and normalised by one rule ([`normalise`]): the kernel must be 2-D,
//! square, of odd side, every value finite, with a positive sum that is not a cancellation of
//! positive and negative values; it is then divided by its sum, unless that is 1 already
//! (within 1e-5: DPS's kernels, and those this tool saves, are reused bit for bit). A PNG's
//! grey levels are such a kernel like any other.

use crate::OperatorError;
use std::path::Path;

/// A square kernel read from a file: `size × size` row-major values, normalised
/// ([`normalise`]), and the sum the file's values had.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KernelData {
    pub values: Vec<f32>,
    pub size: usize,
    pub stored_sum: f64,
}

impl KernelData {
    /// Whether the values were divided by their sum (it was not 1 to within [`SUM_TOLERANCE`]).
    pub fn was_rescaled(&self) -> bool {
        (self.stored_sum - 1.0).abs() > SUM_TOLERANCE
    }
}

/// A kernel whose values sum to 1 within this is used exactly as stored (so a DPS kernel, or
/// one this tool saved, is reused bit for bit); any other is divided by its sum.
pub(crate) const SUM_TOLERANCE: f64 = 1e-5;

/// The smallest sum a kernel may have relative to the sum of its values' magnitudes: below
/// it, negative values cancel nearly all the positive ones, and dividing by the sum would
/// amplify the kernel more than 1000×.
pub(crate) const MIN_SUM_RATIO: f64 = 1e-3;

/// `x` for messages: plain with up to 6 significant digits in [10⁻³, 10⁶), else in e
/// notation with 4 (`16`, `3.76471`, `1.000e38`, `0`).
pub(crate) fn short(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if (1e-3..1e6).contains(&x.abs()) {
        let digits = (5 - x.abs().log10().floor() as i32).clamp(0, 8) as usize;
        let s = format!("{x:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:.3e}")
    }
}

fn io_err(path: &Path, what: impl std::fmt::Display) -> OperatorError {
    OperatorError::file(format!("{}: {what}", path.display()))
}

fn io_err_from(
    path: &Path,
    what: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> OperatorError {
    let context = if what.is_empty() {
        path.display().to_string()
    } else {
        format!("{}: {what}", path.display())
    };
    OperatorError::file_from(context, source)
}

/// Checks a loaded `rows × cols` kernel and normalises it, the same way whatever the file's
/// format: it must be square with an odd side, every value finite, with a positive sum that
/// is not a near-cancellation ([`MIN_SUM_RATIO`]) and values not all subnormal; it is then
/// divided by its sum (unless that is already 1 within [`SUM_TOLERANCE`]).
pub(crate) fn normalise(
    path: &Path,
    values: Vec<f32>,
    rows: usize,
    cols: usize,
) -> Result<KernelData, OperatorError> {
    if rows != cols {
        return Err(io_err(
            path,
            format!("kernel must be square, got {rows}×{cols}"),
        ));
    }
    if rows == 0 || rows.is_multiple_of(2) {
        return Err(io_err(
            path,
            format!("kernel side must be odd (the centre is a pixel), got {rows}×{cols}"),
        ));
    }
    if values.len() != rows * cols {
        return Err(io_err(
            path,
            format!("holds {} values for a {rows}×{cols} kernel", values.len()),
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(io_err(
            path,
            format!(
                "kernel has non-finite values (the first at row {}, column {}: {})",
                i / cols,
                i % cols,
                values[i]
            ),
        ));
    }
    let sum: f64 = values.iter().map(|v| f64::from(*v)).sum();
    let magnitude: f64 = values.iter().map(|v| f64::from(v.abs())).sum();
    if sum <= 0.0 {
        return Err(io_err(
            path,
            format!(
                "kernel sums to {} (≤ 0); a blur kernel must have a positive sum (it is \
                 divided by it, so that the blur keeps brightness)",
                short(sum)
            ),
        ));
    }
    if sum < MIN_SUM_RATIO * magnitude {
        return Err(io_err(
            path,
            format!(
                "kernel sums to {} while its values' magnitudes sum to {}: the negative values \
                 cancel all but {} of the positive ones, and dividing by the sum would amplify \
                 it {:.0}×; a blur kernel must be (mostly) non-negative with a positive sum",
                short(sum),
                short(magnitude),
                short(sum / magnitude),
                magnitude / sum
            ),
        ));
    }
    let largest = values.iter().map(|v| v.abs()).fold(0f32, f32::max);
    if largest < f32::MIN_POSITIVE {
        return Err(io_err(
            path,
            format!(
                "kernel values are all below {} (subnormal float32, sum {}): too small to hold \
                 a kernel's shape; save it scaled (e.g. divided by its sum)",
                short(f64::from(f32::MIN_POSITIVE)),
                short(sum)
            ),
        ));
    }
    let data = KernelData {
        values,
        size: rows,
        stored_sum: sum,
    };
    if !data.was_rescaled() {
        return Ok(data);
    }
    let values = data
        .values
        .iter()
        .map(|v| (f64::from(*v) / sum) as f32)
        .collect();
    Ok(KernelData { values, ..data })
}

// ---------------------------------------------------------------------------------------
// .npy

/// Reads a 2-D `.npy` array of `f32`/`f64` (little- or big-endian, C or Fortran order) as
/// row-major `f32` values with its shape.
pub(crate) fn read_npy(path: &Path, bytes: &[u8]) -> Result<(Vec<f32>, Vec<usize>), OperatorError> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(io_err(path, "not a .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(io_err(path, "truncated .npy header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(io_err(path, format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| io_err(path, "truncated .npy header"))?;
    let header = std::str::from_utf8(header).map_err(|_| io_err(path, "bad .npy header"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))?;
        let rest = &header[at + key.len() + 2..];
        let colon = rest.find(':')?;
        Some(rest[colon + 1..].trim_start())
    };
    let descr = field("descr")
        .and_then(|s| s.strip_prefix('\'').and_then(|s| s.split('\'').next()))
        .ok_or_else(|| io_err(path, "no 'descr' in the .npy header"))?;
    let (width, little) = match descr {
        "<f4" => (4, true),
        ">f4" => (4, false),
        "<f8" => (8, true),
        ">f8" => (8, false),
        other => {
            return Err(io_err(
                path,
                format!("unsupported .npy dtype {other:?} (expected float32 or float64)"),
            ));
        }
    };
    let fortran = field("fortran_order")
        .map(|s| s.starts_with("True"))
        .ok_or_else(|| io_err(path, "no 'fortran_order' in the .npy header"))?;
    let shape_s = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| io_err(path, "no 'shape' in the .npy header"))?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| io_err(path, format!("bad .npy shape ({shape_s})")))?;
    let n: usize = shape.iter().product();
    let data = &bytes[start + header_len..];
    if data.len() < n * width {
        return Err(io_err(
            path,
            format!("truncated .npy data: {} bytes for {n} values", data.len()),
        ));
    }
    let mut values: Vec<f32> = data[..n * width]
        .chunks_exact(width)
        .map(|c| match (width, little) {
            (4, true) => f32::from_le_bytes(c.try_into().unwrap()),
            (4, false) => f32::from_be_bytes(c.try_into().unwrap()),
            (_, true) => f64::from_le_bytes(c.try_into().unwrap()) as f32,
            (_, false) => f64::from_be_bytes(c.try_into().unwrap()) as f32,
        })
        .collect();
    if fortran && shape.len() == 2 {
        let (r, c) = (shape[0], shape[1]);
        let col_major = values;
        values = (0..r * c).map(|i| col_major[(i % c) * r + i / c]).collect();
    }
    Ok((values, shape))
}

/// Encodes a row-major `rows × cols` `f32` array as a version-1.0 `.npy` file.
pub(crate) fn encode_npy(values: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Pad with spaces so magic + version + length + header (with its newline) is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------
// safetensors

/// Reads the kernel tensor of a safetensors file: the only tensor, or the one named `kernel`.
pub(crate) fn read_safetensors(
    path: &Path,
    bytes: &[u8],
) -> Result<(Vec<f32>, Vec<usize>), OperatorError> {
    use safetensors::{Dtype, SafeTensors};
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| io_err_from(path, "not a safetensors file", e))?;
    let names = st.names();
    let name = if names.len() == 1 {
        names[0].to_string()
    } else if names.contains(&"kernel") {
        "kernel".to_string()
    } else {
        let mut names: Vec<&str> = names;
        names.sort_unstable();
        return Err(io_err(
            path,
            format!(
                "holds {} tensors ({}) and none is named `kernel`",
                names.len(),
                names.join(", ")
            ),
        ));
    };
    let t = st
        .tensor(&name)
        .map_err(|e| io_err_from(path, &format!("tensor {name}"), e))?;
    let values: Vec<f32> = match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F64 => t
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        other => {
            return Err(io_err(
                path,
                format!("tensor {name} has dtype {other:?}; expected F32 or F64"),
            ));
        }
    };
    Ok((values, t.shape().to_vec()))
}

/// Encodes a `size × size` kernel as a safetensors file with one F32 tensor named `kernel`.
pub(crate) fn encode_safetensors(values: &[f32], size: usize) -> Result<Vec<u8>, OperatorError> {
    use safetensors::{Dtype, tensor::TensorView};
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, vec![size, size], &bytes)
        .map_err(|e| OperatorError::file_from("kernel tensor", e))?;
    safetensors::serialize([("kernel", view)], None)
        .map_err(|e| OperatorError::file_from("kernel safetensors", e))
}

// ---------------------------------------------------------------------------------------
// PNG

/// Reads a kernel image (PNG or JPEG, through the same loader as every image: limits,
/// truncation checks, EXIF orientation) as its grey levels (colour → luma), in [0, 1] and
/// not yet normalised.
pub(crate) fn read_image(
    path: &Path,
    bytes: &[u8],
) -> Result<(Vec<f32>, Vec<usize>), OperatorError> {
    let limits = tweedie_io::ImageLimits::from_env()?;
    let img = tweedie_io::decode_dynamic_image(bytes, path, &limits)?.to_luma32f();
    let (w, h) = (img.width() as usize, img.height() as usize);
    Ok((img.into_raw(), vec![h, w]))
}

/// Encodes a kernel as an 8-bit grey PNG scaled so its maximum is white (for viewing; loading
/// it back gives the kernel up to 8-bit quantisation).
pub(crate) fn encode_png(values: &[f32], size: usize) -> Result<Vec<u8>, OperatorError> {
    let max = values.iter().cloned().fold(0f32, f32::max);
    let scale = if max > 0.0 { 255.0 / max } else { 0.0 };
    let pixels: Vec<u8> = values
        .iter()
        .map(|v| (v.max(0.0) * scale).round().clamp(0.0, 255.0) as u8)
        .collect();
    let img = image::GrayImage::from_raw(size as u32, size as u32, pixels)
        .ok_or_else(|| OperatorError::file("kernel image size mismatch"))?;
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| OperatorError::file_from("cannot encode kernel PNG", e))?;
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically, naming the file in errors.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), OperatorError> {
    tweedie_io::write_atomic(path, bytes).map_err(|e| io_err_from(path, "", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips_and_reads_f64_and_fortran() {
        let p = Path::new("k.npy");
        let v: Vec<f32> = (0..15).map(|i| i as f32 * 0.5).collect();
        let bytes = encode_npy(&v, 3, 5);
        assert_eq!(
            (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
            0
        );
        let (back, shape) = read_npy(p, &bytes).unwrap();
        assert_eq!((back, shape), (v.clone(), vec![3, 5]));
        // A float64, Fortran-ordered 2×3 array [[0,1,2],[3,4,5]] as numpy writes it.
        let header = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16 + 1).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.push(b'\n');
        for x in [0.0f64, 3.0, 1.0, 4.0, 2.0, 5.0] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        let (back, shape) = read_npy(p, &b).unwrap();
        assert_eq!(back, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(shape, vec![2, 3]);
        assert!(read_npy(p, b"not numpy at all").is_err());
        let i8_header = b"\x93NUMPY\x01\x00\x10\x00{'descr': '|i1'}";
        let err = read_npy(p, i8_header).unwrap_err().to_string();
        assert!(err.contains("dtype"), "{err}");
    }

    #[test]
    fn numbers_in_messages_are_short() {
        assert_eq!(short(16.0), "16");
        assert_eq!(short(3.764706), "3.76471");
        assert_eq!(short(0.0), "0");
        assert_eq!(short(1e38), "1.000e38");
        assert_eq!(short(8e-29), "8.000e-29");
        assert_eq!(short(0.001), "0.001");
    }

    #[test]
    fn validation_names_the_problem() {
        let p = Path::new("k");
        let e = |v: Vec<f32>, r, c| normalise(p, v, r, c).unwrap_err().to_string();
        assert!(e(vec![1.0; 6], 2, 3).contains("square"));
        assert!(e(vec![1.0; 4], 2, 2).contains("odd"));
        assert!(e(vec![-1.0; 9], 3, 3).contains("positive sum"));
        assert!(e(vec![f32::NAN; 9], 3, 3).contains("non-finite"));
        assert!(normalise(p, vec![0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0], 3, 3).is_ok());
    }

    #[test]
    fn every_kernel_is_normalised_by_one_rule() {
        let p = Path::new("k");
        let sum = |k: &KernelData| k.values.iter().map(|v| f64::from(*v)).sum::<f64>();
        // Any positive scale, from huge to tiny, gives the same kernel.
        let shape = [1.0f32, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0];
        let unit: Vec<f32> = shape.iter().map(|v| v / 16.0).collect();
        for scale in [1e38f32 / 4.0, 1e3, 1.0 / 16.0, 8e-29 / 16.0, 1e-36] {
            let k = normalise(p, shape.iter().map(|v| v * scale).collect(), 3, 3).unwrap();
            assert!(
                (sum(&k) - 1.0).abs() < 1e-6,
                "scale {scale}: sum {}",
                sum(&k)
            );
            for (a, b) in k.values.iter().zip(&unit) {
                assert!((a - b).abs() < 1e-6, "scale {scale}");
            }
        }
        // A kernel that sums to 1 already is kept bit for bit.
        let k = normalise(p, unit.clone(), 3, 3).unwrap();
        assert!(!k.was_rescaled() && k.values == unit);
        // Refused: a sum ≤ 0, a cancelling sum, infinities, subnormal values.
        let e = |v: Vec<f32>| normalise(p, v, 3, 3).unwrap_err().to_string();
        assert!(e(vec![0.0; 9]).contains("(≤ 0)"));
        let mut cancel = vec![0.0f32; 9];
        (cancel[0], cancel[8]) = (1.0, -0.9999);
        assert!(e(cancel).contains("cancel"));
        let mut inf = unit.clone();
        inf[4] = f32::INFINITY;
        assert!(e(inf).contains("row 1, column 1"));
        assert!(e(vec![1e-40; 9]).contains("subnormal"));
        // Mild negative lobes are fine.
        let mut lobes = unit;
        lobes[0] = -0.01;
        assert!(normalise(p, lobes, 3, 3).unwrap().was_rescaled());
    }
}
