//! Hugging Face diffusers DDPM models (`UNet2DModel` + a DDPM scheduler) as priors.
//!
//! [`DiffusersModel::load_dir`] takes a folder in either layout diffusers writes:
//! - flat: `config.json`, `diffusion_pytorch_model.safetensors` (or `.bin`) and
//!   `scheduler_config.json` (the `google/ddpm-*` repositories);
//! - pipeline: `model_index.json` with `unet/` and `scheduler/` folders.
//!
//! The network ([`DiffusersUNet`]) is built with diffusers' own key names, including the
//! attention names older conversions wrote (`query`, `key`, `value`, `proj_attn`); the noise
//! schedule comes from the scheduler ([`SchedulerConfig::schedule`]). Diffusers' timestep
//! `t − 1` is tweedie's `t` ([`tweedie_core::NoiseLevel::network_timestep`]).
//!
//! ```
//! use tweedie_core::{Device, EpsModel, NoiseSource};
//! use tweedie_unet::diffusers::DiffusersModel;
//!
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
//!     .join("../../tests/fixtures/diffusers/ddpm_flat");
//! # if !dir.exists() { return; } // the fixtures are not in the published crate
//! let device = Device::flex();
//! let model = DiffusersModel::load_dir(&dir, &device).unwrap();
//! assert_eq!(model.image_size(), 32);
//! // Tweedie's x̂0 at t = 100 of the model's own schedule (its scheduler_config.json).
//! let level = model.schedule.level(100);
//! let x_t = NoiseSource::new(0).normal([1, 3, 32, 32], &device);
//! assert_eq!(model.denoise(x_t, level).dims(), [1, 3, 32, 32]);
//! ```

mod config;
mod net;
mod parity;

pub use config::{SampleSize, SchedulerConfig, UNet2DConfig};
pub use net::DiffusersUNet;
pub use parity::{ParityReport, check_parity};

use crate::weights::{WeightError, WeightMap};
use burn::tensor::{Device, Tensor};
use std::path::{Path, PathBuf};
use tweedie_core::{EpsModel, NoiseLevel, Schedule};

/// Why a diffusers folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiffusersError {
    /// A file is missing or unreadable.
    #[error("{0}")]
    Layout(String),
    /// A config is not valid JSON, has an unknown key or inconsistent values.
    #[error("{0}")]
    Config(String),
    /// The model uses an option this port does not implement (named).
    #[error("unsupported diffusers option: {0}")]
    Unsupported(String),
    /// The weights are unreadable or do not match the config.
    #[error(transparent)]
    Weights(#[from] WeightError),
}

/// The files of one diffusers model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusersFiles {
    /// The network's `config.json`.
    pub config: PathBuf,
    /// The scheduler's `scheduler_config.json`.
    pub scheduler: PathBuf,
    /// The weight files present, safetensors first (`diffusion_pytorch_model.safetensors`,
    /// then `.bin`).
    pub weights: Vec<PathBuf>,
}

/// Weight file names diffusers writes, in the order they are preferred.
const WEIGHT_NAMES: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
];

impl DiffusersFiles {
    /// True when `dir` looks like a diffusers model folder (flat or pipeline).
    pub fn is_diffusers_dir(dir: &Path) -> bool {
        dir.is_dir()
            && (dir.join("model_index.json").is_file()
                || dir.join("scheduler_config.json").is_file()
                || dir.join("unet").join("config.json").is_file())
    }

    /// Finds the files of the flat or the pipeline layout in `dir`.
    pub fn find(dir: &Path) -> Result<Self, DiffusersError> {
        let (unet_dir, scheduler_dir) = if dir.join("config.json").is_file() {
            (dir.to_path_buf(), dir.to_path_buf())
        } else if dir.join("model_index.json").is_file() || dir.join("unet").is_dir() {
            (dir.join("unet"), dir.join("scheduler"))
        } else {
            return Err(DiffusersError::Layout(format!(
                "{}: not a diffusers model folder (expected config.json + scheduler_config.json + diffusion_pytorch_model.safetensors/.bin, or model_index.json with unet/ and scheduler/)",
                dir.display()
            )));
        };
        let need = |p: PathBuf| {
            if p.is_file() {
                Ok(p)
            } else {
                Err(DiffusersError::Layout(format!(
                    "{} is missing",
                    p.display()
                )))
            }
        };
        let config = need(unet_dir.join("config.json"))?;
        let scheduler = need(scheduler_dir.join("scheduler_config.json"))?;
        let weights: Vec<PathBuf> = WEIGHT_NAMES
            .iter()
            .map(|n| unet_dir.join(n))
            .filter(|p| p.is_file())
            .collect();
        if weights.is_empty() {
            return Err(DiffusersError::Layout(format!(
                "{}: no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin",
                unet_dir.display()
            )));
        }
        Ok(Self {
            config,
            scheduler,
            weights,
        })
    }
}

