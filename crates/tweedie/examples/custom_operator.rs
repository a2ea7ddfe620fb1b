//! Your own measurement operator, handed to DPS: colourisation (colour → grey).
//!
//! ```text
//! cargo run --release --example custom_operator [-- IMAGE [STEPS]]
//! ```
//!
//! `Grayscale` implements [`tweedie::operators::Operator`]: A(x) is the mean of the three
//! channels (a `[B, 1, H, W]` measurement), Aᵀ spreads a grey value back as a third to each
//! channel, and A⁺ copies it into all three. The example first checks the adjoint
//! numerically — ⟨Ax, y⟩ = ⟨x, Aᵀy⟩ on random tensors, and Aᵀ against the gradient burn's
//! autodiff computes through `forward` (which is what DPS differentiates) — then restores the
//! colours of IMAGE (default `assets/faces/000444.jpg`) from its noisy grey version with DPS
//! (100 strided steps unless STEPS is given) and the embedded model. Outputs go to
//! `target/example-output/custom_operator/`.
//!
//! The grey image pins the luminance only, so DPS matches it (the residual A x̂ − y comes out
//! near σ_y) and takes the colours from the model's prior. With the embedded 32-px model
//! (`assets/MODEL.md`) and the defaults the colourised result scores a lower PSNR than the
//! grey image itself (13.1 vs 22.4 dB in session 6): a colour drawn from a prior is penalised
//! more than no colour at all. The example shows how to plug in an operator, not a good
//! colouriser.

use std::path::Path;
use tweedie::core::{Device, NoiseSource, Schedule, Tensor, tensor};
use tweedie::io::{from_tensor, load_image_sized, save_png, to_tensor};
use tweedie::operators::{Operator, measure};
use tweedie::samplers::{
    ChainOptions, Denoiser, Dps, DpsStep, Observer, Problem, Solver, measurement_gradient,
};
use tweedie::tasks::Preset;
use tweedie::unet::{UNet, UNetConfig, UNetEps};

/// Colour → grey: the mean of the R, G and B channels.
#[derive(Debug, Clone, Copy)]
struct Grayscale;

impl Operator for Grayscale {
    /// `[B, 3, H, W]` → `[B, 1, H, W]`. Plain burn ops, so autodiff differentiates it.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x.mean_dim(1)
    }
    /// ⟨mean_c x_c, y⟩ = Σ_c ⟨x_c, y/3⟩, so Aᵀy puts y/3 in every channel.
    fn adjoint(&self, y: Tensor<4>) -> Tensor<4> {
        y.repeat_dim(1, 3).div_scalar(3.0)
    }
    /// A⁺ = Aᵀ(AAᵀ)⁻¹ with AAᵀ = I/3: the grey value in every channel.
    fn pseudo_inverse(&self, y: Tensor<4>) -> Tensor<4> {
        y.repeat_dim(1, 3)
    }
    fn describe(&self) -> String {
        "grayscale (channel mean)".into()
    }
}

