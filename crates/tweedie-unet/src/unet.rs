//! The ADM UNet: residual blocks with timestep conditioning, self-attention, skip connections.
//! Module and key layout follow guided-diffusion's `unet.py` exactly.

use crate::config::{ConfigError, UNetConfig};
use crate::layers::{
    Conv, Export, GroupNorm, Linear, ParamSource, RandomInit, avgpool2, scaled_dot_attention, silu,
    upsample2,
};
use crate::weights::{WeightError, WeightMap};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use std::path::Path;
use tweedie_core::{EpsModel, NoiseLevel, NoiseSource};

/// A residual block with timestep embedding (optionally up/down-sampling).
#[derive(Module, Debug)]
pub struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv,
    emb: Linear,
    out_norm: GroupNorm,
    out_conv: Conv,
    skip: Option<Conv>,
    up: bool,
    down: bool,
    scale_shift: bool,
}

struct ResSpec {
    cin: usize,
    cout: usize,
    emb: usize,
    up: bool,
    down: bool,
    scale_shift: bool,
    groups: usize,
}

/// The layers of a residual block, under whatever key names a format gives them (the
/// diffusers port builds its `ResnetBlock2D` from them).
pub(crate) struct ResParts {
    pub in_norm: GroupNorm,
    pub in_conv: Conv,
    pub emb: Linear,
    pub out_norm: GroupNorm,
    pub out_conv: Conv,
    pub skip: Option<Conv>,
    pub up: bool,
    pub down: bool,
    pub scale_shift: bool,
}

impl ResBlock {
    /// A block of the given layers.
    pub(crate) fn from_parts(p: ResParts) -> Self {
        Self {
            in_norm: p.in_norm,
            in_conv: p.in_conv,
            emb: p.emb,
            out_norm: p.out_norm,
            out_conv: p.out_conv,
            skip: p.skip,
            up: p.up,
            down: p.down,
            scale_shift: p.scale_shift,
        }
    }

    fn new(src: &mut dyn ParamSource, p: &str, s: ResSpec, device: &Device) -> Self {
        let emb_out = if s.scale_shift { 2 * s.cout } else { s.cout };
        Self {
            in_norm: GroupNorm::new(src, &format!("{p}.in_layers.0"), s.cin, s.groups, device),
            in_conv: Conv::new(
                src,
                &format!("{p}.in_layers.2"),
                s.cin,
                s.cout,
                3,
                1,
                false,
                device,
            ),
            emb: Linear::new(
                src,
                &format!("{p}.emb_layers.1"),
                s.emb,
                emb_out,
                false,
                false,
                device,
            ),
            out_norm: GroupNorm::new(src, &format!("{p}.out_layers.0"), s.cout, s.groups, device),
            out_conv: Conv::new(
                src,
                &format!("{p}.out_layers.3"),
                s.cout,
                s.cout,
                3,
                1,
                true,
                device,
            ),
            skip: (s.cin != s.cout).then(|| {
                Conv::new(
                    src,
                    &format!("{p}.skip_connection"),
                    s.cin,
                    s.cout,
                    1,
                    1,
                    false,
                    device,
                )
            }),
            up: s.up,
            down: s.down,
            scale_shift: s.scale_shift,
        }
    }

    /// `skip(x) + out_conv(silu(out_norm(in_conv(silu(in_norm(x))), emb)))`, resampling `h`
    /// and `x` after the first activation (nearest 2× up, 2×2 average down), the timestep
    /// embedding added before `out_norm` or applied as its scale-shift.
    pub(crate) fn forward(&self, x: Tensor<4>, emb: &Tensor<2>) -> Tensor<4> {
        let h = silu(self.in_norm.forward(x.clone()));
        let (h, x) = if self.up {
            (upsample2(h), upsample2(x))
        } else if self.down {
            (avgpool2(h), avgpool2(x))
        } else {
            (h, x)
        };
        let h = self.in_conv.forward(h);
        let [b, c, ..] = h.dims();
        let e = self.emb.forward(silu(emb.clone()));
        let h = if self.scale_shift {
            let (scale, shift) = (e.clone().narrow(1, 0, c), e.narrow(1, c, c));
            self.out_norm.forward_modulated(h, Some((scale, shift)))
        } else {
            self.out_norm.forward(h + e.reshape([b, c, 1, 1]))
        };
        let h = self.out_conv.forward(silu(h));
        let x = match &self.skip {
            Some(conv) => conv.forward(x),
            None => x,
        };
        x + h
    }