fn read(path: &Path) -> Result<String, DiffusersError> {
    std::fs::read_to_string(path)
        .map_err(|e| DiffusersError::Layout(format!("{}: cannot read ({e})", path.display())))
}

/// Renames the attention keys of older diffusers conversions to today's, as diffusers'
/// `_convert_deprecated_attention_blocks` does: `query`→`to_q`, `key`→`to_k`,
/// `value`→`to_v`, `proj_attn`→`to_out.0` (only inside `attentions.N`).
pub fn convert_legacy_attention_keys(weights: &mut WeightMap) {
    const RENAMES: [(&str, &str); 4] = [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ];
    weights.rename_keys(|key| {
        if !key.contains(".attentions.") {
            return None;
        }
        RENAMES
            .iter()
            .find(|(old, _)| key.contains(old))
            .map(|(old, new)| key.replacen(old, new, 1))
    });
}

/// A diffusers DDPM model: the network, its scheduler config and the noise schedule built
/// from it, and where it came from.
#[derive(Debug, Clone)]
pub struct DiffusersModel {
    /// The network.
    pub net: DiffusersUNet,
    /// The scheduler config, as read.
    pub scheduler: SchedulerConfig,
    /// β and ᾱ from the scheduler.
    pub schedule: Schedule,
    /// The weight file the network was loaded from.
    pub weights: PathBuf,
}

impl DiffusersModel {
    /// Loads a diffusers folder (flat or pipeline layout) with its preferred weight file.
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self, DiffusersError> {
        let files = DiffusersFiles::find(dir)?;
        Self::load_files(&files, &files.weights[0], device)
    }

    /// Loads the network from `weights` (one of `files.weights`, or any safetensors/`.bin`
    /// file with the same keys) and the scheduler from `files`.
    pub fn load_files(
        files: &DiffusersFiles,
        weights: &Path,
        device: &Device,
    ) -> Result<Self, DiffusersError> {
        let config = UNet2DConfig::from_json_str(&read(&files.config)?)
            .map_err(|e| in_file(e, &files.config))?;
        config.image_size().map_err(|e| in_file(e, &files.config))?;
        let scheduler = SchedulerConfig::from_json_str(&read(&files.scheduler)?)
            .map_err(|e| in_file(e, &files.scheduler))?;
        let schedule = scheduler.schedule()?;
        let mut map = WeightMap::load(weights)?;
        convert_legacy_attention_keys(&mut map);
        let net = Self::network(&config, &mut map, device)?;
        Ok(Self {
            net,
            scheduler,
            schedule,
            weights: weights.to_path_buf(),
        })
    }

    /// Builds the network of `config` from `weights`, failing with a listing of missing,
    /// mis-shaped and unexpected keys.
    pub fn network(
        config: &UNet2DConfig,
        weights: &mut WeightMap,
        device: &Device,
    ) -> Result<DiffusersUNet, DiffusersError> {
        config.validate()?;
        let net = DiffusersUNet::build(config, weights, device);
        weights.finish()?;
        Ok(net)
    }

    /// The image side the network was trained at (`sample_size`).
    pub fn image_size(&self) -> usize {
        self.net
            .config()
            .image_size()
            .expect("checked when the model was loaded")
    }

    /// True when the network outputs learned-range variance channels.
    pub fn has_learned_variance(&self) -> bool {
        self.net.config().learned_variance() && self.scheduler.variance_type == "learned_range"
    }
}

/// Prefixes an error with the file it came from.
fn in_file(e: DiffusersError, path: &Path) -> DiffusersError {
    match e {
        DiffusersError::Config(m) => DiffusersError::Config(format!("{}: {m}", path.display())),
        DiffusersError::Unsupported(m) => {
            DiffusersError::Unsupported(format!("{m} (in {})", path.display()))
        }
        other => other,
    }
}

impl EpsModel for DiffusersModel {
    fn predict_eps(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4> {
        self.predict_eps_and_variance(x_t, level).0
    }
    fn predict_eps_and_variance(
        &self,
        x_t: Tensor<4>,
        level: NoiseLevel,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        let b = x_t.dims()[0];
        let out = self
            .net
            .forward(x_t, &vec![level.network_timestep() as f32; b]);
        // Variance channels under another variance_type than learned_range are not used.
        let (eps, v) = crate::unet::split_variance(out);
        (eps, v.filter(|_| self.has_learned_variance()))
    }
    fn has_learned_variance(&self) -> bool {
        DiffusersModel::has_learned_variance(self)
    }
}
