//! Image inputs the way users give them: photos with an EXIF orientation, and images that
//! come through a pipe (`/dev/stdin`) or a named FIFO.

use std::io::Cursor;
use std::path::PathBuf;
use tweedie_io::*;

fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tweedie-io-inputs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A TIFF (EXIF) block holding only Orientation = `value`, little- or big-endian.
fn exif_block(value: u16, big_endian: bool) -> Vec<u8> {
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut t = Vec::new();
    t.extend_from_slice(if big_endian { b"MM" } else { b"II" });
    t.extend_from_slice(&u16b(42));
    t.extend_from_slice(&u32b(8)); // the first IFD right after the header
    t.extend_from_slice(&u16b(1)); // one entry
    t.extend_from_slice(&u16b(0x0112)); // Orientation
    t.extend_from_slice(&u16b(3)); // SHORT
    t.extend_from_slice(&u32b(1)); // one value
    t.extend_from_slice(&u16b(value));
    t.extend_from_slice(&[0, 0]); // the value field's padding
    t.extend_from_slice(&u32b(0)); // no next IFD
    t
}

/// `jpeg` with an APP1 Exif segment (Orientation = `value`) right after its SOI marker.
fn jpeg_with_orientation(jpeg: &[u8], value: u16) -> Vec<u8> {
    let tiff = exif_block(value, value.is_multiple_of(2));
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// An 8-bit RGB PNG of `img` with an eXIf chunk (Orientation = `value`).
fn png_with_orientation(img: &image::RgbImage, value: u16) -> Vec<u8> {
    use image::ImageEncoder;
    let mut bytes = Vec::new();
    let mut enc = image::codecs::png::PngEncoder::new(Cursor::new(&mut bytes));
    enc.set_exif_metadata(exif_block(value, !value.is_multiple_of(2)))
        .unwrap();
    enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    bytes
}

/// The image as shown for EXIF orientation `value`, from the stored one, written out from
/// the EXIF definitions (not with the `image` crate's transforms): d(x, y) = s(…).
fn shown(stored: &Image, value: u16) -> Image {
    let (w, h) = (stored.width, stored.height);
    let turned = value >= 5;
    let (dw, dh) = if turned { (h, w) } else { (w, h) };
    let mut out = Image::filled(dw, dh, 0.0);
    for y in 0..dh {
        for x in 0..dw {
            let (sx, sy) = match value {
                1 => (x, y),
                2 => (w - 1 - x, y),         // mirrored left–right
                3 => (w - 1 - x, h - 1 - y), // turned 180°
                4 => (x, h - 1 - y),         // mirrored top–bottom
                5 => (y, x),                 // transposed
                6 => (y, h - 1 - x),         // turned 90° clockwise
                7 => (w - 1 - y, h - 1 - x), // transversed
                8 => (w - 1 - y, x),         // turned 90° anticlockwise
                _ => unreachable!(),
            };
            for c in 0..3 {
                out.data[c * dw * dh + y * dw + x] = stored.data[c * w * h + sy * w + sx];
            }
        }
    }
    out
}

/// Every pixel a distinct colour, so any wrong turn or mirror shows.
fn distinct(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let i = y * w + x;
        image::Rgb([(i * 20) % 256, 255 - (i * 13) % 256, (i * 37) % 251].map(|v| v as u8))
    })
}

