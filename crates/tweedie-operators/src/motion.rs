//! A port of the `motionblur` package's `Kernel` (github.com/LeviBorodenko/motionblur, the
//! `from motionblur.motionblur import Kernel` of the DPS code), step by step:
//!
//! 1. **Path** on a canvas of twice the kernel size, `D = √((2w)² + (2h)²)` its diagonal:
//!    path length `L = 0.75·D·(U(0,1) + U(0, I²))`; steps `β(1, 30)·(1 − I + 0.1)·D` (a step is
//!    kept only if shorter than `L`) until they add up to `L`; a maximum angle
//!    `a ~ U(0, I·π)`, a jitter probability `j ~ β(2, 20)`, the first angle `~ U(−a, a)`, each
//!    further angle `|θ| ~ Triangular(0, I·a, a + 0.1)` with the sign of the previous angle,
//!    flipped with probability `j`; the path is the cumulative sum of `sₖ·e^{iθₖ}`, moved so its
//!    centre of mass is at the canvas centre after a random rotation `e^{i·U(0, π)}`.
//! 2. **Rasterisation** exactly as Pillow does it: `ImageDraw.line(path, width = ⌊D/150⌋)`
//!    (coordinates truncated to integers, Bresenham segments, the last point drawn; wider pens
//!    fill Pillow's quad per segment), white on black, 8-bit;
//!    `ImageFilter.GaussianBlur(⌊0.01·D⌋)` (Pillow's three-pass extended box blur, 8-bit);
//!    `resize((w, h), LANCZOS)` (Pillow's fixed-point two-pass resampler, 8-bit); the grey
//!    levels divided by their sum.
//!
//! `I` is the intensity in [0, 1] (0: a straight line). The random numbers come from our seeded
//! [`NoiseSource`], not NumPy's global stream, so a given DPS kernel cannot be regenerated
//! here: exact equality with a DPS run comes from its kernel file (`OperatorSpec::KernelBlur`).

use tweedie_core::NoiseSource;

/// The numerical-stability constant `eps = 0.1` of `motionblur.py`.
const EPS: f64 = 0.1;

/// The generative state of one kernel (the package's attributes), kept for tests.
#[derive(Debug, Clone)]
pub(crate) struct MotionPath {
    /// The path points (x, y) on the `2w × 2h` canvas.
    pub points: Vec<(f64, f64)>,
}

/// `U(low, high)` as NumPy's `uniform`: `low + (high − low)·u`.
fn uniform(noise: &mut NoiseSource, low: f64, high: f64) -> f64 {
    low + (high - low) * noise.uniform()
}

/// Exp(1) from a uniform (1 − u ∈ (0, 1], so the log is finite).
fn exponential(noise: &mut NoiseSource) -> f64 {
    -(1.0 - noise.uniform()).ln()
}

/// `β(a, b)` for integer a, b ≥ 1: `Gₐ/(Gₐ + G_b)` with `Gₖ` a sum of k Exp(1) draws;
/// `β(1, b)` by inversion, `1 − (1 − u)^{1/b}`.
fn beta_int(noise: &mut NoiseSource, a: u32, b: u32) -> f64 {
    if a == 1 {
        return 1.0 - (1.0 - noise.uniform()).powf(1.0 / b as f64);
    }
    let ga: f64 = (0..a).map(|_| exponential(noise)).sum();
    let gb: f64 = (0..b).map(|_| exponential(noise)).sum();
    ga / (ga + gb)
}

/// NumPy's `triangular(left, mode, right)` (inversion of one uniform).
fn triangular(noise: &mut NoiseSource, left: f64, mode: f64, right: f64) -> f64 {
    let base = right - left;
    let left_base = mode - left;
    let ratio = left_base / base;
    let u = noise.uniform();
    if u <= ratio {
        left + (u * left_base * base).sqrt()
    } else {
        right - ((1.0 - u) * (right - mode) * base).sqrt()
    }
}

