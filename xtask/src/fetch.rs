//! Downloading weights into the cache, verified; failing fast and clearly offline.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `$TWEEDIE_CACHE`, else `$XDG_CACHE_HOME/tweedie`, else `~/.cache/tweedie`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TWEEDIE_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("tweedie")
}

/// Where the DPS README publishes `ffhq_10m.pt` (a Google Drive folder: not a direct link).
pub const FFHQ_SOURCE: &str =
    "https://drive.google.com/drive/folders/1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh";
/// torchvision VGG16 ImageNet weights.
pub const VGG16_URL: &str = "https://download.pytorch.org/models/vgg16-397923af.pth";
/// LPIPS v0.1 VGG linear layers.
pub const LPIPS_VGG_LIN_URL: &str = "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/vgg.pth";

/// Downloads `url` to `dest` (via a temporary file), checking the SHA-256 prefix when given.
/// Fails within ~15 s without a network, naming `manual` as the way out.
pub fn download(url: &str, dest: &Path, sha256_prefix: Option<&str>, manual: &str) -> Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = dest.with_extension("part");
    let status = Command::new("curl")
        .args([
            "--fail",
            "--location",
            "--silent",
            "--show-error",
            "--connect-timeout",
            "10",
            "--output",
        ])
        .arg(&tmp)
        .arg(url)
        .status();
    let ok = matches!(status, Ok(s) if s.success());
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        bail!("could not download {url} (offline, or the file moved).\n{manual}");
    }
    if let Some(prefix) = sha256_prefix {
        let digest = sha256_hex(&tmp)?;
        if !digest.starts_with(prefix) {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "{url}: SHA-256 {digest} does not start with the expected {prefix}; the download is corrupt"
            );
        }
    }
    std::fs::rename(&tmp, dest).with_context(|| format!("moving into {}", dest.display()))
}

/// Hex SHA-256 of a file.
pub fn sha256_hex(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the FFHQ-256 config JSON beside the checkpoint and returns its path.
pub fn write_ffhq_config() -> Result<PathBuf> {
    let p = cache_dir().join("ffhq_10m.json");
    std::fs::create_dir_all(cache_dir())?;
    std::fs::write(&p, tweedie_unet::UNetConfig::ffhq256().to_json())?;
    Ok(p)
}

/// Fetches `ffhq_10m.pt` (from `url` or `$TWEEDIE_FFHQ_URL`) and verifies it loads into the
/// FFHQ-256 UNet config (all 362 keys with the right shapes).
pub fn fetch_ffhq(url: Option<&str>) -> Result<PathBuf> {
    let dest = cache_dir().join("ffhq_10m.pt");
    let manual = format!(
        "Download ffhq_10m.pt by hand from the DPS authors' Google Drive folder\n  {FFHQ_SOURCE}\nand put it at\n  {}\n(or pass --url DIRECT_LINK / set TWEEDIE_FFHQ_URL).",
        dest.display()
    );
    if !dest.exists() {
        let url = url
            .map(String::from)
            .or_else(|| std::env::var("TWEEDIE_FFHQ_URL").ok());
        let Some(url) = url else {
            bail!("no direct download link is known for ffhq_10m.pt.\n{manual}");
        };
        download(&url, &dest, None, &manual)?;
    }
    verify_ffhq(&dest)?;
    write_ffhq_config()?;
    Ok(dest)
}

/// Checks a checkpoint has exactly the FFHQ-256 ADM's keys and shapes.
pub fn verify_ffhq(path: &Path) -> Result<()> {
    let device = burn::tensor::Device::flex();
    tweedie_unet::UNet::load(&tweedie_unet::UNetConfig::ffhq256(), path, &device)
        .with_context(|| format!("{} is not the FFHQ-256 ADM checkpoint", path.display()))?;
    Ok(())
}

/// Fetches torchvision VGG16 + the LPIPS v0.1 VGG linear layers and combines them into
/// `lpips_vgg16.safetensors` (the layout `tweedie_metrics::Lpips` reads).
pub fn fetch_lpips_vgg(url_dir: Option<&str>) -> Result<PathBuf> {
    let dest = cache_dir().join("lpips_vgg16.safetensors");
    if dest.exists() {
        return Ok(dest);
    }
    let manual = format!(
        "Alternatively place a combined lpips_vgg16.safetensors (features.N.* + lin0..4.weight) at {}",
        dest.display()
    );
    let (vgg_url, lin_url) = match url_dir {
        Some(d) => (format!("{d}/vgg16-397923af.pth"), format!("{d}/vgg.pth")),
        None => (VGG16_URL.to_string(), LPIPS_VGG_LIN_URL.to_string()),
    };
    let vgg = cache_dir().join("vgg16-397923af.pth");
    let lin = cache_dir().join("lpips_v0.1_vgg.pth");
    if !vgg.exists() {
        download(&vgg_url, &vgg, Some("397923af"), &manual)?;
    }
    if !lin.exists() {
        download(&lin_url, &lin, None, &manual)?;
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
        let vals = v.take(&k, &s).expect("present");
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
        let vals = l.take(&k, &s).expect("present");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tweedie-xtask-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    #[test]
    fn offline_download_fails_fast_with_manual_instructions() {
        let started = std::time::Instant::now();
        // Port 9 (discard) on loopback: connection refused at once, as offline.
        let err = download(
            "http://127.0.0.1:9/ffhq_10m.pt",
            &tmp("x.pt"),
            None,
            "put it at /somewhere",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("could not download") && err.contains("put it at /somewhere"),
            "{err}"
        );
        assert!(started.elapsed().as_secs() < 20);
        assert!(!tmp("x.part").exists());
    }

    #[test]
    fn ffhq_without_link_explains_where_to_put_the_file() {
        // SAFETY: tests in this module do not read these variables concurrently.
        unsafe {
            std::env::set_var("TWEEDIE_CACHE", tmp("cache"));
            std::env::remove_var("TWEEDIE_FFHQ_URL");
        }
        let err = fetch_ffhq(None).unwrap_err().to_string();
        assert!(
            err.contains("drive.google.com") && err.contains("ffhq_10m.pt"),
            "{err}"
        );
    }

    #[test]
    fn local_file_download_is_verified_by_hash() {
        let src = tmp("weights.bin");
        std::fs::write(&src, b"hello weights").unwrap();
        let digest = sha256_hex(&src).unwrap();
        let url = format!("file://{}", src.display());
        let dest = tmp("copy.bin");
        download(&url, &dest, Some(&digest[..8]), "").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello weights");
        let err = download(&url, &tmp("bad.bin"), Some("00000000"), "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("corrupt"), "{err}");
        assert!(!tmp("bad.bin").exists());
    }

    #[test]
    fn a_wrong_checkpoint_is_rejected_by_the_ffhq_check() {
        let fixture = root_fixture("model.safetensors");
        let err = format!("{:#}", verify_ffhq(&fixture).unwrap_err());
        assert!(
            err.contains("not the FFHQ-256") && err.contains("missing keys"),
            "{err}"
        );
    }

    fn root_fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/adm")
            .join(name)
    }
}
