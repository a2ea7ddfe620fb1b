//! The two JSON files of a diffusers DDPM model: the network's `config.json`
//! (`UNet2DModel`'s constructor arguments) and the scheduler's `scheduler_config.json`.
//!
//! Both are read strictly: a key diffusers does not define for that class is refused with the
//! closest known one, and an option this port does not implement is refused by name, never
//! approximated. Defaults are those of diffusers 0.42's constructors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tweedie_core::{Schedule, ScheduleKind};

use super::DiffusersError;

/// A `sample_size`: one side, or `[height, width]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// A square image of this side.
    Side(usize),
    /// `[height, width]`.
    HeightWidth([usize; 2]),
}

/// `UNet2DModel`'s arguments (diffusers `models/unets/unet_2d.py`), defaults as there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConfig {
    /// Image side (`None`: not given; then the caller must know it).
    pub sample_size: Option<SampleSize>,
    /// Input channels (3: RGB).
    pub in_channels: usize,
    /// Output channels: 3 (ε), or 6 (ε and a learned-range variance).
    pub out_channels: usize,
    /// Maps the input from [0, 1] to [−1, 1] first (`2x − 1`).
    pub center_input_sample: bool,
    /// Only `positional` is supported.
    pub time_embedding_type: String,
    /// Width of the timestep embedding (default 4 × `block_out_channels[0]`).
    pub time_embedding_dim: Option<usize>,
    /// Frequency shift `s` of the sinusoidal embedding, f_i = 10000^(−i/(half − s)).
    pub freq_shift: f64,
    /// `[cos, sin]` instead of `[sin, cos]`.
    pub flip_sin_to_cos: bool,
    /// `DownBlock2D` or `AttnDownBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2D`, or `None` for no middle block.
    pub mid_block_type: Option<String>,
    /// `UpBlock2D` or `AttnUpBlock2D` per level (deepest first).
    pub up_block_types: Vec<String>,
    /// Channels of each level.
    pub block_out_channels: Vec<usize>,
    /// Residual blocks per down level (the up levels have one more).
    pub layers_per_block: usize,
    /// The middle block's residual and attention outputs are divided by this.
    pub mid_block_scale_factor: f64,
    /// Padding of the stride-2 downsampling conv (0: pad right and bottom by one first).
    pub downsample_padding: usize,
    /// `conv` or `resnet` (a residual block with 2×2 average pooling); attention blocks only.
    pub downsample_type: String,
    /// `conv` or `resnet` (a residual block with nearest 2× upsampling); attention blocks only.
    pub upsample_type: String,
    /// Dropout (inference ignores it).
    pub dropout: f64,
    /// `silu` (alias `swish`).
    pub act_fn: String,
    /// Channels per attention head (`None`: one head over all channels).
    pub attention_head_dim: Option<usize>,
    /// Groups of every GroupNorm.
    pub norm_num_groups: Option<usize>,
    /// Groups of the middle attention's GroupNorm (`None`: `norm_num_groups` when
    /// `resnet_time_scale_shift` is `default`, no norm otherwise).
    pub attn_norm_num_groups: Option<usize>,
    /// ε of every GroupNorm.
    pub norm_eps: f64,
    /// `default` (the embedding is added before the second norm) or `scale_shift`
    /// (`norm(h)·(1 + scale) + shift`).
    pub resnet_time_scale_shift: String,
    /// Attention in the middle block.
    pub add_attention: bool,
    /// Class conditioning (not supported: must be `None`).
    pub class_embed_type: Option<String>,
    /// Class conditioning (not supported: must be `None`).
    pub num_class_embeds: Option<usize>,
    /// Only for `learned` time embeddings (not supported).
    pub num_train_timesteps: Option<usize>,
}

impl Default for UNet2DConfig {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            freq_shift: 0.0,
            flip_sin_to_cos: true,
            down_block_types: s(&[
                "DownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
            ]),
            mid_block_type: Some("UNetMidBlock2D".into()),
            up_block_types: s(&[
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "UpBlock2D",
            ]),
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            downsample_type: "conv".into(),
            upsample_type: "conv".into(),
            dropout: 0.0,
            act_fn: "silu".into(),
            attention_head_dim: Some(8),
            norm_num_groups: Some(32),
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: "default".into(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
        }
    }
}

const UNET_KEYS: [&str; 29] = [
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "time_embedding_type",
    "time_embedding_dim",
    "freq_shift",
    "flip_sin_to_cos",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "downsample_padding",
    "downsample_type",
    "upsample_type",
    "dropout",
    "act_fn",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "resnet_time_scale_shift",
    "add_attention",
    "class_embed_type",
    "num_class_embeds",
    "num_train_timesteps",
    // Written by older diffusers versions; carries no architecture.
    "_name_or_path",
];

