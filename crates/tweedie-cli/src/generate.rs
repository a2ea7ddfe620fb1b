//! `tweedie generate`.

use crate::args::Common;
use crate::args::check_eta;
use crate::model;
use crate::output::check_out;
use crate::sampling::{DEFAULT_BATCH, sample_batches};
use anyhow::{Result, bail};
use clap::Args;
use tweedie_samplers::ChainOptions;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    common: Common,
    /// Number of images.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Images sampled at once (bounds the memory a large `--n` needs). The samples do not
    /// depend on it: image i's noise comes from its own stream of the seed.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
    /// Reverse steps (1..=1000; fewer than 1000 = strided chain).
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Use DDIM steps with this η instead of ancestral steps.
    #[arg(long)]
    eta: Option<f64>,
    /// Do not clamp x̂0 to [−1, 1] before each step (the problem sheet's plain step;
    /// guided-diffusion clamps, and so does the default).
    #[arg(long)]
    no_clip: bool,
}

/// `generate`'s grid.png shows at most this many samples.
const GRID_MAX: usize = 256;

pub fn run(a: GenerateArgs) -> Result<()> {
    let c = &a.common;
    if a.n == 0 {
        bail!("--n must be ≥ 1");
    }
    if a.batch == 0 {
        bail!("--batch must be ≥ 1");
    }
    crate::args::check_steps("--steps", a.steps)?;
    check_eta(a.eta)?;
    check_out(&c.out)?;
    let device = model::device(c.backend.as_str())?;
    let net = model::load(&c.model, c.config.as_deref(), &device)?;
    let opts = ChainOptions {
        steps: a.steps,
        eta: a.eta,
        variance: c.variance_or_beta(),
        clip_x0: !a.no_clip,
        ..Default::default()
    };
    // Written batch by batch; only the grid's samples are kept.
    let digits = (a.n - 1).to_string().len().max(3);
    let mut shown = Vec::new();
    sample_batches(
        &net,
        a.n,
        a.batch,
        &opts,
        c.seed,
        &device,
        "generate",
        &mut |first, images| {
            for (k, img) in images.iter().enumerate() {
                let name = format!("sample_{:0digits$}.png", first + k);
                tweedie_io::save_png(img, c.out.join(name))?;
            }
            let room = GRID_MAX.saturating_sub(shown.len());
            shown.extend(images.into_iter().take(room));
            Ok(())
        },
    )?;
    let cols = (shown.len() as f64).sqrt().ceil() as usize;
    let grid = tweedie_io::Grid::from_images(&shown, cols, 0);
    grid.save(c.out.join("grid.png"))?;
    // What produced the samples.
    let settings = serde_json::json!({
        "command": "generate",
        "model": c.model,
        "config": c.config,
        "network": net.describe(),
        "backend": c.backend.as_str(),
        "n": a.n,
        "batch": a.batch,
        "steps": a.steps,
        "seed": c.seed,
        "variance": opts.variance,
        "eta": a.eta,
        "clip_x0": opts.clip_x0,
    });
    tweedie_io::write_atomic(
        &c.out.join("generate.json"),
        serde_json::to_string_pretty(&settings)?.as_bytes(),
    )?;
    if shown.len() < a.n {
        println!(
            "wrote {} samples, grid.png (the first {}) and generate.json to {}",
            a.n,
            shown.len(),
            c.out.display()
        );
    } else {
        println!(
            "wrote {} samples, grid.png and generate.json to {}",
            a.n,
            c.out.display()
        );
    }
    Ok(())
}
