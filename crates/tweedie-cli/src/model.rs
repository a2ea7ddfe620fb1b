//! Choosing the backend and the model.

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use std::path::{Path, PathBuf};
use tweedie_unet::{UNet, UNetConfig, UNetEps};

/// Where the embedded default model lives: `$TWEEDIE_ASSETS` or the repository's `assets/`.
pub fn assets_dir() -> PathBuf {
    std::env::var_os("TWEEDIE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets"))
}

/// The compute device for `--backend cpu|wgpu`.
pub fn device(backend: &str) -> Result<Device> {
    match backend {
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
            // wgpu panics when no adapter exists: probe once, quietly, and turn it into an error.
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let probe = std::panic::catch_unwind(|| {
                let t = burn::tensor::Tensor::<1>::ones([4], &device);
                tweedie_core::tensor::to_vec(&t.add_scalar(1.0))
            });
            std::panic::set_hook(hook);
            match probe {
                Ok(v) if v == vec![2.0; 4] => Ok(device),
                _ => bail!(
                    "no usable wgpu adapter (GPU driver missing?); on Linux without a GPU install Mesa's lavapipe: apt-get install mesa-vulkan-drivers"
                ),
            }
        }
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => bail!("this build has no wgpu support: rebuild with `--features wgpu`"),
        other => bail!("unknown backend {other:?}: expected cpu or wgpu"),
    }
}

/// Loads `--model embedded|PATH` (with `--config JSON`, default `<PATH stem>.json`).
pub fn load(model: &str, config: Option<&Path>, device: &Device) -> Result<UNetEps> {
    let weights = if model == "embedded" {
        let p = assets_dir().join("model.safetensors");
        if !p.exists() {
            bail!(
                "the embedded model is missing at {} (train it with `tweedie train`, or pass --model PATH)",
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
