//! `tweedie`: diffusion-model image restoration from the command line.
//!
//! One module per command, each owning its arguments and its run function; `main` only parses
//! and dispatches. Shared pieces (`args`, `inputs`, `model`, `operator_args`, `output`,
//! `progress`, `sampling`) import no command module.

mod args;
mod bench;
mod calibrate;
mod denoise;
mod eval;
mod evaluate;
mod fd;
mod fit_mean;
mod generate;
mod inputs;
mod memorisation;
mod metrics;
mod model;
mod nfe;
mod operator_args;
mod output;
mod parity;
mod progress;
mod report;
mod restore;
mod sampling;
mod train;

use clap::{Parser, Subcommand};

/// Diffusion models for image restoration: denoise, generate, inpaint, deblur, super-resolve.
#[derive(Parser, Debug)]
#[command(name = "tweedie", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train an ADM denoiser on a folder of images (ε-prediction, Adam, EMA).
    ///
    /// Example: tweedie train --data ../shared/data/celeba/train --out runs/celeba32 --size 32 --crop 140 --steps 20000
    Train(train::TrainArgs),
    /// Unconditional generation (Task 3).
    ///
    /// Example: tweedie generate --n 16 --steps 100 --seed 1 --out out/gen
    Generate(generate::GenerateArgs),
    /// Forward-noise images to timesteps t and denoise them in one Tweedie step (Task 2).
    ///
    /// Example: tweedie denoise face.png --t 30,100,300 --out out/denoise
    Denoise(denoise::DenoiseArgs),
    /// Restore images with SDEdit, Score-ALD, DPS, DiffPIR or DDNM (Tasks 4–6 and beyond):
    /// from a measurement simulated from clean images, or from an already degraded photo
    /// (`--measured`); `--samples K` draws K posterior samples with their mean and a per-pixel
    /// std map.
    ///
    /// Example: tweedie restore faces/ --method dps --op inpaint-box --sigma 0.05 --steps 250 --out out/dps
    Restore(restore::RestoreArgs),
    /// PSNR, SSIM and LPIPS between two images, or two folders matched by file name.
    ///
    /// Example: tweedie metrics reference.png restored.png
    Metrics(metrics::MetricsArgs),
    /// Measure a model for its model card: Tweedie denoising PSNR/SSIM/LPIPS on held-out
    /// images vs a Gaussian-prior baseline, and an 8×8 sample grid.
    ///
    /// Example: tweedie evaluate --model assets/model.safetensors --val ../shared/data/celeba/val --train ../shared/data/celeba/train --crop 140 --out docs
    Evaluate(evaluate::EvaluateArgs),
    /// Every method × operator over a folder → metrics table (JSON, CSV, Markdown) and figure
    /// grids; `--shard i/n` splits the folder across jobs (e.g. a Slurm or Kubernetes job array).
    ///
    /// Example: tweedie eval faces/ --methods sdedit,ald,dps --ops inpaint-box,gaussian-blur --shard 0/4 --out eval/
    Eval(eval::EvalArgs),
    /// Combine the shard files of `tweedie eval --shard i/n` into one metrics table.
    ///
    /// Example: tweedie merge eval/ --out eval/
    Merge(eval::MergeArgs),
    /// Run the whole task suite (Tasks 2–6) and write a Markdown report with figures.
    ///
    /// Example: tweedie report --faces assets/faces --crop 140 --out report
    Report(report::ReportArgs),
    /// Time UNet forward passes (batch 1/8/32, small configs; --ffhq adds FFHQ-256), training steps, sampler steps and LPIPS (`--only` picks parts).
    ///
    /// Example: tweedie bench --ffhq
    Bench(bench::BenchArgs),
    /// Check a UNet port against a reference fixture folder (config.json, model.safetensors or
    /// model.pt, io.safetensors): prints the max abs error.
    ///
    /// Example: tweedie parity tests/fixtures/adm
    Parity(parity::ParityArgs),
    /// Replay DPS runs recorded from the official DPS code (`dps_<case>.json` +
    /// `.safetensors` in FIXTURES) with the model in MODEL_DIR (config.json plus
    /// model.safetensors and/or model.pt): prints, per case and weights file, the operator's
    /// error, the worst one-step error (each step started from the reference trajectory with
    /// its recorded noise) and the whole chain's error.
    ///
    /// Example: tweedie parity-dps tests/fixtures/adm tests/fixtures/dps
    ParityDps(parity::ParityDpsArgs),
    /// Choose operator strengths at the model's resolution that make the measurement as hard
    /// (same PSNR of y, or A⁺y for masks and SR) as DPS's settings at 256 px.
    ///
    /// Example: tweedie calibrate --reference ../shared/data/ffhq256 --faces ../shared/data/celeba/val --crop 140 --out docs/calibration_32px.json
    Calibrate(calibrate::CalibrateArgs),
    /// Fréchet distance between two image sets: of AlexNet features (FD-Alex, our own measure,
    /// not FID) and of per-image mean colours (colour-FD, which measures colour casts).
    ///
    /// Example: tweedie fd samples/ ../shared/data/celeba/val --size 32
    Fd(fd::FdArgs),
    /// Memorisation check: each sample's distance to its nearest training image (pixel RMSE
    /// with mirror images, and LPIPS), against the same for held-out images.
    ///
    /// Example: tweedie memorisation samples/ --train ../shared/data/celeba/train --val ../shared/data/celeba/val --crop 140
    Memorisation(memorisation::MemorisationArgs),
    /// Quality against the number of steps (NFE): PSNR and LPIPS of each method at several
    /// chain lengths on the same measurements, as a table (nfe.md), a plot (nfe.png) and JSON.
    ///
    /// Example: tweedie nfe --faces assets/faces --crop 140 --methods dps,diffpir,ddnm --nfe-steps 20,50,100,250,1000 --out out/nfe
    Nfe(nfe::NfeArgs),
    /// Fit a model's post-hoc correction of x̂0's per-channel image mean on training images
    /// (per timestep, a line from x̂0's mean to the true one: variance matching by default,
    /// least squares with `--rule regression`) and write the config that carries it; the
    /// samplers then use the corrected ε̂.
    ///
    /// Example: tweedie fit-mean --data ../shared/data/celeba/train --crop 140 --out out/fit
    FitMean(fit_mean::FitMeanArgs),
}

/// Runs a parsed command line: each command's own `run`.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Denoise(a) => denoise::run(a),
        Command::Restore(a) => restore::run(a),
        Command::Metrics(a) => metrics::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Merge(a) => eval::merge(a),
        Command::Report(a) => report::run(a),
        Command::Bench(a) => bench::bench(a),
        Command::Parity(a) => parity::run(a),
        Command::ParityDps(a) => parity::run_dps(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Fd(a) => fd::run(a),
        Command::Memorisation(a) => memorisation::run(a),
        Command::Nfe(a) => nfe::run(a),
        Command::FitMean(a) => fit_mean::run(a),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {}", output::error_text(&e));
        std::process::exit(1);
    }
}
