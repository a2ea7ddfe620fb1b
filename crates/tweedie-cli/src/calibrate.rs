//! `tweedie calibrate`: operator strengths at the model's resolution that match the difficulty
//! (measurement PSNR) of DPS's settings at 256 px.

use crate::operator_args::OpArg;
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;
use tweedie_io::Image;

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Folder of reference images at DPS's resolution (e.g. ../shared/data/ffhq256); each is
    /// centre-cropped and resized to `--reference-size`.
    #[arg(long)]
    pub reference: PathBuf,
    /// Side of the reference images (DPS: 256).
    #[arg(long, default_value_t = 256)]
    pub reference_size: usize,
    /// Folder of faces at the model's resolution (e.g. ../shared/data/celeba/val).
    #[arg(long)]
    pub faces: PathBuf,
    /// How many faces to use (the first N by name).
    #[arg(long, default_value_t = 32)]
    pub n_faces: usize,
    /// Centre-crop side of the faces before resizing (the embedded model: 140 on CelebA).
    #[arg(long)]
    pub crop: Option<usize>,
    /// The model's resolution.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Operators to calibrate.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "inpaint-box,inpaint-random-box,inpaint-random-range,gaussian-blur,motion-blur,sr4"
    )]
    pub ops: Vec<OpArg>,
    /// Measurement noise σ in the [−1, 1] scale.
    #[arg(long, default_value_t = 0.05)]
    pub sigma: f64,
    /// Seed of the random operators and the measurement noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the calibration as JSON here (what `tweedie report --calibration` reads).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn load(dir: &PathBuf, n: usize, crop: Option<usize>, size: usize) -> Result<Vec<Image>> {
    let files: Vec<PathBuf> = crate::inputs::collect_inputs(std::slice::from_ref(dir))?
        .into_iter()
        .take(n)
        .collect();
    files
        .iter()
        .map(|f| crate::inputs::load_cropped(f, crop, size))
        .collect()
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    if a.ops.contains(&OpArg::InpaintMask) {
        bail!("inpaint-mask has no strength to calibrate (its mask is given)");
    }
    if let Some(out) = &a.out {
        crate::output::check_out_file(out)?;
    }
    let device = burn::tensor::Device::flex();
    let to_tensors = |images: Vec<Image>| -> Result<Vec<burn::tensor::Tensor<4>>> {
        images
            .iter()
            .map(|i| Ok(tweedie_io::to_tensor(std::slice::from_ref(i), &device)?))
            .collect()
    };
    let reference = to_tensors(load(&a.reference, usize::MAX, None, a.reference_size)?)?;
    let faces = to_tensors(load(&a.faces, a.n_faces, a.crop, a.size)?)?;
    let names: Vec<String> = a.ops.iter().map(|o| o.name()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let cal = tweedie::calibrate::calibrate(&reference, &faces, &names, a.sigma, a.seed, &device)?;
    println!(
        "Measurement PSNR (y for blurs, A⁺y for masks and SR; σ_y = {}, seed {}): {} reference images at {} px from {}, {} faces at {} px from {}\n",
        a.sigma,
        a.seed,
        reference.len(),
        a.reference_size,
        a.reference.display(),
        faces.len(),
        a.size,
        a.faces.display()
    );
    println!("{}", tweedie::calibrate::table(&cal));
    if let Some(out) = &a.out {
        let json = serde_json::json!({
            "reference": a.reference, "reference_size": a.reference_size, "reference_images": reference.len(),
            "faces": a.faces, "faces_used": faces.len(), "crop": a.crop, "size": a.size,
            "sigma": a.sigma, "seed": a.seed, "calibrations": cal,
        });
        tweedie_io::write_atomic(out, serde_json::to_string_pretty(&json)?.as_bytes())?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
