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
            // wgpu panics when no adapter exists, and an adapter may lack features our kernels
            // need (e.g. a GL fallback without subgroups). Run one small convolution, matmul
            // and attention, quietly, and turn any failure into an error.
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let probe = std::panic::catch_unwind(|| wgpu_probe(&device));
            std::panic::set_hook(hook);
            match probe {
                Ok(true) => Ok(device),
                Ok(false) => bail!(
                    "the wgpu adapter gives wrong results on a probe computation; use --backend cpu"
                ),
                Err(_) => bail!(
                    "no usable wgpu adapter: none found, or it cannot run the UNet's kernels (a GL fallback lacks subgroups). Install a Vulkan driver (on Linux without a GPU: apt-get install mesa-vulkan-drivers), or use --backend cpu"
                ),
            }
        }
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => bail!("this build has no wgpu support: rebuild with `--features wgpu`"),
        other => bail!("unknown backend {other:?}: expected cpu or wgpu"),
    }
}

/// Runs a 3×3 convolution, a matmul and an attention on `device` and checks the sums
/// against their exact values (all-ones inputs).
#[cfg(feature = "wgpu")]
fn wgpu_probe(device: &Device) -> bool {
    use burn::tensor::{Tensor, module};
    let x = Tensor::<4>::ones([1, 4, 8, 8], device);
    let w = Tensor::<4>::ones([4, 4, 3, 3], device);
    let conv = module::conv2d(
        x,
        w,
        None,
        burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    );
    let m = Tensor::<2>::ones([64, 64], device).matmul(Tensor::<2>::ones([64, 64], device));
    let q = Tensor::<4>::ones([1, 2, 16, 8], device);
    let att = module::attention(q.clone(), q.clone(), q, None, None, Default::default());
    let sum = |v: Vec<f32>| v.iter().map(|&x| x as f64).sum::<f64>();
    let c = sum(tweedie_core::tensor::to_vec(&conv)); // 4·6·6 outputs of 36
    let mm = sum(tweedie_core::tensor::to_vec(&m)); // 64·64 outputs of 64
    let a = sum(tweedie_core::tensor::to_vec(&att)); // 2·16·8 outputs of 1
    (c - 4.0 * 36.0 * 36.0).abs() < 1e-2
        && (mm - 64.0f64.powi(3)).abs() < 1e-1
        && (a - 256.0).abs() < 1e-2
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
