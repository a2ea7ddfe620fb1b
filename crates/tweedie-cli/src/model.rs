//! Choosing the backend and the model.

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use std::path::{Path, PathBuf};
use tweedie_unet::diffusers::{DiffusersFiles, DiffusersModel};
use tweedie_unet::{Prior, UNet, UNetConfig, UNetEps, WeightMap};

/// The default model's weights, compiled into the binary from `assets/model.safetensors`.
static EMBEDDED_WEIGHTS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../assets/model.safetensors"
));

/// The default model's config, compiled in from `assets/model.json`.
static EMBEDDED_CONFIG: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../assets/model.json"
));

/// The built-in model's config (`assets/model.json`, compiled in).
pub fn embedded_config() -> UNetConfig {
    UNetConfig::from_json_str(EMBEDDED_CONFIG).expect("the built-in model's config parses")
}

/// The compute device for `--backend cpu|wgpu|libtorch`.
///
/// `cpu` (alias `flex`) is burn's pure-Rust CPU backend; `wgpu` and `libtorch` (alias `tch`,
/// LibTorch on the CPU through burn-tch) need the cargo features of the same names.
pub fn device(backend: &str) -> Result<Device> {
    match backend {
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "libtorch")]
        "libtorch" | "tch" => {
            // burn 0.22 deprecates burn-tch in favour of CubeCL backends; it is kept here as an
            // optional CPU comparison point (docs/backends.md).
            #[allow(deprecated)]
            let device = Device::libtorch();
            Ok(device)
        }
        #[cfg(not(feature = "libtorch"))]
        "libtorch" | "tch" => bail!(
            "this build has no LibTorch support: rebuild with `--features libtorch` and LIBTORCH_USE_PYTORCH=1 (a Python with torch 2.9.0 on PATH, or LIBTORCH=/path/to/libtorch), e.g. `LIBTORCH_USE_PYTORCH=1 cargo build --release -p tweedie-cli --features libtorch`, and run with that torch's lib folder on LD_LIBRARY_PATH (see docs/backends.md)"
        ),
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            // Acquired and probed once per process (the runtime cannot be initialised twice).
            static WGPU: std::sync::OnceLock<std::result::Result<Device, String>> =
                std::sync::OnceLock::new();
            WGPU.get_or_init(|| wgpu_device().map_err(|e| e.to_string()))
                .clone()
                .map_err(|e| anyhow::anyhow!(e))
        }
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => bail!("this build has no wgpu support: rebuild with `--features wgpu`"),
        other => bail!("unknown backend {other:?}: expected cpu, wgpu or libtorch"),
    }
}

/// Acquires the wgpu adapter and checks it can run the UNet.
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device> {
    // Acquire the adapter fallibly (plain `Device::wgpu` panics when there is none).
    let (device, setup) = Device::wgpu_options().init_with_setup().map_err(|e| {
            anyhow::anyhow!(
                "no usable wgpu adapter ({e}). Install a GPU driver (on Linux without a GPU: apt-get install mesa-vulkan-drivers for Mesa's lavapipe), or use --backend cpu"
            )
        })?;
    let info = setup.adapter.get_info();
    if setup.backend == burn::tensor::wgpu::wgpu::Backend::Gl {
        bail!(
            "the only wgpu adapter is {:?} through OpenGL, which cannot run burn's matmul kernels (no subgroup support). Install a Vulkan driver (on Linux without a GPU: apt-get install mesa-vulkan-drivers), or use --backend cpu",
            info.name
        );
    }
    eprintln!("wgpu: {} ({:?})", info.name, setup.backend);
    // An adapter may still lack what some kernel needs: run a small UNet, quietly, and
    // turn any failure into an error.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| wgpu_probe(&device));
    std::panic::set_hook(hook);
    match probe {
        Ok(true) => Ok(device),
        Ok(false) => bail!(
            "the wgpu adapter's UNet output differs from the CPU backend's on a probe; use --backend cpu"
        ),
        Err(_) => bail!(
            "the wgpu adapter {:?} failed to run a small UNet; use --backend cpu",
            info.name
        ),
    }
}

/// Runs a small random-weight UNet (32×32, attention at 16 and 8) on `device` and on the
/// CPU backend and checks the outputs agree: this exercises the convolution, matmul and
/// attention kernels the samplers need, not just the adapter's existence.
#[cfg(feature = "wgpu")]
fn wgpu_probe(device: &Device) -> bool {
    let cfg = UNetConfig::small(32, 32, &[1.0, 2.0, 2.0], &[16, 8]);
    let run = |d: &Device| -> Option<Vec<f32>> {
        let net = UNet::init(&cfg, 0, d).ok()?;
        let x = tweedie_core::NoiseSource::new(0).normal([1, 3, 32, 32], d);
        Some(tweedie_core::tensor::to_vec(&net.forward(x, &[10.0])))
    };
    match (run(device), run(&Device::flex())) {
        (Some(a), Some(b)) => {
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-3)
        }
        _ => false,
    }
}

/// A loaded network with the content hashes of what it was loaded from, which every result
/// JSON records (`merge` refuses shards whose hashes differ).
pub struct Loaded {
    /// The network and its schedule.
    pub prior: Prior,
    /// SHA-256 of the weight bytes and of each config file's bytes.
    pub hashes: serde_json::Value,
}

impl std::ops::Deref for Loaded {
    type Target = Prior;
    fn deref(&self) -> &Prior {
        &self.prior
    }
}

