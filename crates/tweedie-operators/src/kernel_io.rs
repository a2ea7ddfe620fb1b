//! Blur-kernel files: NumPy `.npy`, safetensors, grey PNG and our JSON, read into a square
//! row-major `f32` kernel, and written back (`.npy` exact, PNG for viewing).
//!
//! Numeric formats (`.npy`, safetensors, JSON) are used exactly as stored (DPS's kernels already
//! sum to 1); a PNG holds 8/16-bit grey levels, so its values are divided by their sum.
//! Every loader checks the kernel is 2-D, square, of odd side, finite, with a positive sum.

use crate::OperatorError;
use std::path::Path;

/// A square kernel read from a file: `size × size` row-major values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KernelData {
    pub values: Vec<f32>,
    pub size: usize,
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

/// Checks a loaded `rows × cols` kernel: square, odd side, finite values, positive sum.
pub(crate) fn validate(
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
    if values.iter().any(|v| !v.is_finite()) {
        return Err(io_err(path, "kernel has non-finite values"));
    }
    let sum: f64 = values.iter().map(|v| *v as f64).sum();
    if sum <= 0.0 {
        return Err(io_err(
            path,
            format!("kernel sums to {sum} (≤ 0); a blur kernel must have a positive sum"),
        ));
    }
    Ok(KernelData { values, size: rows })
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

/// Reads a kernel image (any format `image` decodes; colour is converted to luma) and divides
/// its grey levels by their sum.
pub(crate) fn read_png(path: &Path) -> Result<(Vec<f32>, Vec<usize>), OperatorError> {
    let img = image::ImageReader::open(path)
        .map_err(|e| io_err_from(path, "", e))?
        .with_guessed_format()
        .map_err(|e| io_err_from(path, "", e))?
        .decode()
        .map_err(|e| io_err_from(path, "cannot decode kernel image", e))?
        .to_luma32f();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.into_raw();
    let sum: f64 = raw.iter().map(|v| *v as f64).sum();
    if sum <= 0.0 {
        return Err(io_err(path, "kernel image is all black (sums to 0)"));
    }
    let values = raw.iter().map(|v| (*v as f64 / sum) as f32).collect();
    Ok((values, vec![h, w]))
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
    fn validation_names_the_problem() {
        let p = Path::new("k");
        let e = |v: Vec<f32>, r, c| validate(p, v, r, c).unwrap_err().to_string();
        assert!(e(vec![1.0; 6], 2, 3).contains("square"));
        assert!(e(vec![1.0; 4], 2, 2).contains("odd"));
        assert!(e(vec![-1.0; 9], 3, 3).contains("positive sum"));
        assert!(e(vec![f32::NAN; 9], 3, 3).contains("non-finite"));
        assert!(validate(p, vec![0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0], 3, 3).is_ok());
    }
}
