//! DPS inpainting (problem sheet, Task 6) with the embedded face model, in about 30 lines.
//!
//! ```text
//! cargo run --release --example dps_inpainting [-- IMAGE [STEPS]]
//! ```
//!
//! A centred box covering half the side is removed from IMAGE (default
//! `assets/faces/000444.jpg`), y = A(x) + 0.05 n is measured, and DPS restores it with the
//! official DPS code's settings (`Preset::Dps`: residual rule ζ = 0.5 for inpainting, learned
//! variance — the embedded model's `learned_range` channels — x̂0 clipped) over 100
//! strided steps, or STEPS (ζ × 1000/steps, as the report does, so that the short chain's
//! total guidance matches DPS's 1000-step chain). Writes the images to
//! `target/example-output/dps_inpainting/` and prints the PSNRs.

use std::path::Path;
use tweedie::core::{Device, NoiseSource, Schedule};
use tweedie::io::{from_tensor, load_image_sized, save_png, to_tensor};
use tweedie::operators::{OperatorSpec, build, measure};
use tweedie::samplers::{ChainOptions, Denoiser, Dps, Knobs, Observer, Problem, Solver};
use tweedie::tasks::Preset;
use tweedie::unet::{UNet, UNetConfig, UNetEps};

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

    // Model and image ([1, 3, 32, 32] in [−1, 1]).
    let config = UNetConfig::from_json_file(root.join("assets/model.json"))?;
    let model = UNetEps {
        net: UNet::load(&config, root.join("assets/model.safetensors"), &device)?,
    };
    let size = config.image_size;
    let x = to_tensor(&[load_image_sized(&image, size)?], &device)?;

    // The operator (DPS's centred box, scaled to the image) and y = A(x) + σn, σ = 0.05.
    let mut noise = NoiseSource::new(0);
    let spec = OperatorSpec::dps_default("inpaint-box", size)?;
    let op = build(&spec, size, size, &mut noise, &device)?;
    let y = measure(op.as_ref(), x.clone(), 0.05, &mut noise)?;

    // The DPS preset's settings, with ζ × 1000/steps for the strided chain.
    let preset = Preset::Dps;
    let knobs = Knobs {
        scale_zeta_with_stride: true,
        ..Knobs::new(preset, spec, steps)
    };
    let dps = Dps::configure(&knobs, &mut Vec::new())?;
    let chain = ChainOptions {
        steps,
        variance: preset.variance(),
        clip_x0: true,
        ..Default::default()
    };
    let schedule = Schedule::linear_default();
    let out = dps
        .solve(
            &Denoiser::new(&model, &schedule),
            &Problem::new(op.as_ref(), y.clone(), 0.05),
            x.dims(),
            &chain,
            &mut noise,
            &mut Observer::default(),
        )?
        .output;
    let x_hat = out.x0.clamp(-1.0, 1.0);

    // Save and score (the measurement as an image is A⁺y: the hole left black).
    let out_dir = root.join("target/example-output/dps_inpainting");
    std::fs::create_dir_all(&out_dir)?;
    let y_img = op.initialise(y);
    for (name, t) in [("truth", &x), ("measurement", &y_img), ("dps", &x_hat)] {
        save_png(&from_tensor(t)?[0], out_dir.join(format!("{name}.png")))?;
    }
    let psnr = |t| tweedie::metrics::psnr(t, &x).map(|p| p[0]);
    println!(
        "{}, σ_y = 0.05; DPS: {} steps, {:?}",
        op.describe(),
        steps,
        dps.step
    );
    println!(
        "PSNR  measurement (A⁺y) {:.2} dB → DPS {:.2} dB",
        psnr(&y_img)?,
        psnr(&x_hat)?
    );
    println!(
        "outputs {}  ({:.1} s)",
        out_dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
