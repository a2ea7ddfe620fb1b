//! `cargo xtask fetch-weights NAME`: models from the Hugging Face Hub (and the LPIPS-VGG
//! weights from their publishers) into the caches, verified, failing fast and clearly offline.
//!
//! | name | source | result |
//! |---|---|---|
//! | `ffhq` | Hub model repo `deepinv/diffunet`, file `diffusion_ffhq_10m.pt` (the DPS authors' `ffhq_10m.pt`) | the checkpoint, checked against `UNetConfig::ffhq256()`, with its config JSON beside it |
//! | `celebahq` | `google/ddpm-celebahq-256` (Apache-2.0) | the snapshot folder: `config.json`, `scheduler_config.json`, `diffusion_pytorch_model.safetensors` (or `.bin`) |
//! | `cifar10` | `google/ddpm-cifar10-32` (Apache-2.0) | as `celebahq` |
//! | `church` | `google/ddpm-ema-church-256` (Apache-2.0) | as `celebahq` |
//! | `lpips-vgg` | torchvision's VGG16 + the LPIPS v0.1 VGG linear layers (plain URLs) | `lpips_vgg16.safetensors` |
//!
//! Hub files go into the Hugging Face cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), so a cache that `huggingface_hub` or `hf download` filled is
//! used as it is; `HF_ENDPOINT` changes the server and `HF_HUB_OFFLINE=1` reads the cache only.
//! A copy put by hand into tweedie's own cache (`$TWEEDIE_CACHE`, else
//! `$XDG_CACHE_HOME/tweedie`, else `~/.cache/tweedie`) is taken first: `ffhq_10m.pt` there, or
//! a folder `celebahq/`, `cifar10/`, `church/` holding the three files. The protocol is in
//! [`hub`]; `docs/fetch.md` says what was verified about it.

pub mod hub;
#[cfg(test)]
mod loopback;
#[cfg(test)]
mod tests;

use anyhow::{Context, Result, bail};
use hub::{Hub, HubConfig, HubError};
use std::path::{Path, PathBuf};

/// Where the DPS README publishes `ffhq_10m.pt` (a Google Drive folder: not a direct link).
pub const FFHQ_SOURCE: &str =
    "https://drive.google.com/drive/folders/1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh";
/// torchvision VGG16 ImageNet weights.
pub const VGG16_URL: &str = "https://download.pytorch.org/models/vgg16-397923af.pth";
/// LPIPS v0.1 VGG linear layers.
pub const LPIPS_VGG_LIN_URL: &str = "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/vgg.pth";

/// The names `fetch-weights` takes.
pub const NAMES: &str = "ffhq, celebahq, cifar10, church or lpips-vgg";

/// The file name of a checkpoint put by hand (or fetched with `--url`) into tweedie's cache.
const FFHQ_MANUAL: &str = "ffhq_10m.pt";
/// The combined LPIPS-VGG weights in tweedie's cache.
const LPIPS_VGG: &str = "lpips_vgg16.safetensors";
/// A diffusers model's files, weights last (safetensors first, `.bin` where the Hub has none).
const DIFFUSERS_CONFIG: &str = "config.json";
const DIFFUSERS_SCHEDULER: &str = "scheduler_config.json";
const DIFFUSERS_SAFETENSORS: &str = "diffusion_pytorch_model.safetensors";
const DIFFUSERS_BIN: &str = "diffusion_pytorch_model.bin";

/// What a Hub model is, on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One guided-diffusion (ADM) checkpoint file.
    Adm {
        /// Its name in the repo.
        file: &'static str,
    },
    /// A diffusers `UNet2DModel` in the flat layout (config, scheduler config, weights).
    Diffusers,
}

/// A model on the Hub that `fetch-weights` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    /// The name given to `fetch-weights`.
    pub name: &'static str,
    /// The Hub model repo.
    pub repo: &'static str,
    /// Its layout.
    pub kind: Kind,
    /// What it is, its licence and where it comes from (the report's model line).
    pub about: &'static str,
}

