//! Parity of the port with diffusers on a reference folder: the model's files plus
//! `io.safetensors` (`x`, integer `t`, `out` = `unet(x, t).sample`, and the scheduler's
//! `alphas_cumprod` for diffusers' t = 0…T−1).

use super::{DiffusersError, DiffusersFiles, DiffusersModel};
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// The errors of one weight file against the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ParityReport {
    /// The weight file.
    pub weights: PathBuf,
    /// max |out − out_ref| over every value.
    pub out_error: f32,
    /// Number of output values compared.
    pub values: usize,
    /// max_t |ᾱ_t − ᾱ_t,ref|.
    pub alpha_bar_error: f64,
}

/// A reference tensor: shape and values as f32.
fn tensor(
    st: &safetensors::SafeTensors,
    name: &str,
    path: &Path,
) -> Result<(Vec<usize>, Vec<f32>), DiffusersError> {
    Ok(crate::weights::reference_tensor(st, name, path)?)
}

/// Runs every weight file of the diffusers folder `dir` on the reference input of
/// `dir/io.safetensors` and compares output and ᾱ.
pub fn check_parity(dir: &Path, device: &Device) -> Result<Vec<ParityReport>, DiffusersError> {
    let io_path = dir.join("io.safetensors");
    let bytes = std::fs::read(&io_path)
        .map_err(|e| DiffusersError::Layout(format!("{}: cannot read ({e})", io_path.display())))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        DiffusersError::Layout(format!(
            "{}: not a safetensors file ({e})",
            io_path.display()
        ))
    })?;
    let (xs, x) = tensor(&st, "x", &io_path)?;
    let (_, t) = tensor(&st, "t", &io_path)?;
    let (_, want) = tensor(&st, "out", &io_path)?;
    let (_, alpha_bar) = tensor(&st, "alphas_cumprod", &io_path)?;
    let [b, c, h, w] = xs[..] else {
        return Err(DiffusersError::Layout(format!(
            "{}: x must be 4-D, got {xs:?}",
            io_path.display()
        )));
    };
    let files = DiffusersFiles::find(dir)?;
    let mut reports = Vec::new();
    for weights in &files.weights {
        let model = DiffusersModel::load_files(&files, weights, device)?;
        let input = tweedie_core::tensor::from_vec(x.clone(), [b, c, h, w], device);
        let got = tweedie_core::tensor::to_vec(&model.net.forward(input, &t));
        if got.len() != want.len() {
            return Err(DiffusersError::Layout(format!(
                "{}: the network gives {} values, the reference out has {}",
                weights.display(),
                got.len(),
                want.len()
            )));
        }
        let out_error = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let ours = &model.schedule.alpha_bar[1..];
        if ours.len() != alpha_bar.len() {
            return Err(DiffusersError::Layout(format!(
                "{}: {} reference ᾱ for a schedule of T = {}",
                io_path.display(),
                alpha_bar.len(),
                ours.len()
            )));
        }
        let alpha_bar_error = ours
            .iter()
            .zip(&alpha_bar)
            .map(|(a, b)| (a - *b as f64).abs())
            .fold(0.0, f64::max);
        reports.push(ParityReport {
            weights: weights.clone(),
            out_error,
            values: got.len(),
            alpha_bar_error,
        });
    }
    Ok(reports)
}
