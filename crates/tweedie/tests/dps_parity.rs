//! Parity with the official DPS code (`tests/fixtures/dps/`, recorded on the tiny ADM of
//! `tests/fixtures/adm/` with every random draw): the operator alone, every single step started
//! from the reference trajectory, and the whole chain where it is stable.

use burn::tensor::Device;
use std::path::{Path, PathBuf};
use tweedie::parity::{DpsCaseReport, DpsFixture, check_dps_case};
use tweedie_unet::{UNet, UNetConfig, UNetEps};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn model(weights: &str, device: &Device) -> UNetEps {
    let adm = fixtures().join("adm");
    let cfg = UNetConfig::from_json_file(adm.join("config.json")).unwrap();
    UNetEps {
        net: UNet::load(&cfg, adm.join(weights), device).unwrap(),
    }
}

fn case(model: &UNetEps, name: &str) -> DpsCaseReport {
    let fx = DpsFixture::load(&fixtures().join(format!("dps/dps_{name}.json"))).unwrap();
    let r = check_dps_case(model, &fx, &Device::flex()).unwrap();
    println!(
        "{name}: A(x0) {:.2e}, one step {:.2e} (worst at step {}), x̂0 {:.2e}, whole chain {:.2e}",
        r.operator_error, r.one_step_error, r.worst_step, r.x0_hat_error, r.chain_error
    );
    let steps: Vec<String> = r.step_errors.iter().map(|e| format!("{e:.1e}")).collect();
    println!("  per step: {}", steps.join(" "));
    r
}

/// Every case step by step; the whole chain for the four stable cases (box inpainting is
/// chaotic: pixels crossing the x̂0 clamp switch their gradient on and off, so 1e-5 at x_T
/// moves its result by up to 0.68 in the reference code itself).
fn check_all(weights: &str) {
    let m = model(weights, &Device::flex());
    let names = [
        "none",
        "gaussian_blur",
        "motion_blur",
        "inpainting_box",
        "super_resolution",
    ];
    // Replay every case first, so that a failure shows the whole table.
    let reports: Vec<DpsCaseReport> = names.iter().map(|name| case(&m, name)).collect();
    for (name, r) in names.into_iter().zip(reports) {
        assert!(
            r.operator_error <= 1e-5,
            "{name}: A(x0) error {}",
            r.operator_error
        );
        // ε agrees with the reference to f32 noise at every step (x̂0 error scaled by √ᾱ_t).
        assert!(
            r.x0_hat_error <= 1e-5,
            "{name}: x̂0 error {}",
            r.x0_hat_error
        );
        for (k, &e) in r.step_errors.iter().enumerate() {
            // Box inpainting at t = 999 and 957: x̂0 = √(1/ᾱ)x_t − √(1/ᾱ − 1)ε multiplies the
            // ≈ 2e-6 f32 difference of the two frameworks' ε by up to 157, and the masked
            // residual passes the 12–18 unclipped pixels' errors into the guidance
            // unaveraged (the blurs average them): 3e-4 there, ≤ 2e-5 from step 2 on.
            let tol = if name == "inpainting_box" && k < 2 {
                1e-3
            } else {
                1e-4
            };
            assert!(
                e <= tol,
                "{name}: one-step error {e} at step {k} (tolerance {tol})"
            );
        }
        if name != "inpainting_box" {
            assert!(
                r.chain_error <= 1e-3,
                "{name}: whole-chain error {}",
                r.chain_error
            );
        }
    }
}

#[test]
fn dps_parity_with_safetensors_weights() {
    check_all("model.safetensors");
}

#[test]
fn dps_parity_with_pt_weights() {
    check_all("model.pt");
}

/// The replay is sensitive to what it checks: dropping the learned variance (σ² = β instead
/// of learned_range) or the guidance must break one-step parity.
#[test]
fn dps_parity_fails_for_wrong_settings() {
    let device = Device::flex();
    let m = model("model.safetensors", &device);
    let fx = DpsFixture::load(&fixtures().join("dps/dps_gaussian_blur.json")).unwrap();
    let mut wrong = fx.settings.clone();
    wrong.variance = "fixed_large".into();
    let r = check_dps_case(&m, &DpsFixture::with_settings(&fx, wrong), &device).unwrap();
    assert!(
        r.one_step_error > 1e-3,
        "fixed_large passed: {}",
        r.one_step_error
    );
    let mut wrong = fx.settings.clone();
    wrong.dps_scale = Some(0.5);
    let r = check_dps_case(&m, &DpsFixture::with_settings(&fx, wrong), &device).unwrap();
    assert!(
        r.one_step_error > 1e-3,
        "scale 0.5 passed: {}",
        r.one_step_error
    );
}
