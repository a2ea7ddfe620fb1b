//! diffusers' `UNet2DModel` in burn: modules and key names as diffusers 0.42 builds them
//! (`unet_2d.py`, `unet_2d_blocks.py`, `resnet.py`, `attention_processor.py`).

use super::config::{UNet2DConfig, down_kind};
use crate::layers::{
    Conv, GroupNorm, Init, Linear, ParamSource, scaled_dot_attention, silu, upsample2,
};
use crate::unet::{ResBlock, ResParts};
use burn::module::Module;
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor};

/// Counts the scalars a build takes from the wrapped source.
struct Counting<'a> {
    inner: &'a mut dyn ParamSource,
    scalars: usize,
}

impl ParamSource for Counting<'_> {
    fn values(&mut self, key: &str, shape: &[usize], init: Init) -> Vec<f32> {
        self.scalars += shape.iter().product::<usize>();
        self.inner.values(key, shape, init)
    }
}

/// What every layer of one network shares while it is built.
struct Builder<'a> {
    src: Counting<'a>,
    device: &'a Device,
    groups: usize,
    eps: f64,
    temb: usize,
    scale_shift: bool,
}

impl Builder<'_> {
    fn norm(&mut self, key: &str, channels: usize, groups: usize) -> GroupNorm {
        GroupNorm::new(&mut self.src, key, channels, groups, self.device).with_eps(self.eps)
    }
    fn conv(&mut self, key: &str, cin: usize, cout: usize, k: usize, stride: usize) -> Conv {
        Conv::new(&mut self.src, key, cin, cout, k, stride, false, self.device)
    }
    fn linear(&mut self, key: &str, cin: usize, cout: usize) -> Linear {
        Linear::new(&mut self.src, key, cin, cout, false, false, self.device)
    }
}

/// Which way a residual block resamples.
#[derive(Clone, Copy, PartialEq)]
enum Resample {
    None,
    Up,
    Down,
}

/// `ResnetBlock2D`: the ADM's residual block ([`ResBlock`]) under diffusers' key names
/// (`norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`, `conv_shortcut`), its output divided
/// by `output_scale_factor`.
#[derive(Module, Debug)]
struct Resnet {
    block: ResBlock,
    #[module(skip)]
    out_scale: f64,
}

impl Resnet {
    fn new(b: &mut Builder, p: &str, cin: usize, cout: usize, resample: Resample) -> Self {
        let groups = b.groups;
        let emb_out = if b.scale_shift { 2 * cout } else { cout };
        let block = ResBlock::from_parts(ResParts {
            in_norm: b.norm(&format!("{p}.norm1"), cin, groups),
            in_conv: b.conv(&format!("{p}.conv1"), cin, cout, 3, 1),
            emb: b.linear(&format!("{p}.time_emb_proj"), b.temb, emb_out),
            out_norm: b.norm(&format!("{p}.norm2"), cout, groups),
            out_conv: b.conv(&format!("{p}.conv2"), cout, cout, 3, 1),
            skip: (cin != cout).then(|| b.conv(&format!("{p}.conv_shortcut"), cin, cout, 1, 1)),
            up: resample == Resample::Up,
            down: resample == Resample::Down,
            scale_shift: b.scale_shift,
        });
        Self {
            block,
            out_scale: 1.0,
        }
    }

    fn with_output_scale(mut self, s: f64) -> Self {
        self.out_scale = s;
        self
    }

    fn forward(&self, x: Tensor<4>, temb: &Tensor<2>) -> Tensor<4> {
        divided(self.block.forward(x, temb), self.out_scale)
    }
}

/// `out / s` (diffusers' `output_scale_factor`, `rescale_output_factor`), skipped at 1.
fn divided(out: Tensor<4>, s: f64) -> Tensor<4> {
    if s == 1.0 { out } else { out.div_scalar(s) }
}

/// diffusers' `Attention` over all pixels with a residual connection: optional GroupNorm,
/// `to_q`/`to_k`/`to_v`, softmax(q kᵀ/√d) v per head, `to_out.0`; output (x + out)/rescale.
#[derive(Module, Debug)]
struct Attn {
    group_norm: Option<GroupNorm>,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    #[module(skip)]
    rescale: f64,
}

