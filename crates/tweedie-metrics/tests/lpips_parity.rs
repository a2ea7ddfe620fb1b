//! LPIPS parity with the reference `lpips` 0.1.4 package (values in ../shared/README.md).

use burn::tensor::Device;
use std::path::{Path, PathBuf};
use tweedie_metrics::{Backbone, Lpips};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/lpips")
        .join(name)
}

fn pair(net: &Lpips, other: &str) -> f64 {
    let d = Device::flex();
    let load = |n: &str| tweedie_io_load(&fixture(n), &d);
    net.distance(&load("ex_ref.png"), &load(other)).unwrap()[0]
}

fn tweedie_io_load(p: &Path, d: &Device) -> burn::tensor::Tensor<4> {
    // Decode the PNG to [−1, 1] without depending on tweedie-io (dev-dependency-free).
    let img = image::open(p).unwrap().to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut v = vec![0f32; 3 * w * h];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            v[c * w * h + y as usize * w + x as usize] = px.0[c] as f32 / 127.5 - 1.0;
        }
    }
    tweedie_core::tensor::from_vec(v, [1, 3, h, w], d)
}

#[test]
fn lpips_alex_matches_reference() {
    let net = Lpips::alex_default(&Device::flex()).unwrap();
    let (p0, p1) = (pair(&net, "ex_p0.png"), pair(&net, "ex_p1.png"));
    eprintln!("LPIPS-alex: ex_p0 {p0:.4} (ref 0.7219), ex_p1 {p1:.4} (ref 0.1376)");
    assert!((p0 - 0.7219).abs() < 1e-3, "{p0}");
    assert!((p1 - 0.1376).abs() < 1e-3, "{p1}");
}

#[test]
fn lpips_vgg_matches_reference_when_weights_present() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/weights/lpips_vgg16.safetensors");
    if !path.exists() {
        eprintln!(
            "SKIPPED lpips_vgg_matches_reference: {} is absent (fetch with `cargo xtask fetch-weights lpips-vgg`)",
            path.display()
        );
        return;
    }
    let net = Lpips::load(Backbone::Vgg, &path, &Device::flex()).unwrap();
    let (p0, p1) = (pair(&net, "ex_p0.png"), pair(&net, "ex_p1.png"));
    eprintln!("LPIPS-vgg: ex_p0 {p0:.4} (ref 0.5686), ex_p1 {p1:.4} (ref 0.4217)");
    assert!((p0 - 0.5686).abs() < 1e-3, "{p0}");
    assert!((p1 - 0.4217).abs() < 1e-3, "{p1}");
}

#[test]
fn lpips_is_zero_for_identical_and_rejects_mismatched_sizes() {
    let d = Device::flex();
    let net = Lpips::alex_default(&d).unwrap();
    let a = tweedie_io_load(&fixture("ex_ref.png"), &d);
    assert!(net.distance(&a, &a).unwrap()[0].abs() < 1e-6);
    let small = burn::tensor::Tensor::<4>::zeros([1, 3, 16, 16], &d);
    assert!(net.distance(&small, &small).unwrap()[0].abs() < 1e-6); // upsampled path works
    let err = net.distance(&a, &small).unwrap_err().to_string();
    assert!(err.contains("differ"), "{err}");
    let wrong = Lpips::load(Backbone::Vgg, tweedie_metrics::default_alex_path(), &d);
    assert!(wrong.is_err());
}