/// The Hub models, by name.
pub const MODELS: [Model; 4] = [
    Model {
        name: "ffhq",
        repo: "deepinv/diffunet",
        kind: Kind::Adm {
            file: "diffusion_ffhq_10m.pt",
        },
        about: "the DPS FFHQ-256 checkpoint `ffhq_10m.pt` (guided-diffusion ADM, 93.6 M parameters; Chung et al., DPS), fetched from the Hugging Face Hub repo `deepinv/diffunet` (`diffusion_ffhq_10m.pt`). The DPS repository states no licence for it; it was trained on FFHQ, whose images are CC BY-NC-SA 4.0",
    },
    Model {
        name: "celebahq",
        repo: "google/ddpm-celebahq-256",
        kind: Kind::Diffusers,
        about: "`google/ddpm-celebahq-256` (diffusers DDPM, 113.7 M parameters; Ho et al. 2020), from the Hugging Face Hub, licence Apache-2.0; trained on CelebA-HQ 256×256 faces",
    },
    Model {
        name: "cifar10",
        repo: "google/ddpm-cifar10-32",
        kind: Kind::Diffusers,
        about: "`google/ddpm-cifar10-32` (diffusers DDPM, 35.7 M parameters; Ho et al. 2020), from the Hugging Face Hub, licence Apache-2.0; trained on CIFAR-10 32×32, so faces are outside its training distribution",
    },
    Model {
        name: "church",
        repo: "google/ddpm-ema-church-256",
        kind: Kind::Diffusers,
        about: "`google/ddpm-ema-church-256` (diffusers DDPM; Ho et al. 2020), from the Hugging Face Hub, licence Apache-2.0; trained on LSUN church 256×256, so faces are outside its training distribution",
    },
];

/// The Hub model called `name`.
pub fn model(name: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.name == name)
}

/// Everything the fetchers read from the environment, read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The Hub and its cache.
    pub hub: HubConfig,
    /// tweedie's own cache (files put by hand, `--url` downloads, LPIPS-VGG).
    pub tweedie_cache: PathBuf,
    /// `TWEEDIE_FFHQ_URL`: a direct link for `ffhq_10m.pt` used instead of the Hub.
    pub ffhq_url: Option<String>,
}

impl Settings {
    /// From the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From any lookup: `TWEEDIE_CACHE`, else `$XDG_CACHE_HOME/tweedie`, else
    /// `~/.cache/tweedie`; `TWEEDIE_FFHQ_URL`; the Hub's variables ([`HubConfig::from_lookup`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let tweedie_cache = get("TWEEDIE_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            get("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| get("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("tweedie")
        });
        Self {
            hub: HubConfig::from_lookup(get),
            tweedie_cache,
            ffhq_url: get("TWEEDIE_FFHQ_URL"),
        }
    }
}

/// tweedie's own cache: `$TWEEDIE_CACHE`, else `$XDG_CACHE_HOME/tweedie`, else `~/.cache/tweedie`.
pub fn cache_dir() -> PathBuf {
    Settings::from_env().tweedie_cache
}

/// Fetches `name` (see [`NAMES`]) and returns its local path: the checkpoint for `ffhq`, the
/// snapshot folder for a diffusers model, the combined file for `lpips-vgg`. `url` is the
/// escape hatch: a direct link for `ffhq_10m.pt`, or a folder URL holding the two LPIPS-VGG
/// inputs.
pub fn fetch(name: &str, url: Option<&str>) -> Result<PathBuf> {
    fetch_in(&Settings::from_env(), name, url)
}

