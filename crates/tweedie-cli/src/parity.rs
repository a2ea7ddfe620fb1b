//! `tweedie parity` and `tweedie parity-dps`.

use crate::args::BackendArg;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ParityArgs {
    /// Fixture folder: a guided-diffusion one (config.json, model.safetensors/.pt,
    /// io.safetensors) or a diffusers model folder with io.safetensors.
    dir: PathBuf,
    /// `cpu` (burn flex), `wgpu` or `libtorch` (builds with those features).
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: crate::args::BackendArg,
}

#[derive(Args, Debug)]
pub struct ParityDpsArgs {
    /// Model folder: config.json with model.safetensors and/or model.pt.
    model_dir: PathBuf,
    /// Folder of DPS fixtures (dps_<case>.json + dps_<case>.safetensors).
    fixtures: PathBuf,
    /// `cpu` (burn flex), `wgpu` or `libtorch` (builds with those features).
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: crate::args::BackendArg,
    /// Exit non-zero when a one-step error exceeds this; 10× this for the first two steps,
    /// where x̂0 = √(1/ᾱ_t)·x_t − … multiplies ε's float rounding by up to 157 (box
    /// inpainting: ≈ 4e-4 there). The whole chain is only reported: chaotic cases such as box
    /// inpainting amplify float rounding.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
}

pub fn run(a: ParityArgs) -> Result<()> {
    let device = crate::model::device(a.backend.as_str())?;
    if tweedie_unet::diffusers::DiffusersFiles::is_diffusers_dir(&a.dir) {
        return run_diffusers(&a.dir, &device);
    }
    let cfg = tweedie_unet::UNetConfig::from_json_file(a.dir.join("config.json"))?;
    let io_path = a.dir.join("io.safetensors");
    let bytes =
        std::fs::read(&io_path).with_context(|| format!("reading {}", io_path.display()))?;
    let st = safetensors_view(&bytes, &io_path, &device)?;
    for weights in ["model.safetensors", "model.pt"] {
        let p = a.dir.join(weights);
        if !p.exists() {
            continue;
        }
        let net = tweedie_unet::UNet::load(&cfg, &p, &device)?;
        let got = tweedie_core::tensor::to_vec(&net.forward(st.x.clone(), &st.t));
        if got.len() != st.out.len() {
            bail!(
                "{weights}: the network gives {} values, the fixture's out has {}",
                got.len(),
                st.out.len()
            );
        }
        let err = got
            .iter()
            .zip(&st.out)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("{weights}: max abs error {err:e} over {} values", got.len());
    }
    Ok(())
}

/// A diffusers fixture folder: every weight file's output error and the scheduler's ᾱ error.
fn run_diffusers(dir: &std::path::Path, device: &burn::tensor::Device) -> Result<()> {
    let reports = tweedie_unet::diffusers::check_parity(dir, device)
        .with_context(|| format!("diffusers parity on {}", dir.display()))?;
    for r in reports {
        let name = r.weights.strip_prefix(dir).unwrap_or(&r.weights).display();
        println!(
            "{name}: max abs error {:e} over {} values; alphas_cumprod max abs error {:e}",
            r.out_error, r.values, r.alpha_bar_error
        );
    }
    Ok(())
}

pub fn run_dps(a: ParityDpsArgs) -> Result<()> {
    use tweedie::parity::{DpsFixture, check_dps_case, dps_fixture_files};
    let device = crate::model::device(a.backend.as_str())?;
    let cfg = tweedie_unet::UNetConfig::from_json_file(a.model_dir.join("config.json"))?;
    let files = dps_fixture_files(&a.fixtures)?;
    if files.is_empty() {
        bail!("{}: no dps_*.json fixtures", a.fixtures.display());
    }
    let fixtures = files
        .iter()
        .map(|f| DpsFixture::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut worst = 0.0f64;
    let mut exceeded = Vec::new();
    let mut any_weights = false;
    for weights in ["model.safetensors", "model.pt"] {
        let p = a.model_dir.join(weights);
        if !p.exists() {
            continue;
        }
        any_weights = true;
        let net = tweedie_unet::UNetEps {
            net: tweedie_unet::UNet::load(&cfg, &p, &device)?,
        };
        println!("{weights}:");
        println!(
            "  {:<18} {:>10} {:>16} {:>10} {:>12}",
            "case", "A(x0)", "one step (k)", "√ᾱ·x̂0", "whole chain"
        );
        for fx in &fixtures {
            let r = check_dps_case(&net, fx, &device)?;
            worst = worst.max(r.one_step_error).max(r.x0_hat_error);
            for (k, &e) in r.step_errors.iter().enumerate() {
                let tol = if k < 2 {
                    10.0 * a.tolerance
                } else {
                    a.tolerance
                };
                if e > tol {
                    exceeded.push(format!("{weights} {} step {k}: {e:.2e} > {tol:e}", r.case));
                }
            }
            if r.x0_hat_error > a.tolerance {
                exceeded.push(format!(
                    "{weights} {}: √ᾱ·x̂0 error {:.2e} > {:e}",
                    r.case, r.x0_hat_error, a.tolerance
                ));
            }
            println!(
                "  {:<18} {:>10.2e} {:>11.2e} ({:>2}) {:>10.2e} {:>12.2e}",
                r.case,
                r.operator_error,
                r.one_step_error,
                r.worst_step,
                r.x0_hat_error,
                r.chain_error
            );
        }
    }
    if !any_weights {
        bail!(
            "{}: neither model.safetensors nor model.pt",
            a.model_dir.display()
        );
    }
    if !exceeded.is_empty() {
        bail!(
            "errors exceed --tolerance {:e} (10× for the first two steps): {}",
            a.tolerance,
            exceeded.join("; ")
        );
    }
    println!(
        "all one-step errors within --tolerance {:e} (10× for the first two steps); largest {worst:.2e}",
        a.tolerance
    );
    Ok(())
}

struct FixtureIo {
    x: burn::tensor::Tensor<4>,
    t: Vec<f32>,
    out: Vec<f32>,
}

/// The fixture's `x` (4-D), `t` (integer timesteps) and `out`, read with the safetensors crate.
fn safetensors_view(
    bytes: &[u8],
    path: &std::path::Path,
    device: &burn::tensor::Device,
) -> Result<FixtureIo> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        Ok(tweedie_unet::reference_tensor(&st, name, path)?)
    };
    let (xs, x) = read("x")?;
    let (_, out) = read("out")?;
    let (_, t) = read("t")?;
    let [b, c, h, w] = xs[..] else {
        bail!("{}: x must be 4-D, got {xs:?}", path.display());
    };
    if t.len() != b {
        bail!(
            "{}: {} timesteps for a batch of {b}",
            path.display(),
            t.len()
        );
    }
    Ok(FixtureIo {
        x: tweedie_core::tensor::from_vec(x, [b, c, h, w], device),
        t,
        out,
    })
}
