//! The ADM configuration, in guided-diffusion's `create_model` argument names.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Errors reading or validating a UNet config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The values are inconsistent or unsupported.
    #[error("invalid UNet config: {0}")]
    Invalid(String),
}

/// A list given either as guided-diffusion's comma-separated string (`"16,8"`) or an array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum ListArg {
    Text(String),
    Numbers(Vec<f64>),
}

impl ListArg {
    fn values(&self) -> Result<Vec<f64>, ConfigError> {
        match self {
            ListArg::Numbers(v) => Ok(v.clone()),
            ListArg::Text(s) if s.trim().is_empty() => Ok(Vec::new()),
            ListArg::Text(s) => s
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<f64>()
                        .map_err(|_| ConfigError::Invalid(format!("cannot parse list {s:?}")))
                })
                .collect(),
        }
    }
}

/// guided-diffusion's `create_model` arguments (defaults as in its `script_util.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// Image side in pixels.
    pub image_size: usize,
    /// Base channel count.
    pub num_channels: usize,
    /// Residual blocks per resolution.
    pub num_res_blocks: usize,
    /// Channel multipliers per level; empty → the default for `image_size`.
    channel_mult: ListArg,
    /// Resolutions (in pixels) that get self-attention.
    attention_resolutions: ListArg,
    /// Attention heads (used when `num_head_channels` = −1).
    pub num_heads: i64,
    /// Channels per head (−1: use `num_heads`).
    pub num_head_channels: i64,
    /// Heads in the decoder (−1: same as `num_heads`).
    pub num_heads_upsample: i64,
    /// FiLM-style scale/shift conditioning on the timestep.
    pub use_scale_shift_norm: bool,
    /// Residual blocks for up/down-sampling instead of plain convs.
    pub resblock_updown: bool,
    /// Output 6 channels: ε and the variance interpolation v.
    pub learn_sigma: bool,
    /// Dropout (inference ignores it; training applies it).
    pub dropout: f64,
    /// QKV split order of attention (`false` = legacy layout).
    pub use_new_attention_order: bool,
    /// Class conditioning (not supported: must be false).
    pub class_cond: bool,
    /// Ignored (PyTorch memory option).
    pub use_checkpoint: bool,
    /// Ignored (PyTorch precision option).
    pub use_fp16: bool,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            num_channels: 128,
            num_res_blocks: 2,
            channel_mult: ListArg::Text(String::new()),
            attention_resolutions: ListArg::Text("16,8".into()),
            num_heads: 4,
            num_head_channels: -1,
            num_heads_upsample: -1,
            use_scale_shift_norm: true,
            resblock_updown: false,
            learn_sigma: false,
            dropout: 0.0,
            use_new_attention_order: false,
            class_cond: false,
            use_checkpoint: false,
            use_fp16: false,
        }
    }
}

impl UNetConfig {
    /// The DPS FFHQ-256 checkpoint's configuration (`ffhq_10m.pt`).
    pub fn ffhq256() -> Self {
        Self {
            image_size: 256,
            num_channels: 128,
            num_res_blocks: 1,
            channel_mult: ListArg::Text(String::new()),
            attention_resolutions: ListArg::Text("16".into()),
            num_heads: 4,
            num_head_channels: 64,
            use_scale_shift_norm: true,
            resblock_updown: true,
            learn_sigma: true,
            dropout: 0.0,
            ..Default::default()
        }
    }

    /// A small config: `image_size`, base channels, multipliers, one res block, attention at
    /// the given resolutions, 32 channels per head, scale-shift norm, resblock up/down.
    pub fn small(
        image_size: usize,
        num_channels: usize,
        mult: &[f64],
        attention: &[usize],
    ) -> Self {
        Self {
            image_size,
            num_channels,
            num_res_blocks: 1,
            channel_mult: ListArg::Numbers(mult.to_vec()),
            attention_resolutions: ListArg::Numbers(attention.iter().map(|a| *a as f64).collect()),
            num_heads: 4,
            num_head_channels: 32,
            use_scale_shift_norm: true,
            resblock_updown: true,
            learn_sigma: false,
            ..Default::default()
        }
    }