/// [`fetch`] with explicit settings.
pub fn fetch_in(s: &Settings, name: &str, url: Option<&str>) -> Result<PathBuf> {
    if name == "lpips-vgg" {
        return fetch_lpips_vgg_in(s, url);
    }
    let Some(m) = model(name) else {
        bail!("unknown weights {name:?}: expected {NAMES}");
    };
    match m.kind {
        Kind::Adm { file } => {
            let url = url.map(String::from).or_else(|| s.ffhq_url.clone());
            fetch_ffhq_in(s, m, file, url.as_deref())
        }
        Kind::Diffusers => {
            if url.is_some() {
                bail!(
                    "--url is for ffhq and lpips-vgg; {name} comes from the Hub (set HF_ENDPOINT for a mirror)"
                );
            }
            fetch_diffusers_in(s, m)
        }
    }
}

/// The local path of a fetched model (as [`fetch`] returns it), found without any network:
/// `None` when it has not been fetched (nor put in place by hand).
pub fn local_model(name: &str) -> Option<PathBuf> {
    local_model_in(&Settings::from_env(), name)
}

/// [`local_model`] with explicit settings.
pub fn local_model_in(s: &Settings, name: &str) -> Option<PathBuf> {
    if name == "lpips-vgg" {
        let p = s.tweedie_cache.join(LPIPS_VGG);
        return p.exists().then_some(p);
    }
    let m = model(name)?;
    let manual = manual_path(s, m);
    let cache = &s.hub.cache;
    match m.kind {
        Kind::Adm { file } => manual
            .exists()
            .then_some(manual)
            .or_else(|| hub::cached_file(cache, m.repo, "main", file)),
        Kind::Diffusers => {
            if diffusers_complete(&manual) {
                return Some(manual);
            }
            let config = hub::cached_file(cache, m.repo, "main", DIFFUSERS_CONFIG)?;
            let dir = config.parent()?.to_path_buf();
            diffusers_complete(&dir).then_some(dir)
        }
    }
}

/// Where a copy put by hand goes: `{tweedie cache}/ffhq_10m.pt`, or the folder
/// `{tweedie cache}/{name}/` of a diffusers model.
pub fn manual_path(s: &Settings, m: &Model) -> PathBuf {
    match m.kind {
        Kind::Adm { .. } => s.tweedie_cache.join(FFHQ_MANUAL),
        Kind::Diffusers => s.tweedie_cache.join(m.name),
    }
}

fn diffusers_complete(dir: &Path) -> bool {
    [DIFFUSERS_CONFIG, DIFFUSERS_SCHEDULER]
        .iter()
        .all(|f| dir.join(f).exists())
        && (dir.join(DIFFUSERS_SAFETENSORS).exists() || dir.join(DIFFUSERS_BIN).exists())
}

/// How to install `m` by hand: the exact URLs and the exact place to put them.
fn manual_instructions(s: &Settings, m: &Model) -> String {
    let hub = Hub::new(s.hub.clone());
    let dest = manual_path(s, m);
    match m.kind {
        Kind::Adm { file } => format!(
            "To install it by hand, download\n  {}\n(the DPS authors' ffhq_10m.pt, also in their Google Drive folder {FFHQ_SOURCE})\nand put it at\n  {}\n(or pass --url DIRECT_LINK / set TWEEDIE_FFHQ_URL, or set HF_ENDPOINT to a Hub mirror).",
            hub.resolve_url(m.repo, "main", file),
            dest.display()
        ),
        Kind::Diffusers => {
            let url = |f: &str| hub.resolve_url(m.repo, "main", f);
            format!(
                "To install it by hand, download\n  {}\n  {}\n  {}  (or {})\ninto the folder\n  {}\n(or copy a Hugging Face cache holding {} into {}, or set HF_ENDPOINT to a Hub mirror).",
                url(DIFFUSERS_CONFIG),
                url(DIFFUSERS_SCHEDULER),
                url(DIFFUSERS_SAFETENSORS),
                DIFFUSERS_BIN,
                dest.display(),
                m.repo,
                s.hub.cache.display()
            )
        }
    }
}

/// A Hub error with the way to install the model by hand appended.
fn explain(err: HubError, s: &Settings, m: &Model) -> anyhow::Error {
    anyhow::anyhow!("{err}\n{}", manual_instructions(s, m))
}