/// `np.sign`: −1, 0 or 1.
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `Kernel._createPath` for a `2w × 2h` canvas.
pub(crate) fn create_path(
    width: usize,
    height: usize,
    intensity: f64,
    noise: &mut NoiseSource,
) -> MotionPath {
    let (x, y) = ((2 * width) as f64, (2 * height) as f64);
    let diagonal = (x * x + y * y).sqrt();
    // getSteps
    let max_len =
        0.75 * diagonal * (uniform(noise, 0.0, 1.0) + uniform(noise, 0.0, intensity * intensity));
    let mut steps: Vec<f64> = Vec::new();
    let mut total = 0.0;
    while total < max_len {
        let step = beta_int(noise, 1, 30) * (1.0 - intensity + EPS) * diagonal;
        if step < max_len {
            steps.push(step);
            total += step;
        }
    }
    if steps.is_empty() {
        // L = 0 (probability 2⁻⁵³): the package divides by zero here; a resting camera instead.
        steps.push(0.0);
    }
    // getAngles
    let max_angle = uniform(noise, 0.0, intensity * std::f64::consts::PI);
    let jitter = beta_int(noise, 2, 20);
    let mut angles = vec![uniform(noise, -max_angle, max_angle)];
    while angles.len() < steps.len() {
        let mut angle = triangular(noise, 0.0, intensity * max_angle, max_angle + EPS);
        let prev = sign(*angles.last().unwrap());
        if noise.uniform() < jitter {
            angle *= -prev;
        } else {
            angle *= prev;
        }
        angles.push(angle);
    }
    // The path: cumulative sum of the complex increments, centred on its centre of mass,
    // rotated by a random angle in (0, π), moved to the canvas centre.
    let mut points = Vec::with_capacity(steps.len());
    let (mut px, mut py) = (0.0f64, 0.0f64);
    for (s, a) in steps.iter().zip(&angles) {
        px += s * a.cos();
        py += s * a.sin();
        points.push((px, py));
    }
    let n = points.len() as f64;
    let (cx, cy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (px, py)| (sx + px, sy + py));
    let (cx, cy) = (cx / n, cy / n);
    let rot = uniform(noise, 0.0, std::f64::consts::PI);
    let (c, s) = (rot.cos(), rot.sin());
    for p in &mut points {
        let (dx, dy) = (p.0 - cx, p.1 - cy);
        *p = (dx * c - dy * s + x / 2.0, dx * s + dy * c + y / 2.0);
    }
    MotionPath { points }
}

