//! Line plots (NFE curves, loss curves) with `plotters`, drawn into an RGB buffer and saved
//! as PNG through [`write_atomic`](crate::write_atomic). Text uses the DejaVu Sans font
//! built into the crate (`fonts/`), so plots look the same on every machine.

use crate::IoError;
use plotters::prelude::*;
use std::path::Path;

/// DejaVu Sans (free licence: `fonts/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// One line of a panel: its legend name and its (x, y) points (NaN y values are left out).
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the chart.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Logarithmic x axis (e.g. number of steps).
    pub log_x: bool,
    /// The lines.
    pub series: Vec<Series>,
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> IoError {
    IoError::Encode {
        path: path.into(),
        reason: format!("plot: {e}"),
    }
}

/// Draws `panels` on a grid of `columns` columns, each panel `panel_size` = (width, height)
/// pixels, and saves the figure as a PNG at `path`. Line colours follow the series' order,
/// so the same method keeps its colour across panels.
pub fn save_panels(
    panels: &[Panel],
    columns: usize,
    panel_size: (u32, u32),
    path: impl AsRef<Path>,
) -> Result<(), IoError> {
    let path = path.as_ref();
    if panels.is_empty() || columns == 0 {
        return Err(plot_error(path, "nothing to draw"));
    }
    // Registering twice is harmless (the second call replaces the first).
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| plot_error(path, "the built-in font does not load"))?;
    let rows = panels.len().div_ceil(columns);
    let (w, h) = (panel_size.0 * columns as u32, panel_size.1 * rows as u32);
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let areas = root.split_evenly((rows, columns));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel).map_err(|e| plot_error(path, e))?;
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| plot_error(path, "buffer size mismatch"))?;
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| plot_error(path, e))?;
    crate::write_atomic(path, &bytes).map_err(|source| IoError::File {
        path: path.into(),
        source,
    })
}

/// The data range of all finite points, padded by 5 % (a flat range gets ±1).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 1.0, hi + 1.0);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), String> {
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = range(points().map(|p| p.0));
    let (y0, y1) = range(points().map(|p| p.1));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    let colour = |i: usize| Palette99::pick(i).to_rgba();
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(panel.x_label.as_str())
                .y_desc(panel.y_label.as_str())
                .label_style(("sans-serif", 14))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .light_line_style(WHITE)
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in panel.series.iter().enumerate() {
                let c = colour(i);
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.1.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                    .map_err(|e| e.to_string())?;
            }
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    if panel.log_x {
        // Ticks at the data's own x values (e.g. 20, 50, 100, 250, 1000 steps).
        let mut keys: Vec<f64> = points().map(|p| p.0).filter(|x| *x > 0.0).collect();
        keys.sort_by(f64::total_cmp);
        keys.dedup();
        let lo = keys.first().copied().unwrap_or(1.0) * 0.8;
        let hi = keys.last().copied().unwrap_or(10.0) * 1.25;
        use plotters::coord::combinators::BindKeyPoints;
        body!(
            builder
                .build_cartesian_2d((lo..hi).log_scale().with_key_points(keys), y0..y1)
                .map_err(|e| e.to_string())?
        );
    } else {
        body!(
            builder
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_panel_plot_is_written_and_decodes() {
        let dir = std::env::temp_dir().join(format!("tweedie-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nfe.png");
        let series = |name: &str, k: f64| Series {
            name: name.into(),
            points: [20.0, 50.0, 100.0, 1000.0]
                .iter()
                .map(|&x| (x, k * f64::ln(x)))
                .collect(),
        };
        let panel = |title: &str| Panel {
            title: title.into(),
            x_label: "steps".into(),
            y_label: "PSNR (dB)".into(),
            log_x: true,
            series: vec![series("DPS", 1.0), series("DDNM", 2.0)],
        };
        save_panels(&[panel("a"), panel("b")], 2, (320, 240), &path).unwrap();
        let img = crate::load_image(&path).unwrap();
        assert_eq!((img.width, img.height), (640, 240));
        // Something besides the white background was drawn.
        let rgb = img.to_rgb8();
        let coloured = rgb.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(coloured > 1000, "{coloured}");
        assert!(save_panels(&[], 2, (320, 240), &path).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