#[test]
fn every_exif_orientation_is_applied_on_load() {
    let dir = fresh_dir("orientation");
    // PNG (eXIf): a 3×2 image of distinct pixels, decoded exactly.
    let img = distinct(3, 2);
    let plain = dir.join("plain.png");
    img.save(&plain).unwrap();
    let stored = load_image(&plain).unwrap();
    // JPEG (APP1): the same encoded data with and without the EXIF block decodes to the same
    // stored pixels, so the comparison is exact despite the lossy format.
    let big = image::RgbImage::from_fn(24, 16, |x, y| {
        let b = y / 8 * 3 + x / 8;
        image::Rgb([b * 40, 250 - b * 35, (b * 90) % 256].map(|v| v as u8))
    });
    let mut jpeg = Vec::new();
    big.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let plain_jpeg = dir.join("plain.jpg");
    std::fs::write(&plain_jpeg, &jpeg).unwrap();
    let stored_jpeg = load_image(&plain_jpeg).unwrap();
    for value in 1..=8u16 {
        for (name, bytes, stored) in [
            (
                format!("o{value}.png"),
                png_with_orientation(&img, value),
                &stored,
            ),
            (
                format!("o{value}.jpg"),
                jpeg_with_orientation(&jpeg, value),
                &stored_jpeg,
            ),
        ] {
            let p = dir.join(&name);
            std::fs::write(&p, &bytes).unwrap();
            let want = shown(stored, value);
            let got = load_image(&p).unwrap();
            assert_eq!(
                (got.width, got.height),
                (want.width, want.height),
                "{name}: size"
            );
            assert!(got.data == want.data, "{name}: pixels not shown the way up");
            // The same from memory, from the header alone, and for the raw image.
            assert!(decode_image(&bytes, &name, &ImageLimits::default()).unwrap() == want);
            assert_eq!(
                image_dimensions(&p).unwrap(),
                (want.width, want.height),
                "{name}: dimensions"
            );
            let raw = load_dynamic_image(&p, &ImageLimits::default()).unwrap();
            assert_eq!(
                (raw.width() as usize, raw.height() as usize),
                (want.width, want.height)
            );
            // Sized loading crops the image as shown.
            let side = want.width.min(want.height);
            let sized = load_image_sized(&p, side).unwrap();
            assert!(sized == center_crop_square(&want), "{name}: sized");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[cfg(target_os = "linux")]
#[test]
fn images_through_a_pipe_load_and_load_again() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let dir = fresh_dir("pipe");
    let img = distinct(5, 4);
    let file = dir.join("x.png");
    img.save(&file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let want = load_image(&file).unwrap();
    // `/proc/self/fd/N` of a pipe is what `/dev/stdin` is when the shell pipes into us.
    let (reader, mut writer) = std::io::pipe().unwrap();
    let pipe = PathBuf::from(format!("/proc/self/fd/{}", reader.as_raw_fd()));
    let feed = std::thread::spawn(move || writer.write_all(&bytes).unwrap());
    assert!(load_image(&pipe).unwrap() == want);
    feed.join().unwrap();
    // A command looks at an input more than once (a readability check, then the load): the
    // pipe is drained by then, and the same bytes are used.
    assert_eq!(image_dimensions(&pipe).unwrap(), (5, 4));
    assert!(load_image_sized(&pipe, 4).unwrap() == load_image_sized(&file, 4).unwrap());
    drop(reader);
    std::fs::remove_dir_all(dir).ok();
}

#[cfg(target_os = "linux")]
#[test]
fn images_through_a_named_fifo_load_and_a_fifo_without_writer_is_an_error() {
    let dir = fresh_dir("fifo");
    let img = distinct(4, 6);
    let file = dir.join("x.png");
    img.save(&file).unwrap();
    let want = load_image(&file).unwrap();
    let mkfifo = |p: &std::path::Path| {
        std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .is_ok_and(|s| s.success())
    };
    let fifo = dir.join("in.png");
    if !mkfifo(&fifo) {
        eprintln!("no mkfifo: skipped");
        return;
    }
    let (fifo_w, file_r) = (fifo.clone(), file.clone());
    let feed = std::thread::spawn(move || std::fs::write(fifo_w, std::fs::read(file_r).unwrap()));
    assert!(load_image(&fifo).unwrap() == want);
    feed.join().unwrap().unwrap();
    // Nobody writes to this one: an error after a few seconds, not a hang.
    let lonely = dir.join("lonely.png");
    assert!(mkfifo(&lonely));
    let (tx, rx) = std::sync::mpsc::channel();
    let l = lonely.clone();
    std::thread::spawn(move || tx.send(load_image(&l).map(|_| ()).map_err(|e| e.to_string())));
    let got = rx
        .recv_timeout(FIFO_WRITER_WAIT + std::time::Duration::from_secs(20))
        .expect("loading a FIFO without a writer hangs");
    let err = got.unwrap_err();
    assert!(err.contains("no process wrote to"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