/// An 8-bit grey canvas (Pillow's "L" band; the package's RGB image has three equal bands).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Canvas {
    pub w: usize,
    pub h: usize,
    pub px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            px: vec![0; w * h],
        }
    }

    /// Pillow's `point8`: sets a pixel, clipped to the image.
    fn point(&mut self, x: i64, y: i64, ink: u8) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            self.px[y as usize * self.w + x as usize] = ink;
        }
    }

    /// Pillow's `hline8`: a horizontal run `x0..=x1` on row `y`, clipped.
    fn hline(&mut self, x0: i64, y: i64, x1: i64, ink: u8) {
        let (mut a, mut b) = if x0 <= x1 { (x0, x1) } else { (x1, x0) };
        if y < 0 || y >= self.h as i64 || a >= self.w as i64 || b < 0 {
            return;
        }
        a = a.max(0);
        b = b.min(self.w as i64 - 1);
        for x in a..=b {
            self.px[y as usize * self.w + x as usize] = ink;
        }
    }

    /// Pillow's `line8`: Bresenham from (x0, y0), excluding the end point.
    fn line(&mut self, mut x0: i64, mut y0: i64, x1: i64, y1: i64, ink: u8) {
        let (mut dx, xs) = if x1 - x0 < 0 {
            (x0 - x1, -1)
        } else {
            (x1 - x0, 1)
        };
        let (mut dy, ys) = if y1 - y0 < 0 {
            (y0 - y1, -1)
        } else {
            (y1 - y0, 1)
        };
        if dx == 0 {
            for _ in 0..dy {
                self.point(x0, y0, ink);
                y0 += ys;
            }
        } else if dy == 0 {
            for _ in 0..dx {
                self.point(x0, y0, ink);
                x0 += xs;
            }
        } else if dx > dy {
            let n = dx;
            dy += dy;
            let mut e = dy - dx;
            dx += dx;
            for _ in 0..n {
                self.point(x0, y0, ink);
                if e >= 0 {
                    y0 += ys;
                    e -= dx;
                }
                e += dy;
                x0 += xs;
            }
        } else {
            let n = dy;
            dx += dx;
            let mut e = dx - dy;
            dy += dy;
            for _ in 0..n {
                self.point(x0, y0, ink);
                if e >= 0 {
                    x0 += xs;
                    e -= dy;
                }
                e += dx;
                y0 += ys;
            }
        }
    }

    /// Pillow's `ImagingDrawWideLine`: the segment's quad, filled by `polygon_generic`.
    fn wide_line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, width: i64, ink: u8) {
        let (dx, dy) = (x1 - x0, y1 - y0);
        if dx == 0 && dy == 0 {
            self.point(x0, y0, ink);
            return;
        }
        let round_up = |f: f64| -> i64 {
            if f >= 0.0 {
                (f + 0.5).floor() as i64
            } else {
                -((f.abs() + 0.5).floor() as i64)
            }
        };
        let round_down = |f: f64| -> i64 {
            if f >= 0.0 {
                (f - 0.5).ceil() as i64
            } else {
                -((f.abs() - 0.5).ceil() as i64)
            }
        };
        let big = (dx as f64).hypot(dy as f64);
        let small = (width - 1) as f64 / 2.0;
        let ratio_max = round_up(small) as f64 / big;
        let ratio_min = round_down(small) as f64 / big;
        let dxmin = round_down(ratio_min * dy as f64);
        let dxmax = round_down(ratio_max * dy as f64);
        let dymin = round_down(ratio_min * dx as f64);
        let dymax = round_down(ratio_max * dx as f64);
        let v = [
            (x0 - dxmin, y0 + dymax),
            (x1 - dxmin, y1 + dymax),
            (x1 + dxmax, y1 - dymin),
            (x0 + dxmax, y0 - dymin),
        ];
        let edges: Vec<Edge> = (0..4).map(|i| Edge::new(v[i], v[(i + 1) % 4])).collect();
        self.polygon(&edges, ink);
    }

    /// Pillow's `polygon_generic` scan-line filler (non-zero test by crossings).
    fn polygon(&mut self, e: &[Edge], ink: u8) {
        let mut ymin = self.h as i64 - 1;
        let mut ymax = 0i64;
        let mut table: Vec<&Edge> = Vec::new();
        for edge in e {
            ymin = ymin.min(edge.ymin);
            ymax = ymax.max(edge.ymax);
            if edge.ymin != edge.ymax {
                table.push(edge);
            }
        }
        ymin = ymin.max(0);
        ymax = ymax.min(self.h as i64);
        let round_up = |f: f32| -> i64 {
            if f >= 0.0 {
                (f + 0.5).floor() as i64
            } else {
                -((f.abs() + 0.5).floor() as i64)
            }
        };
        let round_down = |f: f32| -> i64 {
            if f >= 0.0 {
                (f - 0.5).ceil() as i64
            } else {
                -((f.abs() - 0.5).ceil() as i64)
            }
        };
        let mut y = ymin;
        while y <= ymax {
            let mut xx: Vec<f32> = Vec::new();
            for cur in &table {
                if y >= cur.ymin && y <= cur.ymax {
                    xx.push((y - cur.y0) as f32 * cur.dx + cur.x0 as f32);
                }
                if y == cur.ymax && y < ymax {
                    let last = *xx.last().unwrap_or(&0.0);
                    xx.push(last);
                }
            }
            xx.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            let mut x_pos = 0i64;
            let mut i = 1;
            while i < xx.len() {
                let x_end = round_down(xx[i]);
                if x_end < x_pos {
                    i += 2;
                    continue;
                }
                self.horizontal_edges(e, ink, &mut x_pos, y);
                if x_end < x_pos {
                    i += 2;
                    continue;
                }
                let mut x_start = round_up(xx[i - 1]);
                if x_pos > x_start {
                    x_start = x_pos;
                    if x_end < x_start {
                        i += 2;
                        continue;
                    }
                }
                self.hline(x_start, y, x_end, ink);
                x_pos = x_end + 1;
                i += 2;
            }
            self.horizontal_edges(e, ink, &mut x_pos, y);
            y += 1;
        }
    }

    /// Pillow's `draw_horizontal_lines` (horizontal edges on row `y`).
    fn horizontal_edges(&mut self, e: &[Edge], ink: u8, x_pos: &mut i64, y: i64) {
        for edge in e {
            if edge.ymin == y && edge.ymin == edge.ymax {
                let mut xmin = edge.xmin;
                if *x_pos < xmin {
                    continue;
                }
                let xmax = edge.xmax;
                if *x_pos > xmin {
                    xmin = *x_pos;
                    if xmax < xmin {
                        continue;
                    }
                }
                self.hline(xmin, edge.ymin, xmax, ink);
                *x_pos = xmax + 1;
            }
        }
    }

    /// `ImageDraw.line(points, width)`: thin pens draw Bresenham segments plus the last point,
    /// wider pens one filled quad per segment. Coordinates are truncated towards zero like C's
    /// `(int)` cast.
    fn polyline(&mut self, points: &[(f64, f64)], width: i64, ink: u8) {
        let ip = |p: &(f64, f64)| (p.0 as i64, p.1 as i64);
        if width <= 1 {
            for w in points.windows(2) {
                let ((x0, y0), (x1, y1)) = (ip(&w[0]), ip(&w[1]));
                self.line(x0, y0, x1, y1, ink);
            }
            if points.len() >= 2 {
                let (x, y) = ip(points.last().unwrap());
                self.point(x, y, ink);
            }
        } else {
            for w in points.windows(2) {
                let ((x0, y0), (x1, y1)) = (ip(&w[0]), ip(&w[1]));
                self.wide_line(x0, y0, x1, y1, width, ink);
            }
        }
    }

    fn transpose(&self) -> Canvas {
        let mut t = Canvas::new(self.h, self.w);
        for y in 0..self.h {
            for x in 0..self.w {
                t.px[x * self.h + y] = self.px[y * self.w + x];
            }
        }
        t
    }
}

