//! Reading and writing checkpoints: a flat map from guided-diffusion key names to tensors,
//! with strict bookkeeping of missing, unexpected and mis-shaped keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A boxed underlying error, kept as the `source()` of a [`WeightError`].
pub type BoxedSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors loading or saving weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// The file is not usable (unknown format, unsupported dtype): what is wrong with it.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file could not be read, parsed or written, because of `source` (I/O,
    /// safetensors, PyTorch pickle).
    #[error("{path}: {context}")]
    Io {
        /// The file.
        path: String,
        /// What failed ("cannot read", "not a valid safetensors file", …).
        context: String,
        /// The underlying error.
        #[source]
        source: BoxedSource,
    },
    /// The checkpoint does not fit the model config.
    #[error("checkpoint {source_name} does not match the model config:\n{listing}")]
    Mismatch {
        /// Where the weights came from.
        source_name: String,
        /// Human-readable listing of the problems.
        listing: String,
    },
}

impl WeightError {
    /// A [`WeightError::Io`]: `context` failed on `path` because of `source`.
    pub fn io(
        path: impl AsRef<Path>,
        context: impl Into<String>,
        source: impl Into<BoxedSource>,
    ) -> Self {
        WeightError::Io {
            path: path.as_ref().display().to_string(),
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Tensor `name` of a reference file (`io.safetensors` of a parity fixture) as its shape and
/// `f32` values; F32, I64 and I32 (integer timesteps) are read, `path` names the file in errors.
pub fn reference_tensor(
    st: &safetensors::SafeTensors,
    name: &str,
    path: &Path,
) -> Result<(Vec<usize>, Vec<f32>), WeightError> {
    let file = |reason: String| WeightError::File {
        path: path.display().to_string(),
        reason,
    };
    let v = st
        .tensor(name)
        .map_err(|_| file(format!("no tensor {name:?}")))?;
    let d = v.data();
    let values = match v.dtype() {
        safetensors::Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        safetensors::Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        safetensors::Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        other => {
            return Err(file(format!(
                "tensor {name:?} is {other:?}, expected F32, I64 or I32"
            )));
        }
    };
    Ok((v.shape().to_vec(), values))
}

/// A flat checkpoint: key → (shape, f32 values), plus bookkeeping of what the model used.
#[derive(Debug, Default, Clone)]
pub struct WeightMap {
    source: String,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    used: BTreeSet<String>,
    missing: Vec<(String, Vec<usize>)>,
    mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

fn to_f32(bytes: &[u8], dtype: &str) -> Result<Vec<f32>, String> {
    Ok(match dtype {
        "f32" => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "f64" => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        "f16" => bytes
            .chunks_exact(2)
            .map(|c| burn::tensor::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        "bf16" => bytes
            .chunks_exact(2)
            .map(|c| burn::tensor::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(format!("unsupported dtype {other}")),
    })
}

/// Top-level names under which checkpoints nest their state dict (`{'state_dict': …}`,
/// `{'model': …, 'optimizer': …}`, `{'ema': …}`) or which wrap every key (`module.`, from
/// `nn.DataParallel`), in the order they are preferred when a file has several. ADM has no
/// module of these names, so a key starting with one of them never belongs to the network
/// itself.
const CONTAINER_KEYS: [&str; 5] = ["state_dict", "model_state_dict", "model", "ema", "module"];

/// Where the state dict sits among `keys`: while some key starts with the prefix so far plus
/// `C.` for a `C` of [`CONTAINER_KEYS`] (the first such `C` in that order), `C.` is appended.
/// Empty for a bare state dict. Only the keys under the prefix are loaded, without it (an
/// optimizer state beside the weights is never read).
fn container_prefix(keys: &[&str]) -> String {
    let mut prefix = String::new();
    while let Some(c) = CONTAINER_KEYS.iter().find(|c| {
        keys.iter().any(|k| {
            k.strip_prefix(prefix.as_str())
                .and_then(|k| k.strip_prefix(**c))
                .is_some_and(|k| k.starts_with('.'))
        })
    }) {
        prefix.push_str(c);
        prefix.push('.');
    }
    prefix
}

/// The source name of weights read from `path` under `prefix`.
fn source_name(path: &Path, prefix: &str) -> String {
    if prefix.is_empty() {
        path.display().to_string()
    } else {
        format!("{} (the weights under `{prefix}`)", path.display())
    }
}

impl WeightMap {
    /// An in-memory map (e.g. from a model being saved, or for tests).
    pub fn from_tensors(
        source: impl Into<String>,
        tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> Self {
        Self {
            source: source.into(),
            tensors,
            ..Default::default()
        }
    }

    /// Reads a `.pt`/`.pth` (PyTorch state dict) or `.safetensors` file, by extension.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("safetensors") => Self::load_safetensors(path),
            Some("pt" | "pth" | "bin" | "ckpt") => Self::load_pytorch(path),
            _ => Err(WeightError::File {
                path: path.display().to_string(),
                reason: "unknown checkpoint format: expected .pt, .pth or .safetensors".into(),
            }),
        }
    }

    /// Reads a safetensors file. Keys under a wrapper (`state_dict.`, `model_state_dict.`,
    /// `model.`, `ema.`, `module.`) are taken out of it, as for `.pt`.
    pub fn load_safetensors(path: &Path) -> Result<Self, WeightError> {
        let bytes = std::fs::read(path).map_err(|e| WeightError::io(path, "cannot read", e))?;
        Self::load_safetensors_bytes(&bytes, &path.display().to_string())
    }

    /// Reads safetensors bytes already in memory (e.g. weights embedded in a binary with
    /// `include_bytes!`), as [`WeightMap::load_safetensors`] reads a file; `source` names
    /// them in errors.
    pub fn load_safetensors_bytes(bytes: &[u8], source: &str) -> Result<Self, WeightError> {
        let path = Path::new(source);
        let err = |reason: String| WeightError::File {
            path: source.to_string(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| WeightError::io(path, "not a valid safetensors file", e))?;
        let prefix = container_prefix(&st.names());
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let Some(key) = name.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => "f32",
                safetensors::Dtype::F64 => "f64",
                safetensors::Dtype::F16 => "f16",
                safetensors::Dtype::BF16 => "bf16",
                other => {
                    // Integer tensors (e.g. step counters) are not weights: keep them out.
                    let _ = other;
                    continue;
                }
            };
            let values = to_f32(view.data(), dtype).map_err(|e| err(format!("{name}: {e}")))?;
            tensors.insert(key.to_string(), (view.shape().to_vec(), values));
        }
        Ok(Self::from_tensors(source_name(path, &prefix), tensors))
    }

    /// Reads a PyTorch checkpoint: a state dict, or one nested under `state_dict`,
    /// `model_state_dict`, `model` or `ema` (preferred in that order; other entries such as
    /// an optimizer state are ignored), with or without `nn.DataParallel`'s `module.` prefix.
    pub fn load_pytorch(path: &Path) -> Result<Self, WeightError> {
        use pytorch_reader::{DType, PytorchReader};
        let err = |reason: String| WeightError::File {
            path: path.display().to_string(),
            reason,
        };
        // The reader flattens nested dicts to dotted keys (`{'state_dict': {'a.weight': …}}`
        // gives `state_dict.a.weight`); `container_prefix` finds the state dict among them.
        let reader = PytorchReader::new(path)
            .map_err(|e| WeightError::io(path, "not a readable PyTorch checkpoint", e))?;
        let prefix = container_prefix(
            &reader
                .tensors()
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let mut tensors = BTreeMap::new();
        for (name, t) in reader.tensors() {
            let Some(key) = name.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let dtype = match t.dtype() {
                DType::F32 => "f32",
                DType::F64 => "f64",
                DType::F16 => "f16",
                DType::BF16 => "bf16",
                _ => continue,
            };
            let bytes = t
                .read()
                .map_err(|e| WeightError::io(path, format!("cannot read tensor {name}"), e))?;
            let values = to_f32(&bytes, dtype).map_err(|e| err(format!("{name}: {e}")))?;
            tensors.insert(key.to_string(), (t.shape().to_vec(), values));
        }
        Ok(Self::from_tensors(source_name(path, &prefix), tensors))
    }

    /// Writes tensors as an f32 safetensors file (atomically: temp file + rename).
    pub fn save_safetensors(
        tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        path: &Path,
    ) -> Result<(), WeightError> {
        let bytes: BTreeMap<&String, Vec<u8>> = tensors
            .iter()
            .map(|(k, (_, v))| (k, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(k, (shape, _))| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    &bytes[k],
                )
                .expect("consistent view");
                (k.clone(), view)
            })
            .collect();
        let data = safetensors::serialize(views, None)
            .map_err(|e| WeightError::io(path, "cannot serialise", e))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| WeightError::io(path, "cannot create its folder", e))?;
        }
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| WeightError::io(path, "cannot write", e))
    }

    /// Renames every key for which `rename` returns a new name (before any is taken).
    pub fn rename_keys(&mut self, rename: impl Fn(&str) -> Option<String>) {
        let old = std::mem::take(&mut self.tensors);
        self.tensors = old
            .into_iter()
            .map(|(k, v)| (rename(&k).unwrap_or(k), v))
            .collect();
    }

    /// Where these weights came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// All keys with their shapes.
    pub fn shapes(&self) -> impl Iterator<Item = (&String, &Vec<usize>)> {
        self.tensors.iter().map(|(k, (s, _))| (k, s))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Takes `key` expecting `shape` (a leading-1-free reshape such as [o, i, 1] ↔ [o, i] is
    /// accepted when `loose` lists it). Records a problem and returns `None` on mismatch.
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Option<Vec<f32>> {
        match self.tensors.get(key) {
            None => {
                self.missing.push((key.to_string(), shape.to_vec()));
                None
            }
            Some((s, v)) => {
                self.used.insert(key.to_string());
                if s.as_slice() != shape {
                    self.mismatched
                        .push((key.to_string(), s.clone(), shape.to_vec()));
                    None
                } else {
                    Some(v.clone())
                }
            }
        }
    }

    /// Fails, listing at most 10 problems of each kind (then a count), when any key was
    /// missing, mis-shaped or left unused.
    pub fn finish(&self) -> Result<(), WeightError> {
        let unexpected: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k))
            .collect();
        if self.missing.is_empty() && self.mismatched.is_empty() && unexpected.is_empty() {
            return Ok(());
        }
        let mut listing = String::new();
        let mut section = |title: &str, lines: Vec<String>| {
            if lines.is_empty() {
                return;
            }
            listing.push_str(&format!("  {} {title}:\n", lines.len()));
            for l in lines.iter().take(10) {
                listing.push_str(&format!("    {l}\n"));
            }
            if lines.len() > 10 {
                listing.push_str(&format!("    … and {} more\n", lines.len() - 10));
            }
        };
        section(
            "missing keys",
            self.missing
                .iter()
                .map(|(k, s)| format!("{k} {s:?}"))
                .collect(),
        );
        section(
            "mis-shaped keys",
            self.mismatched
                .iter()
                .map(|(k, got, want)| format!("{k}: checkpoint {got:?}, model {want:?}"))
                .collect(),
        );
        section(
            "unexpected keys",
            unexpected
                .iter()
                .map(|k| format!("{k} {:?}", self.tensors[*k].0))
                .collect(),
        );
        Err(WeightError::Mismatch {
            source_name: self.source.clone(),
            listing: listing.trim_end().to_string(),
        })
    }
}