impl Attn {
    fn new(
        b: &mut Builder,
        p: &str,
        ch: usize,
        head_dim: Option<usize>,
        groups: Option<usize>,
    ) -> Self {
        let d = head_dim.unwrap_or(ch);
        Self {
            group_norm: groups.map(|g| b.norm(&format!("{p}.group_norm"), ch, g)),
            to_q: b.linear(&format!("{p}.to_q"), ch, ch),
            to_k: b.linear(&format!("{p}.to_k"), ch, ch),
            to_v: b.linear(&format!("{p}.to_v"), ch, ch),
            to_out: b.linear(&format!("{p}.to_out.0"), ch, ch),
            heads: ch / d,
            rescale: 1.0,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let (t, nh) = (h * w, self.heads);
        let d = c / nh;
        let normed = match &self.group_norm {
            Some(n) => n.forward(x.clone()),
            None => x.clone(),
        };
        let rows = normed
            .reshape([b, c, t])
            .swap_dims(1, 2)
            .reshape([b * t, c]);
        let split = |l: &Linear| {
            l.forward(rows.clone())
                .reshape([b, t, nh, d])
                .swap_dims(1, 2)
        }; // [B, heads, T, d]
        let (q, k, v) = (split(&self.to_q), split(&self.to_k), split(&self.to_v));
        let a = scaled_dot_attention(q, k, v, 1.0 / (d as f64).sqrt());
        let a = a.swap_dims(1, 2).reshape([b * t, c]);
        let out = self
            .to_out
            .forward(a)
            .reshape([b, t, c])
            .swap_dims(1, 2)
            .reshape([b, c, h, w]);
        divided(x + out, self.rescale)
    }
}

/// A level's resampler: a conv (`….0.conv`) or a residual block (`….0`).
#[derive(Module, Debug)]
struct Sampler {
    conv: Option<Conv>,
    resnet: Option<Resnet>,
    /// Downsampling conv with `downsample_padding` 0: pad right and bottom by one first.
    pad_after: bool,
    up: bool,
}

impl Sampler {
    fn forward(&self, x: Tensor<4>, temb: &Tensor<2>) -> Tensor<4> {
        if let Some(r) = &self.resnet {
            return r.forward(x, temb);
        }
        let conv = self
            .conv
            .as_ref()
            .expect("a sampler has a conv or a resnet");
        if self.up {
            conv.forward(upsample2(x))
        } else if self.pad_after {
            conv.forward(x.pad((0, 1, 0, 1), PadMode::Constant(0.0)))
        } else {
            conv.forward(x)
        }
    }
}

/// A down or up level: residual blocks, each followed by attention in `Attn…Block2D`, then
/// the resampler.
#[derive(Module, Debug)]
struct Level {
    resnets: Vec<Resnet>,
    attentions: Vec<Attn>,
    sampler: Option<Sampler>,
}

impl Level {
    fn layer(&self, j: usize, x: Tensor<4>, temb: &Tensor<2>) -> Tensor<4> {
        let x = self.resnets[j].forward(x, temb);
        match self.attentions.get(j) {
            Some(a) => a.forward(x),
            None => x,
        }
    }
}

/// The middle block: resnet, attention (if `add_attention`), resnet.
#[derive(Module, Debug)]
struct Mid {
    first: Resnet,
    attention: Option<Attn>,
    second: Resnet,
}

/// diffusers' `UNet2DModel` (positional time embedding, `DownBlock2D`/`AttnDownBlock2D`,
/// `UNetMidBlock2D`, `UpBlock2D`/`AttnUpBlock2D`), with diffusers' key names.
#[derive(Module, Debug)]
pub struct DiffusersUNet {
    conv_in: Conv,
    time1: Linear,
    time2: Linear,
    down: Vec<Level>,
    mid: Option<Mid>,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv,
    #[module(skip)]
    config: UNet2DConfig,
    #[module(skip)]
    num_parameters: usize,
}

impl DiffusersUNet {
    /// Builds the network for a validated `config`, taking every parameter from `src` under
    /// diffusers' keys (a [`crate::WeightMap`] reports missing, unexpected and mis-shaped ones).
    pub fn build(config: &UNet2DConfig, src: &mut dyn ParamSource, device: &Device) -> Self {
        let mut b = Builder {
            src: Counting {
                inner: src,
                scalars: 0,
            },
            device,
            groups: config.groups(),
            eps: config.norm_eps,
            temb: config.time_embed_dim(),
            scale_shift: config.scale_shift(),
        };
        let ch0 = config.block_out_channels[0];
        let conv_in = b.conv("conv_in", config.in_channels, ch0, 3, 1);
        let time1 = b.linear("time_embedding.linear_1", ch0, b.temb);
        let time2 = b.linear("time_embedding.linear_2", b.temb, b.temb);
        let down = down_levels(&mut b, config);
        let mid = config
            .mid_block_type
            .is_some()
            .then(|| mid_block(&mut b, config));
        let up = up_levels(&mut b, config);
        let norm_out = b.norm("conv_norm_out", ch0, b.groups);
        let conv_out = b.conv("conv_out", ch0, config.out_channels, 3, 1);
        let num_parameters = b.src.scalars;
        Self {
            conv_in,
            time1,
            time2,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            config: config.clone(),
            num_parameters,
        }
    }