/// Pillow's polygon edge.
#[derive(Debug, Clone, Copy)]
struct Edge {
    x0: i64,
    y0: i64,
    xmin: i64,
    ymin: i64,
    xmax: i64,
    ymax: i64,
    dx: f32,
}

impl Edge {
    fn new((x0, y0): (i64, i64), (x1, y1): (i64, i64)) -> Self {
        let dx = if y0 == y1 {
            0.0
        } else {
            (x1 - x0) as f32 / (y1 - y0) as f32
        };
        Self {
            x0,
            y0,
            xmin: x0.min(x1),
            xmax: x0.max(x1),
            ymin: y0.min(y1),
            ymax: y0.max(y1),
            dx,
        }
    }
}

/// Pillow's `_gaussian_blur_radius` (Gwosdek et al.'s extended box radius for `passes` passes),
/// in the C code's float/double mix.
fn extended_box_radius(radius: f32, passes: i32) -> f32 {
    let sigma2: f32 = radius * radius / passes as f32;
    let big_l: f32 = (12.0 * sigma2 as f64 + 1.0).sqrt() as f32;
    let l: f32 = ((big_l as f64 - 1.0) / 2.0).floor() as f32;
    let mut a: f32 = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// Pillow's `ImagingLineBoxBlur8` on one row (UINT32 arithmetic, wrapping like C).
fn box_blur_line(out: &mut [u8], line: &[u8], radius: usize, ww: u32, fw: u32) {
    let lastx = line.len() - 1;
    let xsize = line.len();
    let edge_a = (radius + 1).min(xsize);
    let edge_b = xsize.saturating_sub(radius + 1);
    let px = |i: usize| line[i] as u32;
    let mut acc: u32 = px(0).wrapping_mul(radius as u32 + 1);
    for x in 0..edge_a.saturating_sub(1) {
        acc = acc.wrapping_add(px(x));
    }
    acc = acc.wrapping_add(px(lastx).wrapping_mul((radius as u32 + 1).wrapping_sub(edge_a as u32)));
    let mut step = |x: usize, acc: &mut u32, sub: usize, add: usize, left: usize, right: usize| {
        *acc = acc.wrapping_add(px(add)).wrapping_sub(px(sub));
        let bulk = acc
            .wrapping_mul(ww)
            .wrapping_add((px(left) + px(right)).wrapping_mul(fw));
        out[x] = (bulk.wrapping_add(1 << 23) >> 24) as u8;
    };
    if edge_a <= edge_b {
        for x in 0..edge_a {
            step(x, &mut acc, 0, x + radius, 0, x + radius + 1);
        }
        for x in edge_a..edge_b {
            step(
                x,
                &mut acc,
                x - radius - 1,
                x + radius,
                x - radius - 1,
                x + radius + 1,
            );
        }
        for x in edge_b..=lastx {
            step(x, &mut acc, x - radius - 1, lastx, x - radius - 1, lastx);
        }
    } else {
        for x in 0..edge_b {
            step(x, &mut acc, 0, x + radius, 0, x + radius + 1);
        }
        for x in edge_b..edge_a {
            step(x, &mut acc, 0, lastx, 0, lastx);
        }
        for x in edge_a..=lastx {
            step(x, &mut acc, x - radius - 1, lastx, x - radius - 1, lastx);
        }
    }
}

/// Pillow's `ImagingHorizontalBoxBlur` with a fractional radius, applied to every row.
fn box_blur_rows(c: &mut Canvas, float_radius: f32) {
    let radius = float_radius as usize;
    let ww = (16_777_216f32 / (float_radius * 2.0 + 1.0)) as u32;
    let fw = (16_777_216u32.wrapping_sub((radius as u32 * 2 + 1).wrapping_mul(ww))) / 2;
    let mut out = vec![0u8; c.w];
    for y in 0..c.h {
        let row = &c.px[y * c.w..(y + 1) * c.w];
        box_blur_line(&mut out, row, radius, ww, fw);
        c.px[y * c.w..(y + 1) * c.w].copy_from_slice(&out);
    }
}

/// `ImageFilter.GaussianBlur(radius)`: Pillow's three-pass extended box blur along x, then y.
pub(crate) fn pillow_gaussian_blur(c: &Canvas, radius: f32) -> Canvas {
    if radius == 0.0 {
        return c.clone();
    }
    let r = extended_box_radius(radius, 3);
    let mut out = c.clone();
    if r != 0.0 {
        for _ in 0..3 {
            box_blur_rows(&mut out, r);
        }
        let mut t = out.transpose();
        for _ in 0..3 {
            box_blur_rows(&mut t, r);
        }
        out = t.transpose();
    }
    out
}

/// Pillow's Lanczos-3 filter (truncated sinc · sinc(x/3)).
fn lanczos(x: f64) -> f64 {
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
    };
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `in_size → out_size`:
/// per output pixel, its first input pixel and fixed-point (2²² = 1) weights.
fn lanczos_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i64>)> {
    const PRECISION_BITS: u32 = 32 - 8 - 2;
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 3.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let mut k: Vec<f64> = (0..xmax)
                .map(|x| lanczos((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|v| *v /= ww);
            }
            let fixed = k
                .iter()
                .map(|&v| {
                    let s = v * (1u64 << PRECISION_BITS) as f64;
                    if v < 0.0 {
                        (-0.5 + s) as i64
                    } else {
                        (0.5 + s) as i64
                    }
                })
                .collect();
            (xmin as usize, fixed)
        })
        .collect()
}

