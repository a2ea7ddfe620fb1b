//! Mask and kernel files the way users make them: 0/1 masks from NumPy, holes drawn in
//! alpha, empty masks; kernels in every format at any scale, degenerate ones; files that come
//! through a pipe or a named FIFO.

use burn::tensor::Device;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use tweedie_core::tensor::to_vec;
use tweedie_operators::{Blur, Mask, Operator};

fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tweedie-op-files-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values(m: &Mask) -> Vec<f32> {
    to_vec(m.tensor())
}

/// A 6×4 (W×H) hole pattern: 1 = observed.
fn pattern() -> Vec<f32> {
    (0..24)
        .map(|i| f32::from(!(i % 6 >= 2 && i % 6 < 5 && i / 6 >= 1)))
        .collect()
}

fn save_gray8(p: &Path, px: Vec<u8>) {
    image::GrayImage::from_raw(6, 4, px)
        .unwrap()
        .save(p)
        .unwrap();
}

#[test]
fn masks_follow_one_documented_rule() {
    let d = Device::flex();
    let dir = fresh_dir("mask-rule");
    let want = pattern();
    let load = |name: &str| Mask::load(dir.join(name), 4, 6, &d);
    // White/black (the rule's grey levels).
    save_gray8(
        &dir.join("bw.png"),
        want.iter().map(|v| (*v * 255.0) as u8).collect(),
    );
    assert_eq!(values(&load("bw.png").unwrap()), want);
    // 0/1 values, as `Image.fromarray(mask.astype(np.uint8))` saves them: read as 0/1, not as
    // all black (it used to be byte-identical to an all-zero mask).
    save_gray8(&dir.join("01.png"), want.iter().map(|v| *v as u8).collect());
    let m = load("01.png").unwrap();
    assert_eq!(values(&m), want);
    assert!(m.describe().contains("0/1"), "{}", m.describe());
    // 16-bit 0/1 and RGB 0/1 too.
    let p16 = dir.join("01-16.png");
    let raw16: Vec<u16> = want.iter().map(|v| *v as u16).collect();
    image::ImageBuffer::<image::Luma<u16>, _>::from_raw(6, 4, raw16)
        .unwrap()
        .save(&p16)
        .unwrap();
    assert_eq!(values(&load("01-16.png").unwrap()), want);
    image::RgbImage::from_fn(6, 4, |x, y| {
        image::Rgb([want[(y * 6 + x) as usize] as u8; 3])
    })
    .save(dir.join("01-rgb.png"))
    .unwrap();
    assert_eq!(values(&load("01-rgb.png").unwrap()), want);
    // A hole drawn only in the alpha channel, on white or on a photo: alpha 0 = missing,
    // whatever the colour.
    for (name, colour) in [
        ("alpha-white.png", [255u8; 3]),
        ("alpha-dark.png", [20, 90, 10]),
    ] {
        image::RgbaImage::from_fn(6, 4, |x, y| {
            let a = if want[(y * 6 + x) as usize] == 1.0 {
                255
            } else {
                0
            };
            image::Rgba([colour[0], colour[1], colour[2], a])
        })
        .save(dir.join(name))
        .unwrap();
        let m = load(name).unwrap();
        assert_eq!(values(&m), want, "{name}");
        assert!(m.describe().contains("alpha"), "{}", m.describe());
    }
    // Half-transparent is still observed; an opaque alpha channel leaves the colour rule.
    image::RgbaImage::from_fn(6, 4, |x, y| {
        let a = if want[(y * 6 + x) as usize] == 1.0 {
            128
        } else {
            0
        };
        image::Rgba([0, 0, 0, a])
    })
    .save(dir.join("alpha-half.png"))
    .unwrap();
    assert_eq!(values(&load("alpha-half.png").unwrap()), want);
    image::RgbaImage::from_fn(6, 4, |x, y| {
        image::Rgba([(want[(y * 6 + x) as usize] * 255.0) as u8, 255, 255, 255])
    })
    .save(dir.join("opaque.png"))
    .unwrap();
    // (R, 255, 255): the mean is above mid-grey everywhere: all observed.
    assert!(
        values(&load("opaque.png").unwrap())
            .iter()
            .all(|v| *v == 1.0)
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn masks_that_observe_nothing_are_refused_saying_why() {
    let d = Device::flex();
    let dir = fresh_dir("mask-empty");
    let err = |name: &str| {
        Mask::load(dir.join(name), 4, 6, &d)
            .unwrap_err()
            .to_string()
    };
    save_gray8(&dir.join("zero.png"), vec![0; 24]);
    let e = err("zero.png");
    assert!(
        e.contains("zero.png") && e.contains("no pixel as observed"),
        "{e}"
    );
    assert!(e.contains("black everywhere"), "{e}");
    // Grey levels that never reach mid-grey: the largest value is named.
    save_gray8(&dir.join("dim.png"), vec![100; 24]);
    let e = err("dim.png");
    assert!(e.contains("largest value is 100 of 255"), "{e}");
    image::RgbaImage::from_pixel(6, 4, image::Rgba([255, 255, 255, 0]))
        .save(dir.join("clear.png"))
        .unwrap();
    assert!(err("clear.png").contains("alpha channel is 0 everywhere"));
    // Boxes and random masks that leave nothing observed are refused too.
    let e = Mask::center_box(8, 8, 8, &d).unwrap_err().to_string();
    assert!(e.contains("observes no pixel"), "{e}");
    assert!(Mask::boxed(8, 8, 8, 8, 0, 0, &d).is_err());
    let mut n = tweedie_core::NoiseSource::new(1);
    assert!(
        (0..50).any(|_| Mask::random_pixels(1, 1, 0.5, &mut n, &d).is_err()),
        "a 1-pixel mask with that pixel dropped"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// The same 3×3 kernel in every file format, scaled by `scale` where the format allows.
fn write_kernel_files(dir: &Path, levels: &[u8; 9], scale: f32) -> Vec<PathBuf> {
    let v: Vec<f32> = levels.iter().map(|l| *l as f32 * scale).collect();
    let blur = Blur::new(v.clone(), 3, "k").unwrap();
    let npy = dir.join("k.npy");
    blur.save_npy(&npy).unwrap();
    let st = dir.join("k.safetensors");
    blur.save_safetensors(&st).unwrap();
    let json = dir.join("k.json");
    blur.save(&json).unwrap();
    let png = dir.join("k.png");
    image::GrayImage::from_raw(3, 3, levels.to_vec())
        .unwrap()
        .save(&png)
        .unwrap();
    vec![npy, st, json, png]
}

#[test]
fn kernels_in_every_format_and_at_any_scale_are_normalised_alike() {
    let dir = fresh_dir("kernel-scale");
    let levels = [10u8, 20, 10, 20, 80, 20, 10, 20, 10];
    let total: f32 = levels.iter().map(|l| *l as f32).sum();
    let unit: Vec<f32> = levels.iter().map(|l| *l as f32 / total).collect();
    // 1e38 and 8e-29 in all: the measurement used to have no effect at these sums.
    for scale in [1e38 / 200.0, 8e-29 / 200.0, 1.0, 1.0 / total] {
        for p in write_kernel_files(&dir, &levels, scale) {
            let b = Blur::load(&p).unwrap();
            let sum: f64 = b.kernel().iter().map(|v| *v as f64).sum();
            assert!(
                (sum - 1.0).abs() < 1e-6,
                "{} × {scale}: sums to {sum}",
                p.display()
            );
            for (a, w) in b.kernel().iter().zip(&unit) {
                assert!((a - w).abs() < 1e-6, "{} × {scale}", p.display());
            }
            let normalised = b.describe().contains("divided by its sum");
            // The PNG is always grey levels; the others say so unless they summed to 1.
            let ext = p.extension().unwrap().to_str().unwrap().to_owned();
            assert_eq!(
                normalised,
                ext == "png" || scale != 1.0 / total,
                "{}",
                b.describe()
            );
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn degenerate_kernels_are_refused_in_every_format() {
    let dir = fresh_dir("kernel-bad");
    let write = |name: &str, v: Vec<f32>| {
        let p = dir.join(name);
        std::fs::write(&p, npy(&v, 3)).unwrap();
        Blur::load(&p).unwrap_err().to_string()
    };
    assert!(write("zero.npy", vec![0.0; 9]).contains("(≤ 0)"));
    assert!(write("neg.npy", vec![-1.0; 9]).contains("positive sum"));
    let mut cancel = vec![0.5f32; 9];
    cancel[0] = -3.999;
    assert!(write("cancel.npy", cancel).contains("cancel"));
    let mut inf = vec![0.1f32; 9];
    inf[5] = f32::INFINITY;
    assert!(write("inf.npy", inf).contains("non-finite"));
    assert!(write("tiny.npy", vec![1e-40; 9]).contains("subnormal"));
    // JSON with a misspelt key is refused naming it.
    let p = dir.join("typo.json");
    std::fs::write(&p, r#"{"label": "k", "size": 1, "value": [1.0]}"#).unwrap();
    let e = format!("{:?}", Blur::load(&p).unwrap_err());
    assert!(e.contains("unknown field `value`"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}

/// A float32 `k × k` `.npy` file.
fn npy(v: &[f32], k: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({k}, {k}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Opens `path` for reading in another thread as it would be by `cmd < FILE`: the bytes are
/// written into a pipe whose read end is at `/proc/self/fd/N` (what `/dev/stdin` is then).
#[cfg(target_os = "linux")]
fn piped(bytes: Vec<u8>) -> (std::io::PipeReader, PathBuf, std::thread::JoinHandle<()>) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (reader, mut writer) = std::io::pipe().unwrap();
    let path = PathBuf::from(format!("/proc/self/fd/{}", reader.as_raw_fd()));
    let feed = std::thread::spawn(move || writer.write_all(&bytes).unwrap());
    (reader, path, feed)
}

#[cfg(target_os = "linux")]
#[test]
fn masks_and_kernels_come_through_pipes() {
    let d = Device::flex();
    let dir = fresh_dir("pipes");
    let want = pattern();
    let mask = dir.join("m.png");
    save_gray8(&mask, want.iter().map(|v| (*v * 255.0) as u8).collect());
    let (r, p, feed) = piped(std::fs::read(&mask).unwrap());
    assert_eq!(values(&Mask::load(&p, 4, 6, &d).unwrap()), want);
    // Loaded again (the CLI builds the operator per image): the same mask.
    assert_eq!(values(&Mask::load(&p, 4, 6, &d).unwrap()), want);
    feed.join().unwrap();
    drop(r);
    for k in write_kernel_files(&dir, &[1, 2, 1, 2, 4, 2, 1, 2, 1], 1.0 / 16.0) {
        let direct = Blur::load(&k).unwrap();
        let (r, p, feed) = piped(std::fs::read(&k).unwrap());
        let b = Blur::load(&p).unwrap_or_else(|e| panic!("{} piped: {e}", k.display()));
        assert_eq!(b.kernel(), direct.kernel(), "{}", k.display());
        feed.join().unwrap();
        drop(r);
    }
    std::fs::remove_dir_all(dir).ok();
}

#[cfg(target_os = "linux")]
#[test]
fn a_fifo_as_kernel_or_mask_is_read_or_refused_never_waited_on_forever() {
    let d = Device::flex();
    let dir = fresh_dir("fifo");
    let mkfifo = |p: &Path| {
        std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .is_ok_and(|s| s.success())
    };
    // With a writer: read like a pipe.
    let fifo = dir.join("k.npy");
    if !mkfifo(&fifo) {
        eprintln!("no mkfifo: skipped");
        return;
    }
    let (f, bytes) = (
        fifo.clone(),
        npy(&[0.0, 0.25, 0.0, 0.25, 0.5, 0.0, 0.0, 0.0, 0.0], 3),
    );
    let feed = std::thread::spawn(move || std::fs::write(f, bytes).unwrap());
    assert_eq!(Blur::load(&fifo).unwrap().kernel()[4], 0.5);
    feed.join().unwrap();
    // Without one: an error naming the FIFO within a few seconds, for kernels and masks.
    let waits: Vec<_> = ["lonely.npy", "lonely.png"]
        .into_iter()
        .map(|name| {
            let p = dir.join(name);
            assert!(mkfifo(&p));
            let (tx, rx) = std::sync::mpsc::channel();
            let dev = d.clone();
            std::thread::spawn(move || {
                let r = if p.extension().unwrap() == "npy" {
                    Blur::load(&p).map(|_| ())
                } else {
                    Mask::load(&p, 4, 6, &dev).map(|_| ())
                };
                tx.send(r.map_err(|e| e.to_string())).unwrap()
            });
            (name, rx)
        })
        .collect();
    for (name, rx) in waits {
        let got = rx
            .recv_timeout(tweedie_io::FIFO_WRITER_WAIT + std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{name}: loading a FIFO without a writer hangs"));
        let e = got.unwrap_err();
        assert!(e.contains(name) && e.contains("no process wrote to"), "{e}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn masks_are_read_the_way_up_their_exif_orientation_says() {
    // A 4×6 (W×H) file stored on its side with Orientation 6 (turn 90° clockwise) is the
    // 6×4 mask: the size check and the pixels use the turned image.
    use image::ImageEncoder;
    let d = Device::flex();
    let dir = fresh_dir("mask-exif");
    let want = pattern(); // 6×4 as shown
    // Stored s(x, y), 4 wide and 6 high, with shown d(x, y) = s(y, H − 1 − x), H = 6.
    let stored: Vec<u8> = (0..24)
        .map(|i| {
            let (sx, sy) = (i % 4, i / 4);
            // shown (x, y) = (5 − sy, sx)
            (want[sx * 6 + (5 - sy)] * 255.0) as u8
        })
        .collect();
    let mut tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
    tiff.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
    let mut bytes = Vec::new();
    let mut enc = image::codecs::png::PngEncoder::new(Cursor::new(&mut bytes));
    enc.set_exif_metadata(tiff).unwrap();
    enc.write_image(&stored, 4, 6, image::ExtendedColorType::L8)
        .unwrap();
    let p = dir.join("turned.png");
    std::fs::write(&p, bytes).unwrap();
    assert_eq!(values(&Mask::load(&p, 4, 6, &d).unwrap()), want);
    std::fs::remove_dir_all(dir).ok();
}