/// ⟨a, b⟩ accumulated in f64 on the host.
fn dot(a: &Tensor<4>, b: &Tensor<4>) -> f64 {
    let (a, b) = (tensor::to_vec(a), tensor::to_vec(b));
    a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let image = std::env::args().nth(1).map(Into::into);
    let image = image.unwrap_or_else(|| root.join("assets/faces/000444.jpg"));
    let steps: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100);
    let device = Device::flex();
    let op = Grayscale;

    // 1. The adjoint, numerically: ⟨Ax, y⟩ = ⟨x, Aᵀy⟩ for random x and y …
    let mut noise = NoiseSource::new(1);
    let x = noise.normal([2, 3, 16, 16], &device);
    let y = noise.normal([2, 1, 16, 16], &device);
    let (lhs, rhs) = (
        dot(&op.forward(x.clone()), &y),
        dot(&x, &op.adjoint(y.clone())),
    );
    let rel = (lhs - rhs).abs() / lhs.abs().max(rhs.abs());
    println!("adjoint   ⟨Ax, y⟩ = {lhs:.6}, ⟨x, Aᵀy⟩ = {rhs:.6}, relative error {rel:.1e}");
    // … and Aᵀ against autodiff: ∇_x ‖Ax − y‖² = 2 Aᵀ(Ax − y).
    let grad = measurement_gradient(&op, x.clone(), y.clone());
    let by_adjoint = op.adjoint(op.forward(x.clone()) - y).mul_scalar(2.0);
    let grad_err = tensor::max_abs(&(grad - by_adjoint.clone())) / tensor::max_abs(&by_adjoint);
    println!("gradient  autodiff vs 2Aᵀ(Ax − y): relative max error {grad_err:.1e}");
    // A A⁺ = I: the pseudo-inverse is a right inverse.
    let round_trip = op.forward(op.pseudo_inverse(op.forward(x.clone())));
    let pinv_err = tensor::max_abs(&(round_trip - op.forward(x)));
    println!("pinv      max |A A⁺ A x − A x| = {pinv_err:.1e}");
    if rel > 1e-5 || grad_err > 1e-5 || pinv_err > 1e-5 {
        return Err("the operator's adjoint or pseudo-inverse is wrong".into());
    }

    // 2. Colourisation by DPS with the embedded model: y = A(x) + σn, σ = 0.05, a 1-channel
    //    measurement.
    let config = UNetConfig::from_json_file(root.join("assets/model.json"))?;
    let net = UNet::load(&config, root.join("assets/model.safetensors"), &device)?;
    let model = UNetEps { net };
    let size = config.image_size;
    let x = to_tensor(&[load_image_sized(&image, size)?], &device)?;
    let mut noise = NoiseSource::new(0);
    let y = measure(&op, x.clone(), 0.05, &mut noise)?;
    // The DPS preset's chain (learned variance from the model's variance channels; x̂0 clipped)
    // and residual rule, with the DPS configs' ζ for operators other than inpainting (0.3),
    // × 1000/steps so that the strided chain keeps the 1000-step chain's total guidance.
    let preset = Preset::Dps;
    let chain = ChainOptions {
        steps,
        variance: preset.variance(),
        clip_x0: true,
        ..Default::default()
    };
    let dps = Dps {
        step: DpsStep::Residual {
            zeta: 0.3 * 1000.0 / steps as f64,
        },
    };
    let schedule = Schedule::linear_default();
    let out = dps
        .solve(
            &Denoiser::new(&model, &schedule),
            &Problem::new(&op, y.clone(), 0.05),
            x.dims(),
            &chain,
            &mut noise,
            &mut Observer::default(),
        )?
        .output;
    let x_hat = out.x0.clamp(-1.0, 1.0);
    let grey = op.initialise(y.clone()).clamp(-1.0, 1.0);

    let out_dir = root.join("target/example-output/custom_operator");
    std::fs::create_dir_all(&out_dir)?;
    for (name, t) in [("truth", &x), ("grey", &grey), ("dps", &x_hat)] {
        save_png(&from_tensor(t)?[0], out_dir.join(format!("{name}.png")))?;
    }
    let psnr = |t: &Tensor<4>| tweedie::metrics::psnr(t, &x).map(|p| p[0]);
    // What DPS enforces: A x̂ ≈ y, i.e. a residual RMS per pixel near σ_y = 0.05.
    let resid = op.forward(x_hat.clone()) - y;
    let rms = (dot(&resid, &resid) / (size * size) as f64).sqrt();
    println!(
        "{}, σ_y = 0.05; DPS: {steps} steps, {:?}",
        op.describe(),
        dps.step
    );
    println!("residual  RMS of A x̂ − y per pixel: {rms:.3} (σ_y = 0.05)");
    println!(
        "PSNR      grey (A⁺y) {:.2} dB, DPS {:.2} dB",
        psnr(&grey)?,
        psnr(&x_hat)?
    );
    println!(
        "outputs   {}  ({:.1} s)",
        out_dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
