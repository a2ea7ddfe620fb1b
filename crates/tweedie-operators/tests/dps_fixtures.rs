//! Our operators against outputs recorded from the official DPS code
//! (`tests/fixtures/dps`, see its README): A(x0) must equal the recorded noise-free `ax`.

use burn::tensor::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tweedie_core::NoiseSource;
use tweedie_core::tensor::{from_vec, to_vec};
use tweedie_operators::{Blur, Mask, Operator, OperatorSpec, build, gaussian_kernel};

/// Tolerance for A(x0) vs the recorded `ax` (float32 on both sides).
const TOL_AX: f32 = 1e-5;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dps")
}

/// The tensors of `dps_<case>.safetensors`: name → (shape, values).
fn load(case: &str) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let path = fixture_dir().join(format!("dps_{case}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, (t.shape().to_vec(), v))
        })
        .collect()
}

fn tensor4(t: &(Vec<usize>, Vec<f32>), device: &Device) -> Tensor<4> {
    let s = &t.0;
    from_vec(t.1.clone(), [s[0], s[1], s[2], s[3]], device)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// max |A(x0) − ax| for one case.
fn ax_error(op: &dyn Operator, case: &str) -> f32 {
    let d = Device::flex();
    let t = load(case);
    let ax = op.forward(tensor4(&t["x0"], &d));
    assert_eq!(ax.dims().to_vec(), t["ax"].0, "{case}: A(x0) shape");
    max_abs_diff(&to_vec(&ax), &t["ax"].1)
}

fn fixture_motion_blur() -> Blur {
    let t = load("motion_blur");
    let (shape, k) = &t["kernel"];
    assert_eq!(shape, &vec![61, 61]);
    Blur::new(k.clone(), 61, "DPS motion kernel").unwrap()
}

#[test]
fn gaussian_kernel_is_scipys() {
    let t = load("gaussian_blur");
    let (shape, k) = &t["kernel"];
    assert_eq!(shape, &vec![9, 9]);
    let ours = gaussian_kernel(9, 1.5).unwrap();
    let err = max_abs_diff(&ours, k);
    println!("gaussian kernel 9×9 σ=1.5: max |ours − DPS| = {err:.3e}");
    assert!(err <= 1e-6, "{err}");
}

#[test]
fn every_fixture_operator_matches_dps() {
    let d = Device::flex();
    let mut n = NoiseSource::new(0);
    let mut report = Vec::new();

    let gauss = build(
        &OperatorSpec::GaussianBlur {
            size: 9,
            sigma: 1.5,
        },
        32,
        32,
        &mut n,
        &d,
    )
    .unwrap();
    report.push(("gaussian_blur", ax_error(gauss.as_ref(), "gaussian_blur")));

    report.push((
        "motion_blur",
        ax_error(&fixture_motion_blur(), "motion_blur"),
    ));

    let t = load("inpainting_box");
    let (shape, m) = &t["mask"];
    assert_eq!(shape, &vec![1, 1, 32, 32]);
    let mask = Mask::from_values(m.clone(), 32, 32, "DPS mask".into(), &d);
    // The JSON records the box: top 13, left 10, side 8; our box mask is the same.
    let boxed = Mask::boxed(32, 32, 8, 8, 13, 10, &d).unwrap();
    assert_eq!(&to_vec(boxed.tensor()), m);
    report.push(("inpainting_box", ax_error(&mask, "inpainting_box")));

    let sr = build(
        &OperatorSpec::SuperResolution { factor: 4 },
        32,
        32,
        &mut n,
        &d,
    )
    .unwrap();
    report.push((
        "super_resolution",
        ax_error(sr.as_ref(), "super_resolution"),
    ));

    for (case, err) in &report {
        println!("{case:>17}: max |A(x0) − ax| = {err:.3e}");
    }
    for (case, err) in report {
        assert!(err <= TOL_AX, "{case}: max |A(x0) − ax| = {err}");
    }
}

#[test]
fn box_sr_is_not_dps_sr() {
    // The box filter is a different operator: the fixture tells them apart.
    let d = Device::flex();
    let op = build(
        &OperatorSpec::SuperResolutionBox { factor: 4 },
        32,
        32,
        &mut NoiseSource::new(0),
        &d,
    )
    .unwrap();
    assert!(ax_error(op.as_ref(), "super_resolution") > 1e-3);
}

#[test]
fn fixture_motion_kernel_loads_from_npy_and_safetensors() {
    let d = Device::flex();
    let dir = std::env::temp_dir().join(format!("tweedie-dps-kernel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let blur = fixture_motion_blur();
    let x = tensor4(&load("motion_blur")["x0"], &d);
    let reference = to_vec(&blur.forward(x.clone()));
    let npy = dir.join("motion.npy");
    let st = dir.join("motion.safetensors");
    blur.save_npy(&npy).unwrap();
    blur.save_safetensors(&st).unwrap();
    for path in [npy, st] {
        let op = build(
            &OperatorSpec::KernelBlur { path: path.clone() },
            32,
            32,
            &mut NoiseSource::new(0),
            &d,
        )
        .unwrap();
        assert_eq!(
            to_vec(&op.forward(x.clone())),
            reference,
            "{}",
            path.display()
        );
        assert_eq!(Blur::load(&path).unwrap().kernel(), blur.kernel());
    }
    std::fs::remove_dir_all(dir).ok();
}