/// Pillow's `clip8`: rounds a fixed-point sum to 0..=255.
fn clip8(ss: i64) -> u8 {
    (ss >> 22).clamp(0, 255) as u8
}

/// `Image.resize((w, h), LANCZOS)` of an 8-bit band: horizontal pass, then vertical, each
/// rounded to 8 bits.
pub(crate) fn pillow_lanczos_resize(c: &Canvas, w: usize, h: usize) -> Canvas {
    let mut tmp = c.clone();
    if w != c.w {
        let coeffs = lanczos_coeffs(c.w, w);
        tmp = Canvas::new(w, c.h);
        for y in 0..c.h {
            for (xx, (xmin, k)) in coeffs.iter().enumerate() {
                let mut ss: i64 = 1 << 21;
                for (x, kv) in k.iter().enumerate() {
                    ss += c.px[y * c.w + xmin + x] as i64 * kv;
                }
                tmp.px[y * w + xx] = clip8(ss);
            }
        }
    }
    if h == tmp.h {
        return tmp;
    }
    let coeffs = lanczos_coeffs(tmp.h, h);
    let mut out = Canvas::new(tmp.w, h);
    for (yy, (ymin, k)) in coeffs.iter().enumerate() {
        for x in 0..tmp.w {
            let mut ss: i64 = 1 << 21;
            for (y, kv) in k.iter().enumerate() {
                ss += tmp.px[(ymin + y) * tmp.w + x] as i64 * kv;
            }
            out.px[yy * tmp.w + x] = clip8(ss);
        }
    }
    out
}