/// Parses `text` as a JSON object whose keys are all in `known` (or start with `_`, diffusers'
/// metadata such as `_class_name`), then as `T`.
fn strict<T: serde::de::DeserializeOwned>(
    text: &str,
    known: &[&str],
    what: &str,
) -> Result<(T, Map<String, Value>), DiffusersError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| DiffusersError::Config(format!("{what}: not valid JSON ({e})")))?;
    let Value::Object(map) = value else {
        return Err(DiffusersError::Config(format!(
            "{what}: expected a JSON object"
        )));
    };
    if let Some(m) = crate::keys::unknown_key(&map, known) {
        return Err(DiffusersError::Config(format!("{what}: {m}")));
    }
    let parsed = serde_json::from_value(Value::Object(map.clone()))
        .map_err(|e| DiffusersError::Config(format!("{what}: {e}")))?;
    Ok((parsed, map))
}

fn unsupported(what: &str, value: impl std::fmt::Debug, supported: &str) -> DiffusersError {
    DiffusersError::Unsupported(format!("{what} = {value:?} (supported: {supported})"))
}

impl UNet2DConfig {
    /// Parses and validates a `config.json`, checking `_class_name` is `UNet2DModel`.
    pub fn from_json_str(text: &str) -> Result<Self, DiffusersError> {
        let (config, map): (Self, _) = strict(text, &UNET_KEYS, "config.json")?;
        match map.get("_class_name").and_then(Value::as_str) {
            Some("UNet2DModel") | None => {}
            Some(other) => {
                return Err(DiffusersError::Unsupported(format!(
                    "_class_name = {other:?}: only UNet2DModel (pixel-space DDPM networks) is supported"
                )));
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The image side (`sample_size`), refusing non-square sizes.
    pub fn image_size(&self) -> Result<usize, DiffusersError> {
        match &self.sample_size {
            Some(SampleSize::Side(s)) => Ok(*s),
            Some(SampleSize::HeightWidth([h, w])) if h == w => Ok(*h),
            Some(SampleSize::HeightWidth(hw)) => Err(unsupported(
                "sample_size",
                hw,
                "square images (one side, or [h, w] with h = w)",
            )),
            None => Err(DiffusersError::Config(
                "config.json has no sample_size: the model's image side is unknown".into(),
            )),
        }
    }

    /// The timestep embedding's width.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels[0])
    }

    /// Groups of every GroupNorm (validated to be set).
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }

    /// True for `resnet_time_scale_shift = scale_shift`.
    pub fn scale_shift(&self) -> bool {
        self.resnet_time_scale_shift == "scale_shift"
    }

    /// True when the output carries a variance channel per image channel.
    pub fn learned_variance(&self) -> bool {
        self.out_channels == 2 * self.in_channels
    }

    /// Refuses what this port does not implement, naming the option.
    pub fn validate(&self) -> Result<(), DiffusersError> {
        self.validate_options()?;
        self.validate_shape()
    }

    fn validate_options(&self) -> Result<(), DiffusersError> {
        if self.time_embedding_type != "positional" {
            return Err(unsupported(
                "time_embedding_type",
                &self.time_embedding_type,
                "positional",
            ));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(unsupported("act_fn", &self.act_fn, "silu, swish"));
        }
        if !matches!(
            self.resnet_time_scale_shift.as_str(),
            "default" | "scale_shift"
        ) {
            return Err(unsupported(
                "resnet_time_scale_shift",
                &self.resnet_time_scale_shift,
                "default, scale_shift",
            ));
        }
        for (name, v) in [
            ("downsample_type", &self.downsample_type),
            ("upsample_type", &self.upsample_type),
        ] {
            if !matches!(v.as_str(), "conv" | "resnet") {
                return Err(unsupported(name, v, "conv, resnet"));
            }
        }
        if self.class_embed_type.is_some() || self.num_class_embeds.is_some() {
            return Err(DiffusersError::Unsupported(
                "class conditioning (class_embed_type / num_class_embeds): only unconditional models are supported".into(),
            ));
        }
        if let Some(m) = &self.mid_block_type
            && m != "UNetMidBlock2D"
        {
            return Err(unsupported("mid_block_type", m, "UNetMidBlock2D, null"));
        }
        for b in &self.down_block_types {
            if !matches!(down_kind(b), "DownBlock2D" | "AttnDownBlock2D") {
                return Err(unsupported(
                    "down_block_types",
                    b,
                    "DownBlock2D, AttnDownBlock2D",
                ));
            }
        }
        for b in &self.up_block_types {
            if !matches!(down_kind(b), "UpBlock2D" | "AttnUpBlock2D") {
                return Err(unsupported("up_block_types", b, "UpBlock2D, AttnUpBlock2D"));
            }
        }
        if self.norm_num_groups.is_none() {
            return Err(unsupported(
                "norm_num_groups",
                "null",
                "a number (diffusers' residual blocks need one)",
            ));
        }
        Ok(())
    }

    fn validate_shape(&self) -> Result<(), DiffusersError> {
        let levels = self.block_out_channels.len();
        let invalid = |m: String| Err(DiffusersError::Config(format!("config.json: {m}")));
        if levels == 0 || self.layers_per_block == 0 {
            return invalid("block_out_channels and layers_per_block must not be empty/0".into());
        }
        if self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            return invalid(format!(
                "{levels} block_out_channels, {} down_block_types and {} up_block_types: they must be equal",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if self.in_channels != 3 || !matches!(self.out_channels, 3 | 6) {
            return Err(unsupported(
                "in_channels/out_channels",
                (self.in_channels, self.out_channels),
                "3 → 3 (ε) or 3 → 6 (ε and a learned-range variance)",
            ));
        }
        let groups = self.groups();
        if groups == 0
            || self
                .block_out_channels
                .iter()
                .any(|c| !c.is_multiple_of(groups))
        {
            return invalid(format!(
                "every block_out_channels {:?} must be a multiple of norm_num_groups {groups}",
                self.block_out_channels
            ));
        }
        if let Some(g) = self.attn_norm_num_groups
            && (g == 0 || !self.block_out_channels[levels - 1].is_multiple_of(g))
        {
            return invalid(format!(
                "attn_norm_num_groups {g} must divide the last level's channels"
            ));
        }
        if let Some(d) = self.attention_head_dim
            && (d == 0 || self.block_out_channels.iter().any(|c| !c.is_multiple_of(d)))
        {
            return invalid(format!(
                "attention_head_dim {d} must divide every block_out_channels {:?}",
                self.block_out_channels
            ));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return invalid(format!("norm_eps {} must be positive", self.norm_eps));
        }
        if !(self.mid_block_scale_factor.is_finite() && self.mid_block_scale_factor != 0.0) {
            return invalid("mid_block_scale_factor must be finite and non-zero".into());
        }
        let half = self.block_out_channels[0] / 2;
        if half as f64 <= self.freq_shift {
            return invalid(format!(
                "freq_shift {} leaves no frequencies for an embedding of {}",
                self.freq_shift, self.block_out_channels[0]
            ));
        }
        if let Some(size) = &self.sample_size {
            let side = self.image_size()?;
            let factor = 1usize << (levels - 1);
            if side == 0 || !side.is_multiple_of(factor) {
                return invalid(format!(
                    "sample_size {size:?} must be a multiple of 2^(levels − 1) = {factor}"
                ));
            }
        }
        Ok(())
    }
}

/// A block type without diffusers' `UNetRes` prefix (its `get_down_block` strips it).
pub(crate) fn down_kind(name: &str) -> &str {
    name.strip_prefix("UNetRes").unwrap_or(name)
}

/// The scheduler's `scheduler_config.json` (diffusers `DDPMScheduler`; `DDIMScheduler` and
/// `PNDMScheduler` configs share the β keys): what fixes the forward process. The sampling
/// options diffusers' own schedulers read are accepted and recorded, but tweedie's samplers
/// do not use them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// T.
    pub num_train_timesteps: usize,
    /// β_1.
    pub beta_start: f64,
    /// β_T.
    pub beta_end: f64,
    /// `linear`, `scaled_linear` (β = linspace(√β_1, √β_T)²) or `squaredcos_cap_v2`.
    pub beta_schedule: String,
    /// Explicit β_1…β_T (overrides `beta_schedule`).
    pub trained_betas: Option<Vec<f64>>,
    /// `fixed_small` (σ² = β̃), `fixed_large` (σ² = β), `learned_range`, … (see
    /// [`SchedulerConfig::variance_note`]).
    pub variance_type: String,
    /// Only `epsilon` is supported.
    pub prediction_type: String,
    /// Must be false (a zero-terminal-SNR rescaling of β is not implemented).
    pub rescale_betas_zero_snr: bool,
    /// Every other key of the file, as written (sampling options of diffusers' schedulers).
    #[serde(skip)]
    pub sampling_options: Map<String, Value>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            trained_betas: None,
            variance_type: "fixed_small".into(),
            prediction_type: "epsilon".into(),
            rescale_betas_zero_snr: false,
            sampling_options: Map::new(),
        }
    }
}