impl tweedie_core::EpsModel for Loaded {
    fn predict_eps(
        &self,
        x_t: burn::tensor::Tensor<4>,
        level: tweedie_core::NoiseLevel,
    ) -> burn::tensor::Tensor<4> {
        self.prior.predict_eps(x_t, level)
    }
    fn predict_eps_and_variance(
        &self,
        x_t: burn::tensor::Tensor<4>,
        level: tweedie_core::NoiseLevel,
    ) -> (burn::tensor::Tensor<4>, Option<burn::tensor::Tensor<4>>) {
        self.prior.predict_eps_and_variance(x_t, level)
    }
    fn has_learned_variance(&self) -> bool {
        self.prior.has_learned_variance()
    }
}

impl Loaded {
    /// The network's description ([`Prior::describe`]) with the hashes of its files.
    pub fn describe(&self) -> serde_json::Value {
        let mut d = self.prior.describe();
        d["sha256"] = self.hashes.clone();
        d
    }
}

/// Hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hex SHA-256 of a file's bytes, read in chunks.
fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The hashes of the files `model` and `config` name, as [`load`] reads them.
fn hashes(model: &str, config: Option<&Path>) -> Result<serde_json::Value> {
    let path = Path::new(model);
    if model != "embedded" && path.is_dir() {
        let files = DiffusersFiles::find(path)?;
        return Ok(serde_json::json!({
            "weights": sha256_file(&files.weights[0])?,
            "config": sha256_file(&files.config)?,
            "scheduler": sha256_file(&files.scheduler)?,
        }));
    }
    let assets = std::env::var_os("TWEEDIE_ASSETS").map(PathBuf::from);
    let (weights, default_config) = match (model, &assets) {
        ("embedded", None) => (
            sha256_hex(EMBEDDED_WEIGHTS),
            sha256_hex(EMBEDDED_CONFIG.as_bytes()),
        ),
        ("embedded", Some(dir)) => {
            let w = dir.join("model.safetensors");
            (sha256_file(&w)?, sha256_file(&w.with_extension("json"))?)
        }
        (p, _) => {
            let p = Path::new(p);
            let default = p.with_extension("json");
            let cfg = if config.is_none() && default.is_file() {
                sha256_file(&default)?
            } else {
                String::new()
            };
            (sha256_file(p)?, cfg)
        }
    };
    let config = match config {
        Some(c) => sha256_file(c)?,
        None => default_config,
    };
    Ok(serde_json::json!({"weights": weights, "config": config}))
}

/// Loads `--model embedded|PATH|DIR` (see [`load_prior`]) with the hashes of its files.
pub fn load(model: &str, config: Option<&Path>, device: &Device) -> Result<Loaded> {
    let prior = load_prior(model, config, device)?;
    Ok(Loaded {
        prior,
        hashes: hashes(model, config)?,
    })
}

/// Loads `--model embedded|PATH|DIR`: the built-in ADM, a guided-diffusion checkpoint
/// (`--config JSON`, default `<PATH stem>.json`), or a diffusers model folder (flat or
/// pipeline layout; it carries its own config and scheduler).
pub fn load_prior(model: &str, config: Option<&Path>, device: &Device) -> Result<Prior> {
    let path = Path::new(model);
    if model != "embedded" && path.is_dir() {
        if !DiffusersFiles::is_diffusers_dir(path) {
            bail!(
                "{} is a folder but not a diffusers model (expected config.json + scheduler_config.json + diffusion_pytorch_model.safetensors/.bin, or model_index.json with unet/ and scheduler/)",
                path.display()
            );
        }
        if let Some(c) = config {
            bail!(
                "--config {} is for guided-diffusion checkpoints: the diffusers folder {} carries its own config.json",
                c.display(),
                path.display()
            );
        }
        let m = DiffusersModel::load_dir(path, device)
            .with_context(|| format!("loading the diffusers model {}", path.display()))?;
        return Ok(Prior::Diffusers(m));
    }
    load_adm(model, config, device).map(Prior::adm)
}

/// Loads `--model embedded|PATH` as a guided-diffusion ADM (with `--config JSON`, default
/// `<PATH stem>.json`).
///
/// `embedded` is the model built into the binary, or `$TWEEDIE_ASSETS/model.safetensors`
/// (with its `model.json`) when that variable is set.
pub fn load_adm(model: &str, config: Option<&Path>, device: &Device) -> Result<UNetEps> {
    if model != "embedded" && Path::new(model).is_dir() {
        bail!(
            "{model} is a folder: this command takes a guided-diffusion checkpoint (.pt/.safetensors with its JSON config)"
        );
    }
    let weights = if model == "embedded" {
        let Some(dir) = std::env::var_os("TWEEDIE_ASSETS").map(PathBuf::from) else {
            let cfg = match config {
                // The error names the file.
                Some(p) => UNetConfig::from_json_file(p)?,
                None => UNetConfig::from_json_str(EMBEDDED_CONFIG)
                    .context("the built-in model's config")?,
            };
            let mut w = WeightMap::load_safetensors_bytes(EMBEDDED_WEIGHTS, "the built-in model")?;
            let net = UNet::from_weights(&cfg, &mut w, device)?;
            return Ok(UNetEps { net });
        };
        let p = dir.join("model.safetensors");
        if !p.exists() {
            bail!(
                "the model is missing at {} (TWEEDIE_ASSETS is set; unset it to use the model built into the binary, or pass --model PATH)",
                p.display()
            );
        }
        p
    } else {
        PathBuf::from(model)
    };
    if !weights.exists() {
        bail!("model file {} does not exist", weights.display());
    }
    let cfg_path = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| weights.with_extension("json"));
    let cfg = UNetConfig::from_json_file(&cfg_path).with_context(|| {
        format!(
            "reading the model config (pass --config JSON if it is not at {})",
            cfg_path.display()
        )
    })?;
    let net = UNet::load(&cfg, &weights, device)?;
    Ok(UNetEps { net })
}
