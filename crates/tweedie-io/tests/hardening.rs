//! Hardening: truncated JPEGs, symlink loops in input folders.

use std::path::{Path, PathBuf};
use tweedie_io::*;

/// A fresh folder of its own for one test (tests in this file run in parallel).
fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tweedie-io-hardening-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The error of a load that must fail (without printing a whole image if it succeeded).
fn err_of<T>(r: Result<T, IoError>) -> String {
    match r {
        Ok(_) => panic!("expected an error, got an image"),
        Err(e) => e.to_string(),
    }
}

fn face() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/faces/000444.jpg")
}

#[test]
fn truncated_jpeg_is_refused_naming_the_file() {
    let dir = fresh_dir("truncated-jpeg");
    let bytes = std::fs::read(face()).unwrap();
    // The whole file still loads.
    let full = dir.join("whole.jpg");
    std::fs::write(&full, &bytes).unwrap();
    let img = load_image(&full).unwrap();
    assert_eq!((img.width, img.height), (178, 218));
    // Half of it decodes leniently to a grey lower half; it must be refused instead.
    let half = dir.join("half.jpg");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let err = err_of(load_image(&half));
    assert!(
        err.contains("half.jpg") && err.contains("truncated"),
        "{err}"
    );
    // Every other cut is refused too (never a panic), and so is load_image_sized.
    for cut in [3, 100, 600, bytes.len() - 2, bytes.len() - 1] {
        let p = dir.join(format!("cut{cut}.jpg"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let err = err_of(load_image(&p));
        assert!(err.contains(&format!("cut{cut}.jpg")), "{err}");
        assert!(load_image_sized(&p, 64).is_err());
    }
}

#[cfg(unix)]
#[test]
fn list_images_visits_each_folder_and_file_once_through_symlink_loops() {
    use std::os::unix::fs::symlink;
    let dir = fresh_dir("symlinks");
    std::fs::copy(face(), dir.join("a.jpg")).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::copy(face(), dir.join("sub/b.jpg")).unwrap();
    // A self-link (a folder linking to itself), a link back up, a two-link cycle, a second
    // name for a file, and a link that resolves to nothing.
    symlink(".", dir.join("self")).unwrap();
    symlink("..", dir.join("sub/up")).unwrap();
    symlink("y", dir.join("x")).unwrap();
    symlink("x", dir.join("y")).unwrap();
    symlink("a.jpg", dir.join("alias.jpg")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    std::thread::spawn(move || tx.send(list_images(&d)).unwrap());
    let files = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("list_images did not finish in 20 s (symlink loop)")
        .unwrap();
    assert_eq!(files, vec![dir.join("a.jpg"), dir.join("sub/b.jpg")]);
}

#[test]
fn images_above_the_pixel_limit_are_refused_before_decoding() {
    let dir = fresh_dir("limits");
    let p = dir.join("wide.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([10, 20, 30]))
        .save(&p)
        .unwrap();
    let small = ImageLimits { max_pixels: 1000 };
    let err = err_of(load_image_with(&p, &small));
    for part in [
        "wide.png",
        "40×30",
        "1200 pixels",
        "1000",
        ImageLimits::ENV_VAR,
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(load_image_sized_with(&p, 8, &small).is_err());
    let bytes = std::fs::read(&p).unwrap();
    assert!(decode_image(&bytes, "mem.png", &small).is_err());
    // At the limit it loads, and the default limit is generous.
    let exact = ImageLimits { max_pixels: 1200 };
    assert_eq!(load_image_with(&p, &exact).unwrap().width, 40);
    assert_eq!(decode_image(&bytes, "mem.png", &exact).unwrap().height, 30);
    assert_eq!(ImageLimits::default().max_pixels, 64_000_000);
    // A header claiming a huge image (a real 1×1 PNG with its IHDR rewritten, CRC fixed) is
    // refused from the header alone.
    let huge = png_with_size(60_000, 60_000);
    let err = err_of(decode_image(&huge, "huge.png", &ImageLimits::default()));
    assert!(
        err.contains("60000×60000") && err.contains("huge.png"),
        "{err}"
    );
}

/// A 1×1 RGB PNG whose header claims `w × h` (with a valid IHDR CRC).
fn png_with_size(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(1, 1, image::Rgb([1, 2, 3]))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    // Signature (8) + length (4) + "IHDR" (4), then width, height.
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn sized_loading_matches_crop_then_resize() {
    // The strip-wise crop → f32 → resize path gives exactly the old full-image result.
    let face = face();
    for size in [64, 178, 200] {
        let old = center_crop_square(&load_image(&face).unwrap()).resize(size, size);
        let new = load_image_sized(&face, size).unwrap();
        assert_eq!((new.width, new.height), (size, size));
        assert!(old.data == new.data, "size {size} differs");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn stale_temps_of_dead_processes_are_removed() {
    let dir = fresh_dir("stale-temps");
    // A process that has exited: its PID is (almost surely) not reused within this test.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let stale = [
        format!(".tweedie-tmp-{dead}-0-out.png"),
        format!(".tweedie-tmp-{dead}-17-metrics.csv"),
    ];
    let kept = [
        format!(".tweedie-tmp-{live}-0-out.png"), // this process: a write in flight
        ".tweedie-tmp-1-0-out.png".to_string(),   // init is always running
        "out.png".to_string(),
        // A user's own files that look like temporary files but lack the tool's prefix.
        format!(".out.png.{dead}.tmp"),
        format!(".mynotes.{dead}.tmp"),
        format!("tweedie-tmp-{dead}-0-out.png"), // no leading dot
        format!(".tweedie-tmp-{dead}-out.png"),  // no sequence number
        format!(".tweedie-tmp-{dead}x-0-out.png"),
        ".tweedie-tmp-12ab-0-out.png".to_string(),
    ];
    for name in stale.iter().chain(&kept) {
        std::fs::write(dir.join(name), b"x").unwrap();
    }
    std::fs::create_dir(dir.join(format!(".tweedie-tmp-{dead}-1-folder"))).unwrap();
    assert_eq!(clean_stale_temps(&dir).unwrap(), 2);
    for name in &stale {
        assert!(!dir.join(name).exists(), "{name} left");
    }
    for name in &kept {
        assert!(dir.join(name).exists(), "{name} removed");
    }
    assert!(dir.join(format!(".tweedie-tmp-{dead}-1-folder")).is_dir());
    assert_eq!(clean_stale_temps(&dir).unwrap(), 0);
    assert_eq!(clean_stale_temps(dir.join("absent")).unwrap(), 0);
}

#[test]
fn temporary_files_are_the_tools_own_and_cleanup_finds_them() {
    // A write killed after its temp file was made leaves exactly what cleanup removes: fill
    // the temp file, then stop the write (the callback fails) after copying it aside.
    let dir = fresh_dir("own-temps");
    let target = dir.join("out.png");
    let mut seen = None;
    let err = write_atomic_with(&target, |f| {
        std::io::Write::write_all(f, b"half")?;
        seen = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n != "out.png");
        Err(std::io::Error::other("killed"))
    });
    assert!(err.is_err());
    let name = seen.expect("a temporary file while writing");
    assert!(name.starts_with(TEMP_PREFIX), "{name}");
    assert!(name.ends_with("out.png"), "{name}");
    assert!(!target.exists() && !dir.join(&name).exists());
}

#[test]
fn writes_work_for_every_legal_file_name_length() {
    // File names up to 255 bytes are legal; the temporary name beside them must stay within
    // that too (`.NAME.PID.tmp` went over from about 240 bytes).
    let dir = fresh_dir("long-names");
    for len in [1, 200, 235, 240, 245, 251, 252, 255] {
        let name = match len {
            ..5 => "n".repeat(len),
            _ => format!("{}.png", "n".repeat(len - 4)),
        };
        assert_eq!(name.len(), len);
        let p = dir.join(&name);
        write_atomic(&p, b"data").unwrap_or_else(|e| panic!("{len}-byte name: {e}"));
        assert_eq!(std::fs::read(&p).unwrap(), b"data");
        save_png(&Image::filled(2, 2, 0.0), &p).unwrap_or_else(|e| panic!("{len}: {e}"));
    }
    // Multi-byte characters are cut at a character boundary: 126 two-byte "é" + ".pn".
    let wide = format!("{}.pn", "é".repeat(126));
    assert_eq!(wide.len(), 255);
    write_atomic(&dir.join(&wide), b"x").unwrap();
    assert_eq!(std::fs::read(dir.join(&wide)).unwrap(), b"x");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
        .collect();
    assert!(left.is_empty(), "temporary files left");
}
