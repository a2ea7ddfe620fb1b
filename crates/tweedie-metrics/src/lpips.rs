//! LPIPS v0.1 (Zhang et al. 2018) with AlexNet or VGG16 backbones and the real weights.
//!
//! Weights: torchvision backbone convs as `features.N.{weight,bias}` and the five LPIPS
//! linear layers as `lin{0..4}.weight` (`[1, C, 1, 1]`), in one safetensors file.
//! Images smaller than 32×32 are bilinearly upsampled to 64×64 first (AlexNet's stride-4
//! stem and pools leave no spatial extent below that).

use burn::tensor::module::{conv2d, interpolate, max_pool2d};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor};
use std::path::Path;
use tweedie_unet::{WeightError, WeightMap};

/// Errors loading or applying LPIPS.
#[derive(Debug, thiserror::Error)]
pub enum LpipsError {
    /// The weights file could not be read.
    #[error("LPIPS weights")]
    Load(#[from] WeightError),
    /// The weights are incomplete or mis-shaped, or not where they were looked for.
    #[error("LPIPS weights: {0}")]
    Weights(String),
    /// The two batches differ in shape.
    #[error("image shapes differ: {0:?} vs {1:?}")]
    ShapeMismatch([usize; 4], [usize; 4]),
}

/// The feature network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backbone {
    /// AlexNet (the LPIPS default).
    Alex,
    /// VGG16.
    Vgg,
}

impl Backbone {
    /// (feature index, kernel, stride, padding, max-pool before it) of every conv; a tap
    /// (LPIPS layer) follows the ReLU of the convs listed in [`Backbone::taps`].
    #[allow(clippy::type_complexity)] // a table of five small integers per conv
    fn convs(self) -> Vec<(usize, usize, usize, usize, Option<(usize, usize)>)> {
        match self {
            Backbone::Alex => vec![
                (0, 11, 4, 2, None),
                (3, 5, 1, 2, Some((3, 2))),
                (6, 3, 1, 1, Some((3, 2))),
                (8, 3, 1, 1, None),
                (10, 3, 1, 1, None),
            ],
            Backbone::Vgg => {
                let pools = [5usize, 10, 17, 24];
                [0usize, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
                    .into_iter()
                    .map(|i| (i, 3, 1, 1, pools.contains(&i).then_some((2, 2))))
                    .collect()
            }
        }
    }

    fn taps(self) -> &'static [usize] {
        match self {
            Backbone::Alex => &[0, 3, 6, 8, 10],
            Backbone::Vgg => &[2, 7, 14, 21, 28],
        }
    }
}

struct ConvLayer {
    index: usize,
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: usize,
    pool: Option<(usize, usize)>,
}

/// An LPIPS network ready to compare image batches.
pub struct Lpips {
    backbone: Backbone,
    convs: Vec<ConvLayer>,
    lins: Vec<Tensor<4>>,
}

