//! One-step Tweedie denoising with the embedded face model (problem sheet, Task 2).
//!
//! ```text
//! cargo run --release --example denoise [-- IMAGE [T]]
//! ```
//!
//! Loads IMAGE (default `assets/faces/000444.jpg`), centre-crops and resizes it to the model's
//! 32×32, noises it to x_t = √ᾱ_t x0 + √(1 − ᾱ_t) z (t = 100 unless given), denoises it back
//! in one Tweedie step x̂0 = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t))/√ᾱ_t, writes the clean, noisy and
//! denoised images (and a side-by-side figure) to `target/example-output/denoise/`, and
//! prints the PSNR of x_t and of x̂0 against the clean image.

use std::path::{Path, PathBuf};
use std::time::Instant;
use tweedie::core::{Device, NoiseSource, Schedule, Tensor};
use tweedie::io::{Grid, GridCell, from_tensor, load_image_sized, save_png, to_tensor};
use tweedie::metrics::psnr;
use tweedie::samplers::denoise;
use tweedie::unet::{UNet, UNetConfig, UNetEps};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let mut args = std::env::args().skip(1);
    let image = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("assets/faces/000444.jpg"));
    let t: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let out = root.join("target/example-output/denoise");
    std::fs::create_dir_all(&out)?;

    // The CPU backend; `Device::wgpu()` (feature `burn/wgpu`) runs the same code on a GPU.
    let device = Device::flex();
    // The embedded model: guided-diffusion's `create_model` arguments + safetensors weights.
    let config = UNetConfig::from_json_file(root.join("assets/model.json"))?;
    let net = UNet::load(&config, root.join("assets/model.safetensors"), &device)?;
    let model = UNetEps { net };

    // [1, 3, 32, 32] in [−1, 1].
    let size = config.image_size;
    let x0 = to_tensor(&[load_image_sized(&image, size)?], &device)?;

    // x_t and x̂0 = E[x0 | x_t] from the network's ε (noise seeded: same numbers every run).
    let schedule = Schedule::linear_default();
    let d = denoise(&model, &schedule, x0.clone(), t, &mut NoiseSource::new(0))?;
    let noisy = d.x_t.clamp(-1.0, 1.0);
    let denoised = d.x0_hat.clamp(-1.0, 1.0);
    let (p_noisy, p_denoised) = (psnr(&noisy, &x0)?[0], psnr(&denoised, &x0)?[0]);

    let one = |x: &Tensor<4>| from_tensor(x).map(|mut images| images.remove(0));
    let titles = [
        "clean".to_string(),
        format!("x_t, t={t}"),
        "Tweedie x0".into(),
    ];
    let mut grid = Grid::new(96).with_titles(&titles);
    let mut row = Vec::new();
    for (name, x, caption) in [
        ("clean", &x0, String::new()),
        ("noisy", &noisy, format!("{p_noisy:.2} dB")),
        ("denoised", &denoised, format!("{p_denoised:.2} dB")),
    ] {
        let img = one(x)?;
        save_png(&img, out.join(format!("{name}.png")))?;
        row.push(GridCell::new(img, &caption));
    }
    grid.push_row(row);
    grid.save(out.join("figure.png"))?;

    println!("image     {}", image.display());
    println!(
        "model     {} parameters, {size}×{size}",
        model.net.num_parameters()
    );
    println!("t         {t} (ᾱ_t = {:.4})", schedule.alpha_bar[t]);
    println!("PSNR      noisy x_t {p_noisy:.2} dB → denoised x̂0 {p_denoised:.2} dB");
    println!("outputs   {}", out.display());
    println!("time      {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}
