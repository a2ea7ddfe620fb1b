//! The ADM configuration, in guided-diffusion's `create_model` argument names.

use serde::{Deserialize, Serialize};
use std::path::Path;
use tweedie_core::{InvalidParameter, MeanCorrection};

/// Errors reading or validating a UNet config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, or what it holds is not a valid config (the source says
    /// which).
    #[error("{path}")]
    File {
        /// The file.
        path: String,
        /// The I/O error, or the [`ConfigError`] of its content.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The text is not JSON, or not an object of `create_model` arguments.
    #[error("invalid UNet config JSON")]
    Json(#[from] serde_json::Error),
    /// One argument is out of its range.
    #[error(transparent)]
    Parameter(#[from] InvalidParameter),
    /// The values are inconsistent with each other, or the network would not fit.
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
    /// The numbers of the list given as argument `name`.
    fn values(&self, name: &'static str) -> Result<Vec<f64>, ConfigError> {
        match self {
            ListArg::Numbers(v) => Ok(v.clone()),
            ListArg::Text(s) if s.trim().is_empty() => Ok(Vec::new()),
            ListArg::Text(s) => s
                .split(',')
                .map(|p| {
                    p.trim().parse::<f64>().map_err(|_| {
                        ConfigError::from(InvalidParameter::new(
                            name,
                            format!("{s:?}"),
                            "must be a comma-separated list of numbers",
                        ))
                    })
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
    /// Groups of every GroupNorm (guided-diffusion: always 32; absent from its configs).
    /// tweedie's own small models use fewer: with 32 groups a 32-channel level normalises
    /// every channel on its own, which removes each channel's spatial mean before the output
    /// convolution, so the network cannot carry an image's mean colour to ε̂ (the colour casts
    /// of the first embedded model). Every level width must be a multiple of it.
    pub norm_groups: usize,
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
    /// tweedie's post-hoc correction of x̂0's per-channel image mean, fitted with the network
    /// frozen (`tweedie fit-mean`; [`MeanCorrection`]); applied by [`crate::UNetEps`] when
    /// present. Absent from guided-diffusion's configs, and then off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_correction: Option<MeanCorrection>,
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
            norm_groups: 32,
            dropout: 0.0,
            use_new_attention_order: false,
            class_cond: false,
            use_checkpoint: false,
            use_fp16: false,
            mean_correction: None,
        }
    }
}

impl UNetConfig {
    /// Every key a config may hold: guided-diffusion's `create_model` arguments, tweedie's
    /// `norm_groups` and `mean_correction`, and `model_path` (DPS's model configs carry the
    /// checkpoint's path; it is not read).
    pub const KEYS: [&'static str; 19] = [
        "image_size",
        "num_channels",
        "num_res_blocks",
        "channel_mult",
        "attention_resolutions",
        "num_heads",
        "num_head_channels",
        "num_heads_upsample",
        "use_scale_shift_norm",
        "resblock_updown",
        "learn_sigma",
        "norm_groups",
        "dropout",
        "use_new_attention_order",
        "class_cond",
        "use_checkpoint",
        "use_fp16",
        "mean_correction",
        "model_path",
    ];

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
        let err = |source: Box<dyn std::error::Error + Send + Sync>| ConfigError::File {
            path: path.display().to_string(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.into()))?;
        let cfg = Self::from_json_str(&text).map_err(|e| err(e.into()))?;
        Ok(cfg)
    }

    /// Parses JSON text (see [`UNetConfig::from_json_file`]). Every key must be one of
    /// [`UNetConfig::KEYS`] (an unknown one is refused, naming the closest known key), and
    /// `image_size` must be given.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let args = value
            .get("guided_diffusion_create_model_args")
            .cloned()
            .unwrap_or(value);
        let Some(map) = args.as_object() else {
            return Err(ConfigError::Invalid(
                "expected a JSON object of create_model arguments".into(),
            ));
        };
        if let Some(m) = crate::keys::unknown_key(map, &Self::KEYS) {
            return Err(ConfigError::Invalid(m));
        }
        if !map.contains_key("image_size") {
            return Err(ConfigError::Invalid(
                "missing required key \"image_size\" (the image side in pixels)".into(),
            ));
        }
        let cfg: Self = serde_json::from_value(args)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Serialises to pretty JSON (guided-diffusion names).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }

    /// Channel multipliers, resolving the empty default as guided-diffusion does.
    pub fn channel_mult(&self) -> Result<Vec<f64>, ConfigError> {
        let v = self.channel_mult.values("channel_mult")?;
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
                return Err(InvalidParameter::new(
                    "image_size",
                    s,
                    "has no default channel_mult (32, 64, 128, 256 and 512 have one); give one",
                )
                .into());
            }
        })
    }

    /// Downsampling factors `ds = image_size / resolution` that get attention.
    pub fn attention_ds(&self) -> Result<Vec<usize>, ConfigError> {
        self.attention_resolutions
            .values("attention_resolutions")?
            .into_iter()
            .map(|r| {
                let whole = r.is_finite() && r >= 1.0 && r.fract() == 0.0 && r <= usize::MAX as f64;
                let ri = r as usize;
                if !whole || !self.image_size.is_multiple_of(ri) {
                    return Err(InvalidParameter::new(
                        "attention_resolutions",
                        r,
                        format!("must divide image_size {}", self.image_size),
                    )
                    .into());
                }
                Ok(self.image_size / ri)
            })
            .collect()
    }

    /// Output channels: 6 with learned sigma, else 3.
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma { 6 } else { 3 }
    }

    /// Checks the values are usable, and that the network fits: at most
    /// [`UNetConfig::MAX_PARAMETERS`] parameters and an estimated forward pass
    /// ([`UNetConfig::estimated_memory_bytes`]) within this machine's memory
    /// ([`UNetConfig::memory_limit_bytes`]). Everything is computed from the config with checked
    /// arithmetic, before anything is allocated; [`crate::UNet::build`] (hence `init`, `load`,
    /// `from_weights`) and [`UNetConfig::from_json_str`] run it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with_memory_limit(Self::memory_limit_bytes())
    }

    /// [`UNetConfig::validate`] with an explicit memory bound in bytes.
    pub fn validate_with_memory_limit(&self, memory_bytes: u64) -> Result<(), ConfigError> {
        self.validate_shape()?;
        let params = self.parameter_count()?;
        if params > u128::from(Self::MAX_PARAMETERS) {
            return Err(ConfigError::Invalid(format!(
                "the network would have {} parameters ({} as f32), above the limit of {} \
                 (num_channels {}, num_res_blocks {}, channel_mult {:?})",
                count(params),
                gib(params.saturating_mul(4)),
                Self::MAX_PARAMETERS,
                self.num_channels,
                self.num_res_blocks,
                self.channel_mult()?
            )));
        }
        let a = self.activation_estimate()?;
        let total = params
            .checked_add(a)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| self.overflow())?;
        if total > u128::from(memory_bytes) {
            return Err(ConfigError::Invalid(format!(
                "a forward pass at batch 1 (f32) would need about {} ({} parameters, {} \
                 activation values at image_size {}), more than the {} of memory available",
                gib(total),
                count(params),
                count(a),
                self.image_size,
                gib(u128::from(memory_bytes)),
            )));
        }
        Ok(())
    }

    /// Most parameters a network may have: 2·10⁹ (8 GB as f32; ADM's largest published
    /// models have about 0.56·10⁹).
    pub const MAX_PARAMETERS: u64 = 2_000_000_000;

    /// The memory bound [`UNetConfig::validate`] uses: the machine's total memory (`MemTotal`
    /// of `/proc/meminfo`), or 16 GiB where that cannot be read.
    pub fn memory_limit_bytes() -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                kib.checked_mul(1024)
            })
            .unwrap_or(16 << 30)
    }

    /// The exact number of scalar parameters of the network, computed from the config alone
    /// (checked arithmetic; nothing is allocated). Equals `UNet::num_parameters` of the built
    /// network.
    pub fn parameter_count(&self) -> Result<u128, ConfigError> {
        self.validate_shape()?;
        let acc = Acc::new(self);
        let ted = acc.mul(4, self.num_channels as u128);
        let mc = self.num_channels as u128;
        let n = self.num_res_blocks as u128;
        let widths = self.widths()?;
        let attn_levels = self.attention_levels()?;
        let (first, last) = (widths[0], *widths.last().expect("levels ≥ 1"));
        // time_embed.0 and .2
        let time = acc.linear(mc, ted);
        let time2 = acc.linear(ted, ted);
        // input_blocks.0: 3 → w0, 3×3
        let input_conv = acc.conv(3, first, 3);
        let mut total = acc.sum(&[time, time2, input_conv]);
        let mut ch = first;
        for (level, &w) in widths.iter().enumerate() {
            let attn = if attn_levels[level] {
                acc.attention(w)
            } else {
                0
            };
            // n blocks: the first from `ch`, the rest from `w`, each with its attention.
            let first_block = acc.res(ch, w, ted);
            let rest = acc.res(w, w, ted);
            let rest = acc.mul(rest, n - 1);
            let attns = acc.mul(attn, n);
            total = acc.sum(&[total, first_block, rest, attns]);
            ch = w;
            if level + 1 != widths.len() {
                let down = if self.resblock_updown {
                    acc.res(w, w, ted)
                } else {
                    acc.conv(w, w, 3)
                };
                total = acc.sum(&[total, down]);
            }
        }
        let middle = acc.sum(&[
            acc.res(last, last, ted),
            acc.attention(last),
            acc.res(last, last, ted),
        ]);
        total = acc.add(total, middle);
        for (level, &w) in widths.iter().enumerate().rev() {
            // n + 1 blocks; skip channels: n of this level's width, then the previous level's
            // (or the input conv's) width.
            let prev = if level > 0 { widths[level - 1] } else { first };
            let attn = if attn_levels[level] {
                acc.attention(w)
            } else {
                0
            };
            let block0 = acc.res(acc.add(ch, w), w, ted);
            let middle_blocks = acc.res(acc.add(w, w), w, ted);
            let middle_blocks = acc.mul(middle_blocks, n - 1);
            let last_block = acc.res(acc.add(w, prev), w, ted);
            let attns = acc.mul(attn, n + 1);
            total = acc.sum(&[total, block0, middle_blocks, last_block, attns]);
            ch = w;
            if level > 0 {
                let up = if self.resblock_updown {
                    acc.res(w, w, ted)
                } else {
                    acc.conv(w, w, 3)
                };
                total = acc.sum(&[total, up]);
            }
        }
        let out = acc.add(
            acc.norm(first),
            acc.conv(first, self.out_channels() as u128, 3),
        );
        total = acc.add(total, out);
        acc.finish(total, self)
    }

    /// Estimated bytes of one forward pass at batch 1 in f32: the parameters, the skip
    /// connections the encoder keeps for the decoder, and the largest layer's working set
    /// (a residual block's inputs, normalised copies and outputs; an attention layer's QKV and
    /// heads × T² attention weights). A rough lower bound: autodiff (DPS) keeps every
    /// activation, and batches multiply the activations.
    pub fn estimated_memory_bytes(&self) -> Result<u128, ConfigError> {
        let total = self
            .parameter_count()?
            .checked_add(self.activation_estimate()?)
            .and_then(|v| v.checked_mul(4));
        total.ok_or_else(|| self.overflow())
    }

    /// Activation values (not bytes) of [`UNetConfig::estimated_memory_bytes`].
    fn activation_estimate(&self) -> Result<u128, ConfigError> {
        let acc = Acc::new(self);
        let widths = self.widths()?;
        let attn_levels = self.attention_levels()?;
        let n = self.num_res_blocks as u128;
        let side = self.image_size as u128;
        let area = |acc: &Acc, level: usize| {
            let s = side >> level;
            acc.mul(s, s)
        };
        let first = widths[0];
        // Skip connections: input conv, n blocks per level, each downsampling's output.
        let a0 = area(&acc, 0);
        let mut skips = acc.mul(first, a0);
        // Working set: the largest single layer.
        let mut peak = acc.mul(acc.mul(first, a0), 2);
        let mut ch = first;
        let mut res_peak = |acc: &Acc, cin: u128, cout: u128, a: u128| {
            let v = acc.mul(acc.add(acc.mul(2, cin), acc.mul(4, cout)), a);
            peak = peak.max(v);
        };
        for (level, &w) in widths.iter().enumerate() {
            let a = area(&acc, level);
            res_peak(&acc, ch, w, a);
            res_peak(&acc, w, w, a);
            let blocks = acc.mul(acc.mul(n, w), a);
            skips = acc.sum(&[skips, blocks]);
            if level + 1 != widths.len() {
                let next = area(&acc, level + 1);
                let down = acc.mul(w, next);
                skips = acc.sum(&[skips, down]);
            }
            ch = w;
        }
        for (level, &w) in widths.iter().enumerate().rev() {
            let a = area(&acc, level);
            let prev = if level > 0 { widths[level - 1] } else { first };
            res_peak(&acc, acc.add(ch, w), w, a);
            res_peak(&acc, acc.add(w, w), w, a);
            res_peak(&acc, acc.add(w, prev), w, a);
            if level > 0 {
                // Upsampling doubles the side: its output lives at the next level up.
                let up = area(&acc, level - 1);
                res_peak(&acc, w, w, up);
            }
            ch = w;
        }
        // Attention at its levels and in the middle block: x, normalised rows, QKV and its
        // permuted copy, output rows and the result (10·C·T), plus the weights (2·heads·T²).
        let last = widths.len() - 1;
        for (level, &w) in widths.iter().enumerate() {
            if !(attn_levels[level] || level == last) {
                continue;
            }
            let t = area(&acc, level);
            let heads = self.heads(w as usize) as u128;
            let rows = acc.mul(acc.mul(10, w), t);
            let weights = acc.mul(acc.mul(2, heads), acc.mul(t, t));
            let v = acc.add(rows, weights);
            peak = peak.max(v);
        }
        let total = acc.add(skips, peak);
        acc.finish(total, self)
    }

    /// Attention heads for a layer of `ch` channels (the largest of encoder/decoder counts).
    fn heads(&self, ch: usize) -> usize {
        if self.num_head_channels > 0 {
            ch / self.num_head_channels as usize
        } else {
            self.num_heads.max(self.num_heads_upsample).max(1) as usize
        }
    }

    /// Level widths `channel_mult · num_channels`.
    fn widths(&self) -> Result<Vec<u128>, ConfigError> {
        Ok(self
            .channel_mult()?
            .iter()
            .map(|m| (m * self.num_channels as f64) as usize as u128)
            .collect())
    }

    /// Whether each level (downsampling 2^level) has attention.
    fn attention_levels(&self) -> Result<Vec<bool>, ConfigError> {
        let ds = self.attention_ds()?;
        let levels = self.channel_mult()?.len();
        Ok((0..levels)
            .map(|l| {
                1usize
                    .checked_shl(l as u32)
                    .is_some_and(|d| ds.contains(&d))
            })
            .collect())
    }

    fn overflow(&self) -> ConfigError {
        ConfigError::Invalid(format!(
            "the network's size overflows 128-bit arithmetic (image_size {}, num_channels {}, \
             num_res_blocks {}): far beyond any machine",
            self.image_size, self.num_channels, self.num_res_blocks
        ))
    }

    /// Checks a mean-correction table against these networks: three image channels, and
    /// timesteps of the 1000-step schedules they use.
    pub(crate) fn check_mean_correction(m: &MeanCorrection) -> Result<(), ConfigError> {
        Ok(m.validate(3, 1000)?)
    }

    /// The structural checks of [`UNetConfig::validate`], without the size bounds.
    fn validate_shape(&self) -> Result<(), ConfigError> {
        let mult = self.channel_mult()?;
        self.attention_ds()?;
        if let Some(m) = &self.mean_correction {
            Self::check_mean_correction(m)?;
        }
        if self.class_cond {
            return Err(InvalidParameter::new("class_cond", true, "is not supported").into());
        }
        for (name, value) in [
            ("image_size", self.image_size),
            ("num_channels", self.num_channels),
            ("num_res_blocks", self.num_res_blocks),
        ] {
            if value == 0 {
                return Err(InvalidParameter::new(name, value, "must be ≥ 1").into());
            }
        }
        let levels = mult.len() as u32;
        let factor = 2usize.checked_pow(levels.saturating_sub(1));
        if factor.is_none_or(|f| !self.image_size.is_multiple_of(f)) {
            return Err(ConfigError::Invalid(format!(
                "image_size {} is not divisible by 2^{} ({} levels in channel_mult)",
                self.image_size,
                levels.saturating_sub(1),
                levels
            )));
        }
        if self.norm_groups == 0 {
            return Err(InvalidParameter::new("norm_groups", 0, "must be ≥ 1").into());
        }
        for m in &mult {
            let ch = (m * self.num_channels as f64) as usize;
            if ch == 0 || !ch.is_multiple_of(self.norm_groups) {
                return Err(ConfigError::Invalid(format!(
                    "level width {ch} must be a positive multiple of norm_groups {} (GroupNorm)",
                    self.norm_groups
                )));
            }
            if self.num_head_channels > 0 && !ch.is_multiple_of(self.num_head_channels as usize) {
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
        if self.num_head_channels <= 0 {
            // Attention splits its channels evenly between heads: at the attention levels and
            // in the middle block (the last level's width).
            let attn = self.attention_levels()?;
            for (level, m) in mult.iter().enumerate() {
                if !(attn[level] || level + 1 == mult.len()) {
                    continue;
                }
                let ch = (m * self.num_channels as f64) as usize;
                for heads in [self.num_heads, self.num_heads_upsample] {
                    if heads > 0 && !ch.is_multiple_of(heads as usize) {
                        return Err(ConfigError::Invalid(format!(
                            "attention width {ch} is not divisible by {heads} heads"
                        )));
                    }
                }
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(
                InvalidParameter::new("dropout", self.dropout, "must lie in [0, 1)").into(),
            );
        }
        Ok(())
    }
}

/// `bytes` in GiB, for messages (scientific notation past a million GiB).
fn gib(bytes: u128) -> String {
    let g = bytes as f64 / (1u128 << 30) as f64;
    if g < 1e6 {
        format!("{g:.1} GiB")
    } else {
        format!("{g:.2e} GiB")
    }
}

/// A count for messages: exact up to 10¹², scientific past it.
fn count(n: u128) -> String {
    if n <= 1_000_000_000_000 {
        n.to_string()
    } else {
        format!("{:.2e}", n as f64)
    }
}

/// Checked u128 arithmetic for the size estimates: the first overflow is remembered and every
/// later result is meaningless but harmless (saturated); [`Acc::finish`] reports it.
struct Acc {
    overflow: std::cell::Cell<bool>,
    scale_shift: bool,
}

impl Acc {
    fn new(cfg: &UNetConfig) -> Self {
        Self {
            overflow: std::cell::Cell::new(false),
            scale_shift: cfg.use_scale_shift_norm,
        }
    }
    fn add(&self, a: u128, b: u128) -> u128 {
        a.checked_add(b).unwrap_or_else(|| {
            self.overflow.set(true);
            u128::MAX
        })
    }
    fn mul(&self, a: u128, b: u128) -> u128 {
        a.checked_mul(b).unwrap_or_else(|| {
            self.overflow.set(true);
            u128::MAX
        })
    }
    fn sum(&self, v: &[u128]) -> u128 {
        v.iter().fold(0, |s, &x| self.add(s, x))
    }
    /// `[out, in]` weight and bias.
    fn linear(&self, cin: u128, cout: u128) -> u128 {
        let w = self.mul(cin, cout);
        self.add(w, cout)
    }
    /// `[out, in, k, k]` weight and bias.
    fn conv(&self, cin: u128, cout: u128, k: u128) -> u128 {
        let w = self.mul(self.mul(cin, cout), k * k);
        self.add(w, cout)
    }
    /// GroupNorm weight and bias.
    fn norm(&self, ch: u128) -> u128 {
        self.mul(2, ch)
    }
    /// guided-diffusion's `ResBlock` (with its 1×1 skip conv when the width changes).
    fn res(&self, cin: u128, cout: u128, emb: u128) -> u128 {
        let emb_out = if self.scale_shift {
            self.mul(2, cout)
        } else {
            cout
        };
        let parts = [
            self.norm(cin),
            self.conv(cin, cout, 3),
            self.linear(emb, emb_out),
            self.norm(cout),
            self.conv(cout, cout, 3),
            if cin != cout {
                self.conv(cin, cout, 1)
            } else {
                0
            },
        ];
        self.sum(&parts)
    }
    /// `AttentionBlock`: norm, qkv (`C → 3C`) and proj_out (`C → C`).
    fn attention(&self, ch: u128) -> u128 {
        let parts = [
            self.norm(ch),
            self.linear(ch, self.mul(3, ch)),
            self.linear(ch, ch),
        ];
        self.sum(&parts)
    }
    /// `v`, or the config's overflow error if any step overflowed.
    fn finish(&self, v: u128, cfg: &UNetConfig) -> Result<u128, ConfigError> {
        if self.overflow.get() {
            Err(cfg.overflow())
        } else {
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A misspelled key would otherwise fall back to its default silently (`norm_group`: 32
    /// groups instead of the model's 8, a different network with the same weight shapes).
    #[test]
    fn unknown_keys_are_refused_naming_the_closest_known_one() {
        let embedded = include_str!("../../../assets/model.json");
        for (typo, right) in [
            ("\"norm_group\"", "norm_groups"),
            ("\"num_head_channel\"", "num_head_channels"),
            ("\"mean_corection\"", "mean_correction"),
        ] {
            let right_quoted = format!("\"{right}\"");
            assert!(embedded.contains(&right_quoted), "{right}");
            let text = embedded.replacen(&right_quoted, typo, 1);
            let err = UNetConfig::from_json_str(&text).unwrap_err().to_string();
            assert!(err.contains(typo) && err.contains(&right_quoted), "{err}");
        }
        assert!(UNetConfig::from_json_str(embedded).is_ok());
    }

    #[test]
    fn a_missing_image_size_is_named() {
        let err = UNetConfig::from_json_str(r#"{"num_channels": 32}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("image_size"), "{err}");
    }

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
        // guided-diffusion's configs have no norm_groups: its 32.
        assert_eq!(cfg.norm_groups, 32);
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
        // Widths must be multiples of norm_groups; 0 groups is refused.
        assert!(
            UNetConfig::from_json_str(
                r#"{"image_size": 64, "num_channels": 20, "norm_groups": 4}"#
            )
            .is_ok()
        );
        let err = UNetConfig::from_json_str(
            r#"{"image_size": 64, "num_channels": 32, "norm_groups": 3}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("norm_groups 3"), "{err}");
        assert!(UNetConfig::from_json_str(r#"{"image_size": 64, "norm_groups": 0}"#).is_err());
        assert!(UNetConfig::from_json_str("not json").is_err());
    }

    /// A config with a mean correction writes and reads it back; one without writes no such
    /// key (guided-diffusion's format); a malformed table is refused; and `UNetEps` applies it.
    #[test]
    fn mean_correction_round_trips_is_checked_and_applied() {
        use burn::tensor::{Device, Tensor};
        use tweedie_core::{EpsModel, NoiseLevel, NoiseSource};
        let plain = UNetConfig::small(32, 32, &[1.0, 2.0], &[]);
        assert!(!plain.to_json().contains("mean_correction"));
        let table = MeanCorrection {
            t: vec![100, 900],
            slope: vec![vec![1.0; 3], vec![0.2, 0.3, 0.4]],
            intercept: vec![vec![0.0; 3], vec![0.1, -0.1, -0.2]],
            images: 8,
            seed: 1,
            rule: tweedie_core::FitRule::Regression,
            posterior_variance: None,
            chain: None,
            last_step: None,
        };
        let mut with = plain.clone();
        with.mean_correction = Some(table.clone());
        let back = UNetConfig::from_json_str(&with.to_json()).unwrap();
        assert_eq!(back, with);
        let mut bad = with.clone();
        bad.mean_correction.as_mut().unwrap().slope[1].pop();
        let err = UNetConfig::from_json_str(&bad.to_json()).unwrap_err();
        assert!(err.to_string().contains("mean_correction"), "{err}");

        let device = Device::flex();
        let raw = crate::UNetEps {
            net: crate::UNet::init(&plain, 0, &device).unwrap(),
        };
        let mut fixed = raw.clone();
        fixed.net.set_mean_correction(Some(table.clone())).unwrap();
        let x: Tensor<4> = NoiseSource::new(2).normal([2, 3, 32, 32], &device);
        let level = NoiseLevel {
            t: 500,
            alpha_bar: 0.08,
        };
        let want = table.correct_eps(x.clone(), raw.predict_eps(x.clone(), level), 500, 0.08);
        let got = fixed.predict_eps(x.clone(), level);
        let diff = tweedie_core::tensor::max_abs(&(got - want.clone()));
        assert!(diff < 1e-6, "{diff}");
        // The correction changes ε̂ (slope 0.6 at t = 500).
        assert!(tweedie_core::tensor::max_abs(&(want - raw.predict_eps(x, level))) > 1e-4);
        bad.mean_correction.as_mut().unwrap().slope[1].push(f64::NAN);
        assert!(fixed.net.set_mean_correction(bad.mean_correction).is_err());
    }
}