/// The FFHQ-256 checkpoint: a copy in tweedie's cache, else `url` (into that cache), else the
/// Hub; then checked against `UNetConfig::ffhq256()` (all 362 keys and shapes) and its config
/// JSON written beside it.
fn fetch_ffhq_in(s: &Settings, m: &Model, file: &str, url: Option<&str>) -> Result<PathBuf> {
    let manual = manual_path(s, m);
    let hub = Hub::new(s.hub.clone());
    let path = if manual.exists() {
        manual
    } else if let Some(url) = url {
        hub.download_url(url, &manual, None)
            .map_err(|e| explain(e, s, m))?;
        // Nothing vouches for a direct link's bytes but the key check: a file that fails it
        // is not left where the next run would take it.
        if let Err(e) = verify_ffhq(&manual) {
            let _ = std::fs::remove_file(&manual);
            return Err(e.context(format!("the file downloaded from {url} was deleted again")));
        }
        manual
    } else {
        hub.get(m.repo, "main", file)
            .map_err(|e| explain(e, s, m))?
            .path
    };
    verify_ffhq(&path)?;
    write_ffhq_config_in(&path, &s.tweedie_cache)?;
    Ok(path)
}

/// A diffusers model's three files, all at the commit `main` names when the first is fetched
/// (so they share one snapshot folder); `.bin` weights where the Hub has no safetensors.
fn fetch_diffusers_in(s: &Settings, m: &Model) -> Result<PathBuf> {
    let manual = manual_path(s, m);
    if diffusers_complete(&manual) {
        return Ok(manual);
    }
    let hub = Hub::new(s.hub.clone());
    let err = |e| explain(e, s, m);
    let config = hub.get(m.repo, "main", DIFFUSERS_CONFIG).map_err(err)?;
    let commit = config.commit.as_str();
    hub.get(m.repo, commit, DIFFUSERS_SCHEDULER).map_err(err)?;
    let no_safetensors = hub::cached_no_exist(&s.hub.cache, m.repo, commit, DIFFUSERS_SAFETENSORS);
    let safetensors = if no_safetensors {
        None
    } else {
        match hub.get(m.repo, commit, DIFFUSERS_SAFETENSORS) {
            Ok(f) => Some(f),
            Err(HubError::NotFound { .. }) => {
                eprintln!(
                    "fetch: {} has no {DIFFUSERS_SAFETENSORS}; taking {DIFFUSERS_BIN}",
                    m.repo
                );
                None
            }
            Err(e) => return Err(err(e)),
        }
    };
    if safetensors.is_none() {
        hub.get(m.repo, commit, DIFFUSERS_BIN).map_err(err)?;
    }
    let dir = config
        .path
        .parent()
        .context("a snapshot file has no folder")?
        .to_path_buf();
    Ok(dir)
}

/// Writes the FFHQ-256 config JSON beside the checkpoint (same stem, `.json`: where `tweedie
/// --model` looks) and returns its path; into tweedie's cache where that folder is read-only.
pub fn write_ffhq_config(ckpt: &Path) -> Result<PathBuf> {
    write_ffhq_config_in(ckpt, &cache_dir())
}

/// [`write_ffhq_config`] with `fallback` for tweedie's cache.
fn write_ffhq_config_in(ckpt: &Path, fallback: &Path) -> Result<PathBuf> {
    let json = tweedie_unet::UNetConfig::ffhq256().to_json();
    let beside = ckpt.with_extension("json");
    // Never write through a link: in the Hub cache it would overwrite a blob.
    let is_link = beside
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink());
    if !is_link && std::fs::write(&beside, &json).is_ok() {
        return Ok(beside);
    }
    std::fs::create_dir_all(fallback)
        .with_context(|| format!("creating {}", fallback.display()))?;
    let path = fallback.join("ffhq_10m.json");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Checks a checkpoint has exactly the FFHQ-256 ADM's keys and shapes.