    fn export(&self, out: &mut Export) {
        self.in_norm.export(out);
        self.in_conv.export(out);
        self.emb.export(out);
        self.out_norm.export(out);
        self.out_conv.export(out);
        if let Some(s) = &self.skip {
            s.export(out);
        }
    }
}

/// Multi-head self-attention over all pixels (legacy or new QKV channel order).
#[derive(Module, Debug)]
pub struct Attention {
    norm: GroupNorm,
    qkv: Linear,
    proj: Linear,
    heads: usize,
    legacy: bool,
}

impl Attention {
    fn new(
        src: &mut dyn ParamSource,
        p: &str,
        ch: usize,
        heads: usize,
        legacy: bool,
        groups: usize,
        device: &Device,
    ) -> Self {
        Self {
            norm: GroupNorm::new(src, &format!("{p}.norm"), ch, groups, device),
            qkv: Linear::new(src, &format!("{p}.qkv"), ch, 3 * ch, true, false, device),
            proj: Linear::new(src, &format!("{p}.proj_out"), ch, ch, true, true, device),
            heads,
            legacy,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let (t, nh) = (h * w, self.heads);
        let ch = c / nh;
        // [B, C, H, W] → [B·T, C] rows, so the 1×1 convs are matmuls.
        let rows = self
            .norm
            .forward(x.clone())
            .reshape([b, c, t])
            .swap_dims(1, 2)
            .reshape([b * t, c]);
        let qkv = self.qkv.forward(rows);
        // Legacy: channel = head·3ch + j·ch + c; new: channel = j·C + head·ch + c.
        let qkv: Tensor<5> = if self.legacy {
            qkv.reshape([b, t, nh, 3, ch]).permute([3, 0, 2, 1, 4])
        } else {
            qkv.reshape([b, t, 3, nh, ch]).permute([2, 0, 3, 1, 4])
        }; // [3, B, heads, T, ch]
        let pick = |j: usize| qkv.clone().narrow(0, j, 1).reshape([b, nh, t, ch]);
        // softmax(q kᵀ / √ch) v (ADM's 1/⁴√ch on q and k is the same scale).
        let scale = 1.0 / (ch as f64).sqrt();
        let a = scaled_dot_attention(pick(0), pick(1), pick(2), scale); // [B, heads, T, ch]
        let a = a.swap_dims(1, 2).reshape([b * t, c]);
        let out = self
            .proj
            .forward(a)
            .reshape([b, t, c])
            .swap_dims(1, 2)
            .reshape([b, c, h, w]);
        x + out
    }

    fn export(&self, out: &mut Export) {
        self.norm.export(out);
        self.qkv.export(out);
        self.proj.export(out);
    }
}

/// One layer of a block: exactly one field is set.
#[derive(Module, Debug)]
pub struct Layer {
    conv: Option<Conv>,
    res: Option<ResBlock>,
    attn: Option<Attention>,
    /// Plain downsampling conv (stride 2), key `….op`.
    down: Option<Conv>,
    /// Plain upsampling (nearest ×2, then conv), key `….conv`.
    up: Option<Conv>,
}

impl Layer {
    fn conv(c: Conv) -> Self {
        Self {
            conv: Some(c),
            res: None,
            attn: None,
            down: None,
            up: None,
        }
    }
    fn res(r: ResBlock) -> Self {
        Self {
            conv: None,
            res: Some(r),
            attn: None,
            down: None,
            up: None,
        }
    }
    fn attn(a: Attention) -> Self {
        Self {
            conv: None,
            res: None,
            attn: Some(a),
            down: None,
            up: None,
        }
    }
    fn down(c: Conv) -> Self {
        Self {
            conv: None,
            res: None,
            attn: None,
            down: Some(c),
            up: None,
        }
    }
    fn up(c: Conv) -> Self {
        Self {
            conv: None,
            res: None,
            attn: None,
            down: None,
            up: Some(c),
        }
    }

    fn forward(&self, x: Tensor<4>, emb: &Tensor<2>) -> Tensor<4> {
        if let Some(c) = &self.conv {
            c.forward(x)
        } else if let Some(r) = &self.res {
            r.forward(x, emb)
        } else if let Some(a) = &self.attn {
            a.forward(x)
        } else if let Some(c) = &self.down {
            c.forward(x)
        } else if let Some(c) = &self.up {
            c.forward(upsample2(x))
        } else {
            x
        }
    }