    /// The config this network was built from.
    pub fn config(&self) -> &UNet2DConfig {
        &self.config
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// diffusers' `get_timestep_embedding` in f32: f_i = exp(−ln(10000)·i/(half − shift)),
    /// `[sin(t f), cos(t f)]`, or `[cos, sin]` with `flip_sin_to_cos`.
    fn timestep_embedding(&self, timesteps: &[f32], device: &Device) -> Tensor<2> {
        let dim = self.config.block_out_channels[0];
        let half = dim / 2;
        let neg_log = -(10000f64.ln()) as f32;
        let denom = half as f32 - self.config.freq_shift as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|i| (((neg_log * i as f32) / denom) as f64).exp() as f32)
            .collect();
        let mut data = Vec::with_capacity(timesteps.len() * dim);
        for &t in timesteps {
            let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
            let sin = args.iter().map(|&a| (a as f64).sin() as f32);
            let cos = args.iter().map(|&a| (a as f64).cos() as f32);
            if self.config.flip_sin_to_cos {
                data.extend(cos);
                data.extend(sin);
            } else {
                data.extend(sin);
                data.extend(cos);
            }
            if dim % 2 == 1 {
                data.push(0.0);
            }
        }
        tweedie_core::tensor::from_vec(data, [timesteps.len(), dim], device)
    }

    /// The network output `[B, out_channels, H, W]` at diffusers' 0-based timesteps.
    pub fn forward(&self, x: Tensor<4>, timesteps: &[f32]) -> Tensor<4> {
        let x = if self.config.center_input_sample {
            x.mul_scalar(2.0).sub_scalar(1.0)
        } else {
            x
        };
        let emb = self.timestep_embedding(timesteps, &x.device());
        let temb = self.time2.forward(silu(self.time1.forward(emb)));
        let mut h = self.conv_in.forward(x);
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for j in 0..level.resnets.len() {
                h = level.layer(j, h, &temb);
                skips.push(h.clone());
            }
            if let Some(s) = &level.sampler {
                h = s.forward(h, &temb);
                skips.push(h.clone());
            }
        }
        if let Some(m) = &self.mid {
            h = m.first.forward(h, &temb);
            if let Some(a) = &m.attention {
                h = a.forward(h);
            }
            h = m.second.forward(h, &temb);
        }
        for level in &self.up {
            for j in 0..level.resnets.len() {
                let skip = skips.pop().expect("one skip per up-level resnet");
                h = level.layer(j, Tensor::cat(vec![h, skip], 1), &temb);
            }
            if let Some(s) = &level.sampler {
                h = s.forward(h, &temb);
            }
        }
        self.conv_out.forward(silu(self.norm_out.forward(h)))
    }
}

