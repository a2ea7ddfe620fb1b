//! Figure grids: rows of images with caption lines under each and optional column titles,
//! rendered with an embedded 8×8 bitmap font (no system fonts needed).

use crate::image_io::{Image, IoError, save_png};
use font8x8::UnicodeFonts;
use std::path::Path;

/// One cell of a grid: an image and the caption lines printed under it.
#[derive(Debug, Clone)]
pub struct GridCell {
    /// The picture.
    pub image: Image,
    /// Caption lines (e.g. `"PSNR 27.3"`, `"LPIPS 0.203"`).
    pub caption: Vec<String>,
}

impl GridCell {
    /// A cell with a caption (lines split on `\n`).
    pub fn new(image: Image, caption: &str) -> Self {
        let caption = if caption.is_empty() {
            Vec::new()
        } else {
            caption.lines().map(String::from).collect()
        };
        Self { image, caption }
    }
}

/// A grid of captioned images.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    titles: Vec<String>,
    rows: Vec<Vec<GridCell>>,
    min_cell: usize,
}

const PAD: usize = 4;
const LINE: usize = 10;

impl Grid {
    /// An empty grid whose cells are upscaled (nearest neighbour, integer factor) to at least
    /// `min_cell` pixels wide so captions fit under small images.
    pub fn new(min_cell: usize) -> Self {
        Self {
            min_cell,
            ..Default::default()
        }
    }

    /// A captionless grid of `images`, `cols` per row.
    pub fn from_images(images: &[Image], cols: usize, min_cell: usize) -> Self {
        let mut g = Self::new(min_cell);
        for row in images.chunks(cols.max(1)) {
            g.push_row(row.iter().map(|im| GridCell::new(im.clone(), "")).collect());
        }
        g
    }

    /// Column titles printed above the first row.
    pub fn with_titles<S: AsRef<str>>(mut self, titles: &[S]) -> Self {
        self.titles = titles.iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    /// Appends a row.
    pub fn push_row(&mut self, row: Vec<GridCell>) {
        self.rows.push(row);
    }

    /// Renders the grid on a white background.
    pub fn render(&self) -> Image {
        let cols = self
            .rows
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(self.titles.len())
            .max(1);
        let img_w = self
            .rows
            .iter()
            .flatten()
            .map(|c| c.image.width)
            .max()
            .unwrap_or(8);
        let img_h = self
            .rows
            .iter()
            .flatten()
            .map(|c| c.image.height)
            .max()
            .unwrap_or(8);
        let factor = self.min_cell.div_ceil(img_w).max(1);
        let (cw, ch) = (img_w * factor, img_h * factor);
        let max_chars = (cw / 8).max(1);
        let wrapped: Vec<Vec<Vec<String>>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|c| wrap(&c.caption, max_chars)).collect())
            .collect();
        let cap_lines = wrapped.iter().flatten().map(Vec::len).max().unwrap_or(0);
        let title_h = if self.titles.is_empty() {
            0
        } else {
            LINE + PAD
        };
        let row_h = ch + cap_lines * LINE + PAD;
        let width = cols * (cw + PAD) + PAD;
        let height = PAD + title_h + self.rows.len() * row_h;
        let mut canvas = Image::filled(width, height, 1.0);
        for (j, t) in self.titles.iter().enumerate() {
            draw_text(&mut canvas, PAD + j * (cw + PAD), PAD, t, cw);
        }
        for (i, row) in self.rows.iter().enumerate() {
            let y0 = PAD + title_h + i * row_h;
            for (j, cell) in row.iter().enumerate() {
                let x0 = PAD + j * (cw + PAD);
                blit_scaled(&mut canvas, &cell.image, x0, y0, factor);
                for (l, line) in wrapped[i][j].iter().enumerate() {
                    draw_text(&mut canvas, x0, y0 + ch + 1 + l * LINE, line, cw);
                }
            }
        }
        canvas
    }

    /// Renders and saves as PNG (atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), IoError> {
        save_png(&self.render(), path)
    }
}

/// Word-wraps caption lines to `max_chars` characters (long words are cut).
fn wrap(lines: &[String], max_chars: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines {
        let mut cur = String::new();
        for word in line.split_whitespace() {
            let extra = if cur.is_empty() { 0 } else { 1 };
            if !cur.is_empty() && cur.chars().count() + extra + word.chars().count() > max_chars {
                out.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
        out.push(cur);
    }
    out
}

fn blit_scaled(canvas: &mut Image, img: &Image, x0: usize, y0: usize, factor: usize) {
    let (w, h) = (canvas.width, canvas.height);
    for c in 0..3 {
        for y in 0..img.height * factor {
            for x in 0..img.width * factor {
                let v =
                    img.data[c * img.width * img.height + (y / factor) * img.width + x / factor];
                if y0 + y < h && x0 + x < w {
                    canvas.data[c * w * h + (y0 + y) * w + x0 + x] = v;
                }
            }
        }
    }
}

/// Draws `text` in black at (x0, y0), clipped to `max_w` pixels.
fn draw_text(canvas: &mut Image, x0: usize, y0: usize, text: &str, max_w: usize) {
    let (w, h) = (canvas.width, canvas.height);
    for (k, ch) in text.chars().enumerate() {
        if (k + 1) * 8 > max_w {
            break;
        }
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 1 {
                    let (x, y) = (x0 + k * 8 + gx, y0 + gy);
                    if x < w && y < h {
                        for c in 0..3 {
                            canvas.data[c * w * h + y * w + x] = -1.0;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_captions_wrap_at_word_boundaries() {
        let w = wrap(&["inpainting (box 16×16)".to_string()], 12);
        assert_eq!(w, vec!["inpainting", "(box 16×16)"]);
        assert_eq!(wrap(&["a b".to_string()], 12), vec!["a b"]);
    }

    #[test]
    fn grid_layout_and_text_are_drawn() {
        let mut g = Grid::new(64).with_titles(&["x0", "xt"]);
        g.push_row(vec![
            GridCell::new(Image::filled(32, 32, 0.0), "PSNR 27\nLPIPS .2"),
            GridCell::new(Image::filled(32, 32, 0.5), ""),
        ]);
        let out = g.render();
        // 2 columns of 64 px (32 upscaled ×2) with padding.
        assert_eq!(out.width, 2 * (64 + PAD) + PAD);
        assert_eq!(out.height, PAD + LINE + PAD + 64 + 2 * LINE + PAD);
        // Some caption pixels are black, and the image area carries the image value.
        assert!(out.data.iter().any(|v| *v == -1.0));
        let y = PAD + LINE + PAD + 10;
        assert_eq!(out.data[y * out.width + PAD + 70 + 10], 0.5);
    }
}