    fn export(&self, out: &mut Export) {
        if let Some(c) = &self.conv {
            c.export(out);
        } else if let Some(r) = &self.res {
            r.export(out);
        } else if let Some(a) = &self.attn {
            a.export(out);
        } else if let Some(c) = &self.down {
            c.export(out);
        } else if let Some(c) = &self.up {
            c.export(out);
        }
    }
}

/// A sequence of layers (`input_blocks.N`, `middle_block`, `output_blocks.N`).
#[derive(Module, Debug)]
pub struct Block {
    layers: Vec<Layer>,
}

impl Block {
    fn forward(&self, mut x: Tensor<4>, emb: &Tensor<2>) -> Tensor<4> {
        for l in &self.layers {
            x = l.forward(x, emb);
        }
        x
    }
    fn export(&self, out: &mut Export) {
        for l in &self.layers {
            l.export(out);
        }
    }
}

/// The guided-diffusion UNet.
#[derive(Module, Debug)]
pub struct UNet {
    time1: Linear,
    time2: Linear,
    input_blocks: Vec<Block>,
    middle: Block,
    output_blocks: Vec<Block>,
    out_norm: GroupNorm,
    out_conv: Conv,
    model_channels: usize,
    #[module(skip)]
    config: UNetConfig,
}

impl UNet {
    /// Builds the network for `config`, taking every parameter from `src`.
    pub fn build(
        config: &UNetConfig,
        src: &mut dyn ParamSource,
        device: &Device,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mc = config.num_channels;
        let ted = 4 * mc;
        let mult = config.channel_mult()?;
        let attn_ds = config.attention_ds()?;
        let heads = |ch: usize, up: bool| -> usize {
            if config.num_head_channels > 0 {
                ch / config.num_head_channels as usize
            } else if up && config.num_heads_upsample > 0 {
                config.num_heads_upsample as usize
            } else {
                config.num_heads as usize
            }
        };
        let legacy = !config.use_new_attention_order;
        let res = |src: &mut dyn ParamSource, p: String, cin, cout, up, down| {
            ResBlock::new(
                src,
                &p,
                ResSpec {
                    cin,
                    cout,
                    emb: ted,
                    up,
                    down,
                    scale_shift: config.use_scale_shift_norm,
                    groups: config.norm_groups,
                },
                device,
            )
        };
        let width = |m: f64| (m * mc as f64) as usize;
        // A residual block `{p}.0`, followed by attention `{p}.1` at attention resolutions.
        let res_attn = |src: &mut dyn ParamSource,
                        p: &str,
                        cin: usize,
                        cout: usize,
                        ds: usize,
                        decoder: bool| {
            let mut layers = vec![Layer::res(res(
                src,
                format!("{p}.0"),
                cin,
                cout,
                false,
                false,
            ))];
            if attn_ds.contains(&ds) {
                let a = Attention::new(
                    src,
                    &format!("{p}.1"),
                    cout,
                    heads(cout, decoder),
                    legacy,
                    config.norm_groups,
                    device,
                );
                layers.push(Layer::attn(a));
            }
            layers
        };

        let time1 = Linear::new(src, "time_embed.0", mc, ted, false, false, device);
        let time2 = Linear::new(src, "time_embed.2", ted, ted, false, false, device);

        let mut ch = width(mult[0]);
        let mut input_blocks = vec![Block {
            layers: vec![Layer::conv(Conv::new(
                src,
                "input_blocks.0.0",
                3,
                ch,
                3,
                1,
                false,
                device,
            ))],
        }];
        let mut chans = vec![ch];
        let mut ds = 1;
        for (level, &m) in mult.iter().enumerate() {
            for _ in 0..config.num_res_blocks {
                let p = format!("input_blocks.{}", input_blocks.len());
                let layers = res_attn(src, &p, ch, width(m), ds, false);
                ch = width(m);
                input_blocks.push(Block { layers });
                chans.push(ch);
            }
            if level + 1 != mult.len() {
                let p = format!("input_blocks.{}.0", input_blocks.len());
                let layer = if config.resblock_updown {
                    Layer::res(res(src, p, ch, ch, false, true))
                } else {
                    Layer::down(Conv::new(
                        src,
                        &format!("{p}.op"),
                        ch,
                        ch,
                        3,
                        2,
                        false,
                        device,
                    ))
                };
                input_blocks.push(Block {
                    layers: vec![layer],
                });
                chans.push(ch);
                ds *= 2;
            }
        }
        let middle = Block {
            layers: vec![
                Layer::res(res(src, "middle_block.0".into(), ch, ch, false, false)),
                Layer::attn(Attention::new(
                    src,
                    "middle_block.1",
                    ch,
                    heads(ch, false),
                    legacy,
                    config.norm_groups,
                    device,
                )),
                Layer::res(res(src, "middle_block.2".into(), ch, ch, false, false)),
            ],
        };
        let mut output_blocks = Vec::new();
        for (level, &m) in mult.iter().enumerate().rev() {
            for i in 0..=config.num_res_blocks {
                let p = format!("output_blocks.{}", output_blocks.len());
                let ich = chans.pop().expect("skip channels");
                let mut layers = res_attn(src, &p, ch + ich, width(m), ds, true);
                ch = width(m);
                if level > 0 && i == config.num_res_blocks {
                    let k = layers.len();
                    layers.push(if config.resblock_updown {
                        Layer::res(res(src, format!("{p}.{k}"), ch, ch, true, false))
                    } else {
                        Layer::up(Conv::new(
                            src,
                            &format!("{p}.{k}.conv"),
                            ch,
                            ch,
                            3,
                            1,
                            false,
                            device,
                        ))
                    });
                    ds /= 2;
                }
                output_blocks.push(Block { layers });
            }
        }
        let out_norm = GroupNorm::new(src, "out.0", ch, config.norm_groups, device);
        let out_conv = Conv::new(src, "out.2", ch, config.out_channels(), 3, 1, true, device);
        Ok(Self {
            time1,
            time2,
            input_blocks,
            middle,
            output_blocks,
            out_norm,
            out_conv,
            model_channels: mc,
            config: config.clone(),
        })
    }

