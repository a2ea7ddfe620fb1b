//! Image I/O: round trips, modes, and clear errors on bad files.

use burn::tensor::Device;
use std::path::PathBuf;
use tweedie_io::*;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tweedie-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn ramp(w: usize, h: usize) -> Image {
    let mut img = Image::filled(w, h, 0.0);
    for c in 0..3 {
        for i in 0..w * h {
            img.data[c * w * h + i] = ((i * 7 + c * 50) % 256) as f32 / 127.5 - 1.0;
        }
    }
    img
}

#[test]
fn png_round_trip_is_exact_at_8_bit() {
    let img = ramp(13, 7);
    // Its own folder: other tests in this file write (atomically) beside it in parallel.
    let dir = tmp("round-trip");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("rt.png");
    save_png(&img, &p).unwrap();
    let back = load_image(&p).unwrap();
    assert_eq!((back.width, back.height), (13, 7));
    for (a, b) in img.data.iter().zip(&back.data) {
        assert!((a - b).abs() < 1.0 / 255.0, "{a} vs {b}");
    }
    // No temporary file is left behind by the atomic write.
    let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn tensor_round_trip_and_shape_checks() {
    let d = Device::flex();
    let imgs = vec![ramp(8, 6), ramp(8, 6)];
    let t = to_tensor(&imgs, &d).unwrap();
    assert_eq!(t.dims(), [2, 3, 6, 8]);
    assert_eq!(from_tensor(&t).unwrap(), imgs);
    let err = to_tensor(&[ramp(8, 6), ramp(6, 8)], &d)
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 8×6"), "{err}");
    assert!(to_tensor(&[], &d).is_err());
}

#[test]
fn rgba_gray_and_16_bit_inputs_become_rgb() {
    let p = tmp("rgba.png");
    image::RgbaImage::from_pixel(4, 4, image::Rgba([255, 0, 0, 10]))
        .save(&p)
        .unwrap();
    let img = load_image(&p).unwrap();
    assert_eq!(img.data[0], 1.0); // red channel, alpha dropped
    assert_eq!(img.data[16], -1.0); // green
    let p = tmp("gray16.png");
    image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(3, 2, image::Luma([32768u16]))
        .save(&p)
        .unwrap();
    let img = load_image(&p).unwrap();
    assert_eq!(img.data.len(), 3 * 6);
    assert!(img.data.iter().all(|v| v.abs() < 1e-3), "{:?}", img.data);
}

#[test]
fn truncated_and_non_image_files_give_clear_errors() {
    let p = tmp("good.png");
    save_png(&ramp(16, 16), &p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let bad = tmp("truncated.png");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_image(&bad).unwrap_err().to_string();
    assert!(
        err.contains("truncated.png") && err.contains("cannot decode"),
        "{err}"
    );
    let txt = tmp("notes.png");
    std::fs::write(&txt, b"hello").unwrap();
    assert!(
        load_image(&txt)
            .unwrap_err()
            .to_string()
            .contains("notes.png")
    );
    let missing = load_image(tmp("missing.png")).unwrap_err().to_string();
    assert!(missing.contains("missing.png"), "{missing}");
}

#[test]
fn crop_resize_and_flip() {
    let img = ramp(10, 6);
    let sq = center_crop_square(&img);
    assert_eq!((sq.width, sq.height), (6, 6));
    assert_eq!(sq.data[0], img.data[2]); // starts at column 2
    let small = sq.resize(3, 3);
    assert_eq!((small.width, small.height), (3, 3));
    let f = img.flip_horizontal();
    assert_eq!(f.data[0], img.data[9]);
    assert_eq!(f.flip_horizontal(), img);
}

#[test]
fn shared_test_faces_load_when_present() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/ffhq256");
    if !dir.exists() {
        eprintln!("SKIPPED shared_test_faces_load_when_present: ../shared/data/ffhq256 is absent");
        return;
    }
    let files = list_images(&dir).unwrap();
    assert!(files.len() >= 12);
    for f in files {
        let img = load_image(&f).unwrap();
        assert_eq!((img.width, img.height), (256, 256), "{}", f.display());
    }
}