const SCHEDULER_KEYS: [&str; 8] = [
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "variance_type",
    "prediction_type",
    "rescale_betas_zero_snr",
];

/// Options of diffusers' DDPM/DDIM/PNDM schedulers (present and past) that only steer their
/// own sampling loops.
const SAMPLING_KEYS: [&str; 12] = [
    "clip_sample",
    "clip_sample_range",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "timestep_spacing",
    "steps_offset",
    "set_alpha_to_one",
    "skip_prk_steps",
    "tensor_format",
    "timestep_values",
    "predict_epsilon",
];

impl SchedulerConfig {
    /// Parses and validates a `scheduler_config.json`.
    pub fn from_json_str(text: &str) -> Result<Self, DiffusersError> {
        let known: Vec<&str> = SCHEDULER_KEYS
            .iter()
            .chain(&SAMPLING_KEYS)
            .copied()
            .collect();
        let (mut config, map): (Self, _) = strict(text, &known, "scheduler_config.json")?;
        config.sampling_options = map
            .into_iter()
            .filter(|(k, _)| SAMPLING_KEYS.contains(&k.as_str()) || k == "_class_name")
            .collect();
        if config.sampling_options.get("predict_epsilon") == Some(&Value::Bool(false)) {
            return Err(unsupported("predict_epsilon", false, "true (ε-prediction)"));
        }
        config.validate()?;
        config.schedule()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), DiffusersError> {
        if self.prediction_type != "epsilon" {
            return Err(unsupported(
                "prediction_type",
                &self.prediction_type,
                "epsilon",
            ));
        }
        if self.rescale_betas_zero_snr {
            return Err(unsupported("rescale_betas_zero_snr", true, "false"));
        }
        if !matches!(
            self.variance_type.as_str(),
            "fixed_small" | "fixed_small_log" | "fixed_large" | "fixed_large_log" | "learned_range"
        ) {
            return Err(unsupported(
                "variance_type",
                &self.variance_type,
                "fixed_small(_log), fixed_large(_log), learned_range",
            ));
        }
        Ok(())
    }