    /// A freshly initialised network (PyTorch default init, zeroed output convs), seeded.
    ///
    /// ```
    /// use tweedie_core::{Device, EpsModel, NoiseSource, Schedule};
    /// use tweedie_unet::{UNet, UNetConfig, UNetEps};
    ///
    /// let device = Device::flex();
    /// // guided-diffusion's `create_model` arguments (the format of `assets/model.json`); a
    /// // trained model loads with `UNet::load(&config, "model.safetensors", &device)`.
    /// let config = UNetConfig::from_json_str(
    ///     r#"{"image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
    ///         "attention_resolutions": "8", "num_head_channels": 32, "learn_sigma": true}"#,
    /// )
    /// .unwrap();
    /// let model = UNetEps { net: UNet::init(&config, 0, &device).unwrap() };
    /// let x_t = NoiseSource::new(0).normal([2, 3, 16, 16], &device);
    /// let (eps, v) = model.predict_eps_and_variance(x_t, Schedule::linear_default().level(500));
    /// assert_eq!(eps.dims(), [2, 3, 16, 16]);
    /// // `learn_sigma`: 6 output channels, the last 3 the variance interpolation v.
    /// assert!(model.has_learned_variance());
    /// assert_eq!(v.unwrap().dims(), [2, 3, 16, 16]);
    /// ```
    pub fn init(config: &UNetConfig, seed: u64, device: &Device) -> Result<Self, ConfigError> {
        Self::build(config, &mut RandomInit(NoiseSource::new(seed)), device)
    }

    /// Builds the network from a checkpoint map; fails listing any missing, mis-shaped or
    /// unexpected keys.
    pub fn from_weights(
        config: &UNetConfig,
        weights: &mut WeightMap,
        device: &Device,
    ) -> Result<Self, UNetLoadError> {
        let net = Self::build(config, weights, device)?;
        weights.finish()?;
        Ok(net)
    }