impl Lpips {
    /// Loads LPIPS weights for `backbone` from a safetensors file.
    pub fn load(
        backbone: Backbone,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self, LpipsError> {
        let path = path.as_ref();
        let w = WeightMap::load(path)?;
        Self::from_weights(backbone, w, &path.display().to_string(), device)
    }

    /// Loads LPIPS weights for `backbone` from safetensors bytes in memory; `source` names
    /// them in errors.
    pub fn load_bytes(
        backbone: Backbone,
        bytes: &[u8],
        source: &str,
        device: &Device,
    ) -> Result<Self, LpipsError> {
        let w = WeightMap::load_safetensors_bytes(bytes, source)?;
        Self::from_weights(backbone, w, source, device)
    }

    fn from_weights(
        backbone: Backbone,
        mut w: WeightMap,
        source: &str,
        device: &Device,
    ) -> Result<Self, LpipsError> {
        let shapes: std::collections::BTreeMap<String, Vec<usize>> =
            w.shapes().map(|(k, s)| (k.clone(), s.clone())).collect();
        let mut get = |key: String| -> Result<(Vec<usize>, Vec<f32>), LpipsError> {
            let shape = shapes.get(&key).cloned().ok_or_else(|| {
                LpipsError::Weights(format!(
                    "{source}: missing {key} (is this the {backbone:?} file?)"
                ))
            })?;
            let v = w.take(&key, &shape).expect("present");
            Ok((shape, v))
        };
        let mut convs = Vec::new();
        for (index, _k, stride, padding, pool) in backbone.convs() {
            let (ws, wv) = get(format!("features.{index}.weight"))?;
            let (_, bv) = get(format!("features.{index}.bias"))?;
            if ws.len() != 4 {
                return Err(LpipsError::Weights(format!(
                    "{source}: features.{index}.weight has shape {ws:?}, expected 4-D"
                )));
            }
            let weight = tweedie_core::tensor::from_vec(wv, [ws[0], ws[1], ws[2], ws[3]], device);
            let bias = tweedie_core::tensor::from_vec(bv, [ws[0]], device);
            convs.push(ConvLayer {
                index,
                weight,
                bias,
                stride,
                padding,
                pool,
            });
        }
        let mut lins = Vec::new();
        for i in 0..5 {
            let (s, v) = get(format!("lin{i}.weight"))?;
            let c = s.iter().product::<usize>();
            lins.push(tweedie_core::tensor::from_vec(v, [1, c, 1, 1], device));
        }
        Ok(Self {
            backbone,
            convs,
            lins,
        })
    }

    /// The LPIPS-alex weights: `$TWEEDIE_ASSETS/lpips_alexnet.safetensors` when that
    /// variable is set, else the copy of this crate's `assets/lpips_alexnet.safetensors`
    /// compiled into the binary (so that an installed binary needs no source tree).
    pub fn alex_default(device: &Device) -> Result<Self, LpipsError> {
        if std::env::var_os("TWEEDIE_ASSETS").is_some() {
            let path = default_alex_path();
            if !path.exists() {
                return Err(LpipsError::Weights(format!(
                    "{} does not exist (unset TWEEDIE_ASSETS to use the weights built into the binary)",
                    path.display()
                )));
            }
            return Self::load(Backbone::Alex, path, device);
        }
        Self::load_bytes(
            Backbone::Alex,
            EMBEDDED_ALEX,
            "the built-in LPIPS-alex weights",
            device,
        )
    }

    /// Which backbone this is.
    pub fn backbone(&self) -> Backbone {
        self.backbone
    }

    /// Runs the backbone on `[−1, 1]` images (after LPIPS's scaling layer), handing every
    /// conv's post-ReLU output to `tap` with the conv's feature index; returns the last one.
    fn run_backbone(&self, x: Tensor<4>, mut tap: impl FnMut(usize, &Tensor<4>)) -> Tensor<4> {
        let device = x.device();
        let shift =
            tweedie_core::tensor::from_vec(vec![-0.030, -0.088, -0.188], [1, 3, 1, 1], &device);
        let scale =
            tweedie_core::tensor::from_vec(vec![0.458, 0.448, 0.450], [1, 3, 1, 1], &device);
        let mut h = (x - shift) / scale;
        for c in &self.convs {
            if let Some((k, s)) = c.pool {
                h = max_pool2d(h, MaxPoolOptions::new([k, k]).with_stride([s, s]));
            }
            h = conv2d(
                h,
                c.weight.clone(),
                Some(c.bias.clone()),
                ConvOptions::new([c.stride; 2], [c.padding; 2], [1, 1], 1),
            );
            h = burn::tensor::activation::relu(h);
            tap(c.index, &h);
        }
        h
    }

    fn features(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut taps = Vec::new();
        self.run_backbone(x, |index, h| {
            if self.backbone.taps().contains(&index) {
                taps.push(h.clone());
            }
        });
        taps
    }

    /// The last conv's output after its ReLU (AlexNet: conv5, `[B, 256, h, w]`) for `[−1, 1]`
    /// images, through LPIPS's scaling layer `(x − shift)/scale` first.
    pub(crate) fn last_conv_features(&self, x: Tensor<4>) -> Tensor<4> {
        self.run_backbone(x, |_, _| {})
    }

    /// LPIPS distance per batch item between `[−1, 1]` images `a` and `b`.
    pub fn distance(&self, a: &Tensor<4>, b: &Tensor<4>) -> Result<Vec<f64>, LpipsError> {
        if a.dims() != b.dims() {
            return Err(LpipsError::ShapeMismatch(a.dims(), b.dims()));
        }
        let [n, _, h, w] = a.dims();
        let prep = |x: &Tensor<4>| {
            if h.min(w) < 32 {
                let opts =
                    InterpolateOptions::new(InterpolateMode::Bilinear).with_output_size([64, 64]);
                interpolate(x.clone(), opts)
            } else {
                x.clone()
            }
        };
        let (fa, fb) = (self.features(prep(a)), self.features(prep(b)));
        let mut total: Option<Tensor<1>> = None;
        for ((xa, xb), lin) in fa.into_iter().zip(fb).zip(&self.lins) {
            let norm = |f: Tensor<4>| {
                let len = f
                    .clone()
                    .powf_scalar(2.0)
                    .sum_dim(1)
                    .sqrt()
                    .add_scalar(1e-10);
                f / len
            };
            let d = (norm(xa) - norm(xb)).powf_scalar(2.0) * lin.clone();
            let per_item = d
                .sum_dim(1)
                .reshape([n as i32, -1])
                .mean_dim(1)
                .reshape([n]);
            total = Some(match total {
                Some(t) => t + per_item,
                None => per_item,
            });
        }
        Ok(tweedie_core::tensor::to_vec(&total.expect("five layers"))
            .iter()
            .map(|v| *v as f64)
            .collect())
    }
}

/// This crate's `assets/lpips_alexnet.safetensors`, compiled in (inside the crate, so that
/// the published package carries it).
static EMBEDDED_ALEX: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/lpips_alexnet.safetensors"
));

/// `lpips_alexnet.safetensors` in `$TWEEDIE_ASSETS` when that variable is set, else this
/// crate's `assets/lpips_alexnet.safetensors`: the file the built-in weights were compiled
/// from.
pub fn default_alex_path() -> std::path::PathBuf {
    std::env::var_os("TWEEDIE_ASSETS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"))
        .join("lpips_alexnet.safetensors")
}