    /// The forward process: β as diffusers computes it (in f32, as `torch.float32` tensors),
    /// then every coefficient in f64 from those β.
    ///
    /// - `linear`: β_t = β_1 + (t − 1)/(T − 1)·(β_T − β_1);
    /// - `scaled_linear`: β_t = (√β_1 + (t − 1)/(T − 1)·(√β_T − √β_1))²;
    /// - `squaredcos_cap_v2`: β_t = min(1 − ᾱ(t/T)/ᾱ((t − 1)/T), 0.999),
    ///   ᾱ(u) = cos²((u + 0.008)/1.008 · π/2).
    pub fn schedule(&self) -> Result<Schedule, DiffusersError> {
        let t = self.num_train_timesteps;
        let err = |e: tweedie_core::CoreError| {
            DiffusersError::Config(format!("scheduler_config.json: {e}"))
        };
        let reference = match (&self.trained_betas, self.beta_schedule.as_str()) {
            (Some(betas), _) => {
                if betas.len() != t {
                    return Err(DiffusersError::Config(format!(
                        "scheduler_config.json: {} trained_betas for num_train_timesteps {t}",
                        betas.len()
                    )));
                }
                return Schedule::from_betas(ScheduleKind::Trained, f32_rounded(betas))
                    .map_err(err);
            }
            (None, "linear") => ScheduleKind::Linear {
                beta_start: self.beta_start,
                beta_end: self.beta_end,
            },
            (None, "scaled_linear") => ScheduleKind::ScaledLinear {
                beta_start: self.beta_start,
                beta_end: self.beta_end,
            },
            (None, "squaredcos_cap_v2") => ScheduleKind::Cosine { offset: 0.008 },
            (None, other) => {
                return Err(unsupported(
                    "beta_schedule",
                    other,
                    "linear, scaled_linear, squaredcos_cap_v2 (or trained_betas)",
                ));
            }
        };
        let exact = Schedule::new(reference, t).map_err(err)?;
        Schedule::from_betas(reference, f32_rounded(&exact.beta[1..])).map_err(err)
    }

    /// What tweedie's samplers do with this scheduler's `variance_type`, for a run's JSON.
    pub fn variance_note(&self, learned_variance: bool) -> String {
        match (self.variance_type.as_str(), learned_variance) {
            ("learned_range", true) => {
                "learned_range: the network's variance channels interpolate log β̃ and log β, as guided-diffusion's learn_sigma (--variance learned)".into()
            }
            ("learned_range", false) => {
                "variance_type learned_range, but the network has no variance channels: σ² comes from --variance".into()
            }
            ("fixed_small" | "fixed_small_log", _) => {
                "trained for σ² = β̃ (fixed_small, --variance posterior); the sampler uses --variance".into()
            }
            _ => "trained for σ² = β (fixed_large, --variance beta); the sampler uses --variance".into(),
        }
    }
}

/// β rounded to f32, as diffusers holds them.
fn f32_rounded(betas: &[f64]) -> Vec<f64> {
    betas.iter().map(|&b| b as f32 as f64).collect()
}