    /// Loads a `.pt` or `.safetensors` checkpoint for `config`.
    pub fn load(
        config: &UNetConfig,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self, UNetLoadError> {
        // An impossible config is refused before a (possibly multi-GB) checkpoint is read.
        config.validate()?;
        let mut w = WeightMap::load(path)?;
        Self::from_weights(config, &mut w, device)
    }

    /// Every parameter under its guided-diffusion key.
    pub fn export(&self) -> Export {
        // Every layer exports under the key it was loaded from (set once, in `build`).
        let mut out = Export::new();
        self.time1.export(&mut out);
        self.time2.export(&mut out);
        for b in &self.input_blocks {
            b.export(&mut out);
        }
        self.middle.export(&mut out);
        for b in &self.output_blocks {
            b.export(&mut out);
        }
        self.out_norm.export(&mut out);
        self.out_conv.export(&mut out);
        out
    }

    /// Saves `weights` (f32 safetensors) and the JSON config beside it (`<stem>.json`).
    pub fn save(&self, weights: impl AsRef<Path>) -> Result<(), WeightError> {
        let path = weights.as_ref();
        WeightMap::save_safetensors(&self.export(), path)?;
        let cfg_path = path.with_extension("json");
        std::fs::write(&cfg_path, self.config.to_json()).map_err(|e| WeightError::File {
            path: cfg_path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// The config this network was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Replaces the config's post-hoc mean correction (`None`: off), after checking it.
    pub fn set_mean_correction(
        &mut self,
        correction: Option<tweedie_core::MeanCorrection>,
    ) -> Result<(), ConfigError> {
        if let Some(m) = &correction {
            UNetConfig::check_mean_correction(m)?;
        }
        self.config.mean_correction = correction;
        Ok(())
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.export()
            .values()
            .map(|(s, _)| s.iter().product::<usize>())
            .sum()
    }

    /// Sinusoidal timestep embedding `[cos(t·f_i), sin(t·f_i)]`, f_i = 10000^(−i/half).
    ///
    /// Computed in f32 step by step as guided-diffusion's `timestep_embedding` does
    /// (f_i = exp(f32(−ln 10000)·i / half), t·f_i rounded to f32): at t = 999 the argument's
    /// f32 rounding moves cos/sin by up to ≈ 3e-5, and matching it keeps the network's ε
    /// within f32 noise of the reference at every timestep.
    fn timestep_embedding(&self, timesteps: &[f32], device: &Device) -> Tensor<2> {
        let dim = self.model_channels;
        let half = dim / 2;
        let neg_log = -(10000f64.ln()) as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|i| ((neg_log * i as f32) / half as f32).exp())
            .collect();
        let mut data = Vec::with_capacity(timesteps.len() * dim);
        for &t in timesteps {
            let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
            data.extend(args.iter().map(|&a| (a as f64).cos() as f32));
            data.extend(args.iter().map(|&a| (a as f64).sin() as f32));
            if dim % 2 == 1 {
                data.push(0.0);
            }
        }
        tweedie_core::tensor::from_vec(data, [timesteps.len(), dim], device)
    }

    /// The raw network output `[B, out_channels, H, W]` at 0-based network timesteps.
    pub fn forward(&self, x: Tensor<4>, timesteps: &[f32]) -> Tensor<4> {
        let emb = self.timestep_embedding(timesteps, &x.device());
        let emb = self.time2.forward(silu(self.time1.forward(emb)));
        let mut hs = Vec::with_capacity(self.input_blocks.len());
        let mut h = x;
        for b in &self.input_blocks {
            h = b.forward(h, &emb);
            hs.push(h.clone());
        }
        h = self.middle.forward(h, &emb);
        for b in &self.output_blocks {
            let skip = hs.pop().expect("one skip per output block");
            h = b.forward(Tensor::cat(vec![h, skip], 1), &emb);
        }
        self.out_conv.forward(silu(self.out_norm.forward(h)))
    }
}

/// Why a checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum UNetLoadError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The weights are unreadable or do not match.
    #[error(transparent)]
    Weights(#[from] WeightError),
}

/// A network output `[B, 3 or 6, H, W]` as ε and, with 6 channels, the variance channels v.
pub(crate) fn split_variance(out: Tensor<4>) -> (Tensor<4>, Option<Tensor<4>>) {
    if out.dims()[1] == 6 {
        (out.clone().narrow(1, 0, 3), Some(out.narrow(1, 3, 3)))
    } else {
        (out, None)
    }
}

/// The UNet seen as an ε-predictor (first 3 output channels; the learned-variance channels,
/// if any, are available from [`UNetEps::forward_with_variance`]).
#[derive(Debug, Clone)]
pub struct UNetEps {
    /// The network.
    pub net: UNet,
}

impl UNetEps {
    /// (ε, v) where v ∈ [−1, 1] interpolates log β̃_t (v = −1) and log β_t (v = 1), as in
    /// Improved DDPM; `None` without learned sigma. ε goes through the config's
    /// `mean_correction` when it has one.
    pub fn forward_with_variance(
        &self,
        x_t: Tensor<4>,
        level: NoiseLevel,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        let b = x_t.dims()[0];
        let out = self
            .net
            .forward(x_t.clone(), &vec![level.network_timestep() as f32; b]);
        let (eps, v) = split_variance(out);
        match &self.net.config().mean_correction {
            Some(m) => (m.correct_eps(x_t, eps, level.t, level.alpha_bar), v),
            None => (eps, v),
        }
    }
}

impl EpsModel for UNetEps {
    fn predict_eps(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4> {
        self.forward_with_variance(x_t, level).0
    }
    fn predict_eps_and_variance(
        &self,
        x_t: Tensor<4>,
        level: NoiseLevel,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        self.forward_with_variance(x_t, level)
    }
    fn has_learned_variance(&self) -> bool {
        self.net.config().learn_sigma
    }
}