pub fn verify_ffhq(path: &Path) -> Result<()> {
    let device = burn::tensor::Device::flex();
    tweedie_unet::UNet::load(&tweedie_unet::UNetConfig::ffhq256(), path, &device)
        .with_context(|| format!("{} is not the FFHQ-256 ADM checkpoint", path.display()))?;
    Ok(())
}

/// Fetches torchvision VGG16 + the LPIPS v0.1 VGG linear layers (from their publishers, or
/// from the folder URL `url_dir`) and combines them into `lpips_vgg16.safetensors` (the
/// layout `tweedie_metrics::Lpips` reads).
fn fetch_lpips_vgg_in(s: &Settings, url_dir: Option<&str>) -> Result<PathBuf> {
    let cache = &s.tweedie_cache;
    let dest = cache.join(LPIPS_VGG);
    if dest.exists() {
        return Ok(dest);
    }
    let manual = format!(
        "To install them by hand, download\n  {VGG16_URL}\n  {LPIPS_VGG_LIN_URL}\nto\n  {}\n  {}\nand run this again (or place a combined {LPIPS_VGG} — features.N.* + lin0..4.weight — at {}).",
        cache.join("vgg16-397923af.pth").display(),
        cache.join("lpips_v0.1_vgg.pth").display(),
        dest.display()
    );
    let (vgg_url, lin_url) = match url_dir {
        Some(d) => {
            let d = d.trim_end_matches('/');
            (format!("{d}/vgg16-397923af.pth"), format!("{d}/vgg.pth"))
        }
        None => (VGG16_URL.to_string(), LPIPS_VGG_LIN_URL.to_string()),
    };
    let hub = Hub::new(s.hub.clone());
    let vgg = cache.join("vgg16-397923af.pth");
    let lin = cache.join("lpips_v0.1_vgg.pth");
    // torchvision names its files by their SHA-256's first 8 hex digits.
    for (url, path, sha) in [(&vgg_url, &vgg, Some("397923af")), (&lin_url, &lin, None)] {
        if !path.exists() {
            hub.download_url(url, path, sha)
                .map_err(|e| anyhow::anyhow!("{e}\n{manual}"))?;
        }
    }
    combine_lpips_vgg(&vgg, &lin, &dest)?;
    Ok(dest)
}

/// Combines the backbone (`features.*`) and LPIPS linear layers (`linN.model.1.weight`).
pub fn combine_lpips_vgg(vgg: &Path, lin: &Path, dest: &Path) -> Result<()> {
    use tweedie_unet::WeightMap;
    let mut out = std::collections::BTreeMap::new();
    let mut v = WeightMap::load(vgg)?;
    let keys: Vec<(String, Vec<usize>)> = v
        .shapes()
        .filter(|(k, _)| k.starts_with("features."))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    for (k, s) in keys {
        let vals = v
            .take(&k, &s)
            .with_context(|| format!("{}: cannot read {k}", vgg.display()))?;
        out.insert(k, (s, vals));
    }
    let mut l = WeightMap::load(lin)?;
    for i in 0..5 {
        let (k, s) = l
            .shapes()
            .find(|(k, _)| {
                k.as_str() == format!("lin{i}.model.1.weight")
                    || k.as_str() == format!("lin{i}.weight")
            })
            .map(|(k, s)| (k.clone(), s.clone()))
            .with_context(|| format!("{}: no lin{i} weight", lin.display()))?;
        let vals = l
            .take(&k, &s)
            .with_context(|| format!("{}: cannot read {k}", lin.display()))?;
        out.insert(format!("lin{i}.weight"), (s, vals));
    }
    if out.len() != 26 + 5 {
        bail!(
            "expected 26 VGG16 feature tensors and 5 linear layers, found {}",
            out.len()
        );
    }
    WeightMap::save_safetensors(&out, dest)?;
    Ok(())
}