/// Steps 2 of the module docs: the path drawn, blurred and downsized to `width × height`.
pub(crate) fn rasterise(path: &MotionPath, width: usize, height: usize) -> Canvas {
    let (x, y) = ((2 * width) as f64, (2 * height) as f64);
    let diagonal = (x * x + y * y).sqrt();
    let mut canvas = Canvas::new(2 * width, 2 * height);
    canvas.polyline(&path.points, (diagonal / 150.0) as i64, 255);
    let blurred = pillow_gaussian_blur(&canvas, (diagonal * 0.01) as i64 as f32);
    pillow_lanczos_resize(&blurred, width, height)
}

/// A `size × size` motion-blur kernel as the `motionblur` package makes it (`kernelMatrix`:
/// the 8-bit kernel image divided by its sum, in `f32`). Redraws the (measure-zero) paths
/// whose image is entirely black, where the package would divide by zero.
pub(crate) fn motionblur_kernel(size: usize, intensity: f64, noise: &mut NoiseSource) -> Vec<f32> {
    loop {
        let path = create_path(size, size, intensity, noise);
        let img = rasterise(&path, size, size);
        let sum: f32 = img.px.iter().map(|&v| v as f32).sum();
        if sum > 0.0 {
            return img.px.iter().map(|&v| v as f32 / sum).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_have_the_right_means() {
        let mut n = NoiseSource::new(1);
        let k = 40_000;
        let m = |f: &mut dyn FnMut() -> f64| (0..k).map(|_| f()).sum::<f64>() / k as f64;
        let b130 = m(&mut || beta_int(&mut n, 1, 30));
        assert!((b130 - 1.0 / 31.0).abs() < 2e-3, "{b130}");
        let b220 = m(&mut || beta_int(&mut n, 2, 20));
        assert!((b220 - 2.0 / 22.0).abs() < 2e-3, "{b220}");
        let tri = m(&mut || triangular(&mut n, 0.0, 0.5, 2.0));
        assert!((tri - 2.5 / 3.0).abs() < 1e-2, "{tri}");
    }

    #[test]
    fn bresenham_matches_pillow_conventions() {
        let mut c = Canvas::new(5, 3);
        // The end point is excluded from each segment; the polyline draws the last point.
        c.line(0, 0, 4, 2, 255);
        let drawn: Vec<usize> = (0..15).filter(|&i| c.px[i] == 255).collect();
        assert_eq!(drawn, vec![0, 6, 7, 13]); // (0,0) (1,1) (2,1) (3,2)
        let mut c = Canvas::new(4, 4);
        c.polyline(&[(0.9, 0.2), (2.7, 0.9), (2.2, 3.99)], 1, 255);
        // Truncated: (0,0) → (2,0) → (2,3), plus the last point.
        let drawn: Vec<usize> = (0..16).filter(|&i| c.px[i] == 255).collect();
        assert_eq!(drawn, vec![0, 1, 2, 6, 10, 14]);
    }

    #[test]
    fn pillow_blur_and_resize_keep_mass_roughly() {
        // A single white pixel blurred with radius 1 (box radius 0.25, 3 passes per axis).
        let mut c = Canvas::new(9, 9);
        c.px[4 * 9 + 4] = 255;
        let b = pillow_gaussian_blur(&c, 1.0);
        let s: u32 = b.px.iter().map(|&v| v as u32).sum();
        assert!((200..=300).contains(&s), "{s}");
        assert_eq!(b.px[4 * 9 + 4], b.px.iter().cloned().max().unwrap());
        // Lanczos halving of a constant image is that constant.
        let flat = Canvas {
            w: 8,
            h: 8,
            px: vec![100; 64],
        };
        assert_eq!(pillow_lanczos_resize(&flat, 4, 4).px, vec![100; 16]);
    }

    #[test]
    fn intensity_zero_is_a_straight_line() {
        let path = create_path(31, 31, 0.0, &mut NoiseSource::new(3));
        let (a, b) = (path.points[0], *path.points.last().unwrap());
        for p in &path.points {
            // Collinear: the cross product with the end-to-end direction vanishes.
            let cross = (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
            assert!(cross.abs() < 1e-6, "{cross}");
        }
    }
}