    /// Reads a JSON file: either the arguments themselves or an object holding them under
    /// `guided_diffusion_create_model_args` (the fixture layout).
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let err = |reason: String| ConfigError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let cfg = Self::from_json_str(&text).map_err(|e| err(e.to_string()))?;
        Ok(cfg)
    }

    /// Parses JSON text (see [`UNetConfig::from_json_file`]).
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let args = value
            .get("guided_diffusion_create_model_args")
            .cloned()
            .unwrap_or(value);
        let cfg: Self =
            serde_json::from_value(args).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Serialises to pretty JSON (guided-diffusion names).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }

    /// Channel multipliers, resolving the empty default as guided-diffusion does.
    pub fn channel_mult(&self) -> Result<Vec<f64>, ConfigError> {
        let v = self.channel_mult.values()?;
        if !v.is_empty() {
            return Ok(v);
        }
        Ok(match self.image_size {
            512 => vec![0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
            256 => vec![1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
            128 => vec![1.0, 1.0, 2.0, 3.0, 4.0],
            64 => vec![1.0, 2.0, 3.0, 4.0],
            32 => vec![1.0, 2.0, 2.0, 2.0],
            s => {
                return Err(ConfigError::Invalid(format!(
                    "no default channel_mult for image_size {s}; give one"
                )));
            }
        })
    }

    /// Downsampling factors `ds = image_size / resolution` that get attention.
    pub fn attention_ds(&self) -> Result<Vec<usize>, ConfigError> {
        self.attention_resolutions
            .values()?
            .into_iter()
            .map(|r| {
                let r = r as usize;
                if r == 0 || self.image_size % r != 0 {
                    return Err(ConfigError::Invalid(format!(
                        "attention resolution {r} does not divide image_size {}",
                        self.image_size
                    )));
                }
                Ok(self.image_size / r)
            })
            .collect()
    }

    /// Output channels: 6 with learned sigma, else 3.
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma { 6 } else { 3 }
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mult = self.channel_mult()?;
        self.attention_ds()?;
        if self.class_cond {
            return Err(ConfigError::Invalid(
                "class_cond = true is not supported".into(),
            ));
        }
        if self.num_channels == 0 || self.num_res_blocks == 0 || self.image_size == 0 {
            return Err(ConfigError::Invalid(
                "image_size, num_channels and num_res_blocks must be ≥ 1".into(),
            ));
        }
        let levels = mult.len() as u32;
        if self.image_size % 2usize.pow(levels.saturating_sub(1)) != 0 {
            return Err(ConfigError::Invalid(format!(
                "image_size {} is not divisible by 2^{}",
                self.image_size,
                levels - 1
            )));
        }
        for m in &mult {
            let ch = (m * self.num_channels as f64) as usize;
            if ch == 0 || ch % 32 != 0 {
                return Err(ConfigError::Invalid(format!(
                    "level width {ch} must be a positive multiple of 32 (GroupNorm(32))"
                )));
            }
            if self.num_head_channels > 0 && ch % self.num_head_channels as usize != 0 {
                return Err(ConfigError::Invalid(format!(
                    "level width {ch} is not divisible by num_head_channels {}",
                    self.num_head_channels
                )));
            }
        }
        if self.num_head_channels <= 0 && self.num_heads <= 0 {
            return Err(ConfigError::Invalid(
                "set num_heads or num_head_channels".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_style_config_parses_with_defaults() {
        let cfg = UNetConfig::from_json_str(
            r#"{"guided_diffusion_create_model_args": {"image_size": 32, "num_channels": 32, "num_res_blocks": 1,
            "channel_mult": "1,2,2", "attention_resolutions": "16,8", "num_head_channels": 16,
            "resblock_updown": true, "learn_sigma": true}}"#,
        )
        .unwrap();
        assert_eq!(cfg.channel_mult().unwrap(), vec![1.0, 2.0, 2.0]);
        assert_eq!(cfg.attention_ds().unwrap(), vec![2, 4]);
        assert_eq!(cfg.out_channels(), 6);
        assert!(cfg.use_scale_shift_norm);
        assert_eq!(
            UNetConfig::ffhq256().channel_mult().unwrap(),
            vec![1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
        );
        let back = UNetConfig::from_json_str(&cfg.to_json()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(UNetConfig::from_json_str(r#"{"image_size": 48}"#).is_err());
        assert!(UNetConfig::from_json_str(r#"{"image_size": 64, "class_cond": true}"#).is_err());
        assert!(
            UNetConfig::from_json_str(r#"{"image_size": 64, "attention_resolutions": "7"}"#)
                .is_err()
        );
        assert!(UNetConfig::from_json_str(r#"{"image_size": 64, "num_channels": 20}"#).is_err());
        assert!(UNetConfig::from_json_str("not json").is_err());
    }
}
