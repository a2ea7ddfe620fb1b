//! Heat maps: a scalar per pixel (a posterior spread, an error) as a colour image.

use crate::image_io::{Image, IoError};

/// Colour stops of [`heat_colour`] (matplotlib's `inferno` at 0, ¼, ½, ¾, 1), RGB in [0, 1].
const STOPS: [[f32; 3]; 5] = [
    [0.001, 0.000, 0.014],
    [0.341, 0.062, 0.429],
    [0.735, 0.216, 0.330],
    [0.978, 0.557, 0.035],
    [0.988, 1.000, 0.645],
];

/// The colour of `t` ∈ [0, 1] (clamped; NaN is 0) on a dark-to-bright scale close to
/// matplotlib's `inferno` (black → purple → red → orange → light yellow), RGB in [0, 1].
/// Brightness grows with `t`, so the map also reads in grey.
pub fn heat_colour(t: f32) -> [f32; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [0, 1, 2].map(|c| a[c] + (b[c] - a[c]) * f)
}

/// `values` (row-major, `height` rows of `width`) as a heat-map image: 0 is black, `max` the
/// brightest colour of [`heat_colour`], values above `max` saturate. A `max` that is not
/// finite and > 0 (e.g. an all-zero map's) draws every pixel at 0. Say the scale (0 … `max`)
/// in the image's caption.
pub fn heat_map(values: &[f32], width: usize, height: usize, max: f32) -> Result<Image, IoError> {
    if values.len() != width * height {
        return Err(IoError::Invalid {
            what: "heat map".into(),
            reason: format!(
                "{} values for a {width}×{height} image (needs {})",
                values.len(),
                width * height
            ),
        });
    }
    let scale = if max.is_finite() && max > 0.0 {
        1.0 / max
    } else {
        0.0
    };
    let n = width * height;
    let mut data = vec![0f32; 3 * n];
    for (i, v) in values.iter().enumerate() {
        let rgb = heat_colour(v * scale);
        for c in 0..3 {
            data[c * n + i] = rgb[c] * 2.0 - 1.0;
        }
    }
    Ok(Image {
        width,
        height,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_map_runs_dark_to_bright_and_saturates() {
        let luma = |c: [f32; 3]| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
        let mut last = -1.0;
        for k in 0..=100 {
            let l = luma(heat_colour(k as f32 / 100.0));
            assert!(l > last, "brightness must grow: {k}");
            last = l;
        }
        assert_eq!(heat_colour(-1.0), heat_colour(0.0));
        assert_eq!(heat_colour(2.0), heat_colour(1.0));
        assert_eq!(heat_colour(f32::NAN), heat_colour(0.0));
        let img = heat_map(&[0.0, 0.5, 1.0, 3.0], 2, 2, 1.0).unwrap();
        assert_eq!((img.width, img.height, img.data.len()), (2, 2, 12));
        // Pixel 3 (above max) saturates to the colour of max (pixel 2).
        for c in 0..3 {
            assert_eq!(img.data[c * 4 + 3], img.data[c * 4 + 2]);
        }
        // An all-zero map (max 0) is black, not NaN.
        let zero = heat_map(&[0.0; 4], 2, 2, 0.0).unwrap();
        assert!(zero.data.iter().all(|v| v.is_finite() && *v < -0.9));
        assert!(heat_map(&[0.0; 3], 2, 2, 1.0).is_err());
    }
}