fn down_levels(b: &mut Builder, c: &UNet2DConfig) -> Vec<Level> {
    let mut levels = Vec::new();
    let mut out = c.block_out_channels[0];
    for (i, kind) in c.down_block_types.iter().enumerate() {
        let cin = out;
        out = c.block_out_channels[i];
        let attn = down_kind(kind) == "AttnDownBlock2D";
        let p = format!("down_blocks.{i}");
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..c.layers_per_block {
            let ci = if j == 0 { cin } else { out };
            resnets.push(Resnet::new(
                b,
                &format!("{p}.resnets.{j}"),
                ci,
                out,
                Resample::None,
            ));
            if attn {
                let groups = Some(b.groups);
                attentions.push(Attn::new(
                    b,
                    &format!("{p}.attentions.{j}"),
                    out,
                    c.attention_head_dim,
                    groups,
                ));
            }
        }
        let last = i + 1 == c.block_out_channels.len();
        // Only the attention blocks read `downsample_type`; DownBlock2D always has a conv.
        let sampler = (!last).then(|| {
            let key = format!("{p}.downsamplers.0");
            if attn && c.downsample_type == "resnet" {
                Sampler {
                    conv: None,
                    resnet: Some(Resnet::new(b, &key, out, out, Resample::Down)),
                    pad_after: false,
                    up: false,
                }
            } else {
                let pad = c.downsample_padding;
                let conv = b
                    .conv(&format!("{key}.conv"), out, out, 3, 2)
                    .with_padding(pad);
                Sampler {
                    conv: Some(conv),
                    resnet: None,
                    pad_after: pad == 0,
                    up: false,
                }
            }
        });
        levels.push(Level {
            resnets,
            attentions,
            sampler,
        });
    }
    levels
}

fn mid_block(b: &mut Builder, c: &UNet2DConfig) -> Mid {
    let ch = *c
        .block_out_channels
        .last()
        .expect("validated: at least one level");
    let scale = c.mid_block_scale_factor;
    let first =
        Resnet::new(b, "mid_block.resnets.0", ch, ch, Resample::None).with_output_scale(scale);
    // diffusers: the middle attention has a GroupNorm of `attn_norm_num_groups`, else of
    // `norm_num_groups` only with the `default` time scale-shift.
    let groups = c
        .attn_norm_num_groups
        .or((!c.scale_shift()).then_some(b.groups));
    let attention = c.add_attention.then(|| {
        let mut a = Attn::new(
            b,
            "mid_block.attentions.0",
            ch,
            c.attention_head_dim,
            groups,
        );
        a.rescale = scale;
        a
    });
    let second =
        Resnet::new(b, "mid_block.resnets.1", ch, ch, Resample::None).with_output_scale(scale);
    Mid {
        first,
        attention,
        second,
    }
}

fn up_levels(b: &mut Builder, c: &UNet2DConfig) -> Vec<Level> {
    let rev: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
    let n = rev.len();
    let mut levels = Vec::new();
    let mut out = rev[0];
    for (i, kind) in c.up_block_types.iter().enumerate() {
        let prev = out;
        out = rev[i];
        let skip_in = rev[(i + 1).min(n - 1)];
        let attn = down_kind(kind) == "AttnUpBlock2D";
        let p = format!("up_blocks.{i}");
        let layers = c.layers_per_block + 1;
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..layers {
            let skip = if j + 1 == layers { skip_in } else { out };
            let ci = if j == 0 { prev } else { out };
            resnets.push(Resnet::new(
                b,
                &format!("{p}.resnets.{j}"),
                ci + skip,
                out,
                Resample::None,
            ));
            if attn {
                let groups = Some(b.groups);
                attentions.push(Attn::new(
                    b,
                    &format!("{p}.attentions.{j}"),
                    out,
                    c.attention_head_dim,
                    groups,
                ));
            }
        }
        let sampler = (i + 1 != n).then(|| {
            let key = format!("{p}.upsamplers.0");
            if attn && c.upsample_type == "resnet" {
                Sampler {
                    conv: None,
                    resnet: Some(Resnet::new(b, &key, out, out, Resample::Up)),
                    pad_after: false,
                    up: true,
                }
            } else {
                Sampler {
                    conv: Some(b.conv(&format!("{key}.conv"), out, out, 3, 1)),
                    resnet: None,
                    pad_after: false,
                    up: true,
                }
            }
        });
        levels.push(Level {
            resnets,
            attentions,
            sampler,
        });
    }
    levels
}
