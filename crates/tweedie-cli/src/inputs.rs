//! Input images: folders expanded, output names, unreadable files reported and skipped.

use crate::output::error_text;
use anyhow::{Context, Result, bail};
use burn::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tweedie_io::Image;

/// Expands files and folders into a sorted list of image files.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            files.extend(tweedie_io::list_images(p)?);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("input {} does not exist", p.display());
        }
    }
    if files.is_empty() {
        bail!("no PNG/JPEG images found in the inputs");
    }
    Ok(files)
}

/// An input image and the name its outputs are given.
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// Its path relative to the folder it was found in, without the extension and
    /// `/`-separated (`s1/face` for `DIR/s1/face.jpg`), or the file stem of a file given by
    /// name: outputs are `OUT/<name>_….png`, so images of the same name in different
    /// subfolders do not overwrite each other.
    pub name: String,
}

/// `rel` without its extension, components joined by `/`.
fn output_name(rel: &Path) -> String {
    rel.with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// [`collect_inputs`] with each image's output name ([`Input::name`]). Fails, listing them,
/// when two images would get the same name (`a/face.png` and `b/face.png` given by name, or
/// `face.jpg` beside `face.png`): their outputs would overwrite each other.
pub fn named_inputs(inputs: &[PathBuf]) -> Result<Vec<Input>> {
    let mut out: Vec<Input> = Vec::new();
    for p in inputs {
        if p.is_dir() {
            for f in tweedie_io::list_images(p)? {
                let name = output_name(f.strip_prefix(p).unwrap_or(&f));
                out.push(Input { path: f, name });
            }
        } else if p.exists() {
            out.push(Input {
                path: p.clone(),
                name: stem(p),
            });
        } else {
            bail!("input {} does not exist", p.display());
        }
    }
    if out.is_empty() {
        bail!("no PNG/JPEG images found in the inputs");
    }
    // The same file given twice is processed once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|i| seen.insert(i.path.clone()));
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in &out {
        by_name
            .entry(&i.name)
            .or_default()
            .push(i.path.display().to_string());
    }
    let clashes: Vec<String> = by_name
        .iter()
        .filter(|(_, paths)| paths.len() > 1)
        .map(|(name, paths)| format!("{name} ← {}", paths.join(", ")))
        .collect();
    if !clashes.is_empty() {
        bail!(
            "{} output name(s) would be shared, and the outputs overwrite each other: {}. Outputs are named by the path relative to the input folder without the extension (the file stem of an image given by name): rename or move these images, or process them in separate runs",
            clashes.len(),
            clashes.join("; ")
        );
    }
    Ok(out)
}

/// An image that could not be read: its path and why.
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// The error.
    pub why: String,
}

/// Decodes each of `items` (index among all inputs, input) once with `load` before any work:
/// an unreadable one is skipped with a warning, or is an error when `strict`. Fails when
/// images were given but none can be read. Returns the readable ones and the skipped ones.
#[allow(clippy::type_complexity)] // (index, input) pairs in, the readable ones and the skipped out
pub fn readable(
    items: Vec<(usize, &Input)>,
    strict: bool,
    load: impl Fn(&Path) -> Result<Image>,
) -> Result<(Vec<(usize, &Input)>, Vec<Skipped>)> {
    let total = items.len();
    let (mut good, mut skipped) = (Vec::new(), Vec::new());
    for (index, input) in items {
        match load(&input.path) {
            Ok(_) => good.push((index, input)),
            Err(e) => {
                let why = error_text(&e);
                if strict {
                    bail!("{why} (--strict: an unreadable image is an error)");
                }
                eprintln!("warning: skipping an unreadable image: {why}");
                skipped.push(Skipped {
                    path: input.path.clone(),
                    why,
                });
            }
        }
    }
    if good.is_empty() && !skipped.is_empty() {
        bail!(
            "none of the {total} images could be read (the first: {})",
            skipped[0].why
        );
    }
    Ok((good, skipped))
}

/// `first, second, … (and N more)`: at most ten of `names`.
pub fn first_ten(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        text.push_str(&format!(" (and {} more)", names.len() - 10));
    }
    text
}

/// The closing warning on skipped images: "N of M images skipped", naming them.
pub fn warn_skipped(skipped: &[Skipped], total: usize) {
    if skipped.is_empty() {
        return;
    }
    let names: Vec<String> = skipped
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    eprintln!(
        "warning: {} of {total} images skipped (unreadable): {}",
        skipped.len(),
        first_ten(&names)
    );
}

/// Loads an image, centre-crops it (to `crop`, or the largest square) and resizes it.
pub fn load_cropped(path: &Path, crop: Option<usize>, size: usize) -> Result<Image> {
    let opts = tweedie_train::DatasetOptions { size, crop };
    tweedie_train::prepare_checked(&tweedie_io::load_image(path)?, &opts)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

pub fn one(x: &Tensor<4>) -> Image {
    tweedie_io::from_tensor(x)
        .expect("3-channel tensor")
        .remove(0)
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    tweedie_io::write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
