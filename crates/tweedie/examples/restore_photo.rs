//! Restore a photo that is already degraded (no ground truth): a blurred, noisy image and the
//! blur kernel it was made with, restored by DPS in one library call.
//!
//! ```text
//! cargo run --release --example restore_photo [-- BLURRED.png KERNEL.npy [STEPS]]
//! ```
//!
//! Without arguments it first makes such a photo from `assets/faces/000444.jpg` (Gaussian blur
//! σ = 0.8 px, σ_y = 0.05, kernel saved as `.npy`), then forgets the clean image and restores
//! the blurred one with `tasks::restore_measured`, as `tweedie restore --measured BLURRED.png
//! --op gaussian-blur --kernel KERNEL.npy` does. Outputs go to
//! `target/example-output/restore_photo/`.

use std::path::{Path, PathBuf};
use tweedie::core::{Device, NoiseSource, Schedule};
use tweedie::io::{from_tensor, load_image, load_image_sized, save_png, to_tensor};
use tweedie::operators::{OperatorSpec, build, measure};
use tweedie::samplers::Observer;
use tweedie::tasks::{Knobs, Method, Preset, RestoreSettings, restore_measured};
use tweedie::unet::{UNet, UNetConfig, UNetEps};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let out = root.join("target/example-output/restore_photo");
    std::fs::create_dir_all(&out)?;
    let device = Device::flex();
    let config = UNetConfig::from_json_file(root.join("assets/model.json"))?;
    let model = UNetEps {
        net: UNet::load(&config, root.join("assets/model.safetensors"), &device)?,
    };
    let size = config.image_size;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(100);

    // The degraded photo and its kernel: given, or made here from a clean face.
    let (photo, kernel): (PathBuf, PathBuf) = match (args.first(), args.get(1)) {
        (Some(p), Some(k)) => (p.into(), k.into()),
        _ => {
            let x = to_tensor(
                &[load_image_sized(
                    root.join("assets/faces/000444.jpg"),
                    size,
                )?],
                &device,
            )?;
            let spec = OperatorSpec::GaussianBlur {
                size: 7,
                sigma: 0.8,
            };
            let mut noise = NoiseSource::new(1);
            let op = build(&spec, size, size, &mut noise, &device)?;
            let y = measure(op.as_ref(), x, 0.05, &mut noise)?;
            save_png(
                &from_tensor(&y.clamp(-1.0, 1.0))?[0],
                out.join("blurred.png"),
            )?;
            let files = op.save_params(&out, "blurred")?;
            (out.join("blurred.png"), files[0].clone())
        }
    };

    // One call: the DPS preset on a Gaussian blur given by the kernel file, σ_y = 0.05.
    let y = to_tensor(&[load_image(&photo)?], &device)?;
    // The DPS code's ζ is per step of a 1000-step chain: keep its total guidance.
    let knobs = Knobs {
        scale_zeta_with_stride: true,
        ..Knobs::new(
            Preset::Dps,
            OperatorSpec::KernelBlur { path: kernel },
            steps,
        )
    };
    let settings = RestoreSettings::configure(Method::Dps, &knobs)?.for_model(&model);
    let started = std::time::Instant::now();
    let r = restore_measured(
        &model,
        &Schedule::linear_default(),
        &y,
        [size, size],
        &settings,
        &device,
        &mut Observer::default(),
    )?;
    save_png(
        &from_tensor(&r.reconstruction)?[0],
        out.join("restored.png"),
    )?;
    println!(
        "{}: {} → {} in {:.1} s ({})",
        photo.display(),
        r.description,
        out.join("restored.png").display(),
        started.elapsed().as_secs_f64(),
        settings.summary()
    );
    Ok(())
}
