//! `cargo xtask flex-repro`: minimal burn-flex reproducers for the CPU bottlenecks in
//! docs/backends.md, at the ADM UNet's shapes. Plain burn 0.22.1 (`features = ["flex",
//! "autodiff"]`), nothing of tweedie; `xtask/flex_repro_torch.py` times the same ops in PyTorch.
//! Threads: `RAYON_NUM_THREADS` (flex) and `--threads` (PyTorch). Fastest of 9 runs, in ms.

use burn::tensor::activation::{sigmoid, silu, softmax};
use burn::tensor::module::{attention, conv2d, interpolate, layer_norm};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

/// Fastest of 9 calls after one warm-up, in ms; `f` must finish its work (flex is eager).
fn best(mut f: impl FnMut() -> f32) -> f64 {
    std::hint::black_box(f());
    (0..9)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn randn<const D: usize>(shape: [usize; D], d: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), d)
}

/// One element, so that reading it costs nothing next to the op.
fn first<const D: usize>(x: Tensor<D>) -> f32 {
    x.flatten::<1>(0, D - 1).slice(0..1).into_scalar::<f32>()
}

/// GroupNorm(32) without affine, composed from primitive ops as a model would write it.
fn group_norm_composed(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let xg = x.reshape([b, 32, c / 32 * h * w]);
    let centred = xg.clone() - xg.mean_dim(2);
    let var = centred.clone().powf_scalar(2.0).mean_dim(2);
    (centred * var.add_scalar(1e-5).sqrt().recip()).reshape([b, c, h, w])
}

fn attention_plain(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f64) -> Tensor<4> {
    softmax(q.matmul(k.swap_dims(2, 3)).mul_scalar(scale), 3).matmul(v)
}

pub fn run() {
    let d = Device::flex();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!("burn-flex 0.22.1, RAYON_NUM_THREADS={threads}; fastest of 9, ms");

    // 1. Element-wise activations: scalar, branchy expf on one core.
    let x = randn([32, 64, 32, 32], &d); // 2.1 M elements, a UNet activation at batch 32
    println!(
        "silu [32,64,32,32]: {:.2}   sigmoid: {:.2}   x+x: {:.2}   exp: {:.2}",
        best(|| first(silu(x.clone()))),
        best(|| first(sigmoid(x.clone()))),
        best(|| first(x.clone() + x.clone())),
        best(|| first(x.clone().exp())),
    );

    // 2. GroupNorm composed from primitives vs the fused layer_norm kernel (same statistics).
    let n = 64 / 32 * 32 * 32;
    let ones = Tensor::<1>::ones([n], &d);
    println!(
        "group norm [32,64,32,32]: composed {:.2}   layer_norm over [32,32,{n}] {:.2}",
        best(|| first(group_norm_composed(x.clone()))),
        best(|| first(layer_norm(
            x.clone().reshape([32, 32, n]),
            ones.clone(),
            None,
            1e-5
        ))),
    );

    // 3. Nearest 2× upsampling: broadcast-expand materialisation vs interpolate.
    let u = randn([32, 128, 16, 16], &d);
    let up_expand = |x: Tensor<4>| {
        let [b, c, h, w] = x.dims();
        x.reshape([b, c, h, 1, w, 1])
            .expand([b, c, h, 2, w, 2])
            .reshape([b, c, 2 * h, 2 * w])
    };
    let up_interp = |x: Tensor<4>| {
        let [_, _, h, w] = x.dims();
        interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]),
        )
    };
    println!(
        "upsample2 [32,128,16,16]: expand+reshape {:.2}   interpolate {:.2}",
        best(|| first(up_expand(u.clone()))),
        best(|| first(up_interp(u.clone()))),
    );

    // 4. 3×3 convolution, forward and forward + input gradient (DPS), batch 1 and 32.
    let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    for (b, c, s) in [(1, 128, 16), (1, 64, 32), (32, 64, 32)] {
        let x = randn([b, c, s, s], &d);
        let w = randn([c, c, 3, 3], &d).mul_scalar(0.05);
        let bias = randn([c], &d);
        let fwd = best(|| {
            first(conv2d(
                x.clone(),
                w.clone(),
                Some(bias.clone()),
                opts.clone(),
            ))
        });
        let bwd = best(|| {
            let xa = x.clone().autodiff().require_grad();
            let y = conv2d(xa.clone(), w.clone(), Some(bias.clone()), opts.clone());
            let g = y.sum().backward();
            first(xa.grad(&g).unwrap())
        });
        let gflop = 2.0 * (b * c * c * 9 * s * s) as f64 / 1e9;
        println!(
            "conv3x3 [{b},{c},{s},{s}] {c}→{c}: forward {fwd:.2} ({:.1} GFLOP/s)   forward + input grad {bwd:.2}",
            gflop / (fwd / 1e3)
        );
    }

    // 5. Attention (4 heads × 32 channels, 256 tokens): fused op vs plain, inference and autodiff.
    let (b, h, t, ch) = (8, 4, 256, 32);
    let q = randn([b, h, t, ch], &d);
    let scale = 1.0 / (ch as f64).sqrt();
    let opts = AttentionModuleOptions {
        scale: Some(scale),
        ..Default::default()
    };
    let fused_ad = best(|| {
        let qa = q.clone().autodiff().require_grad();
        let y = attention(qa.clone(), qa.clone(), qa.clone(), None, None, opts);
        first(qa.grad(&y.sum().backward()).unwrap())
    });
    let plain_ad = best(|| {
        let qa = q.clone().autodiff().require_grad();
        let y = attention_plain(qa.clone(), qa.clone(), qa.clone(), scale);
        first(qa.grad(&y.sum().backward()).unwrap())
    });
    println!(
        "attention [{b},{h},{t},{ch}]: fused {:.2}   plain {:.2}   | autodiff fwd+bwd: fused {fused_ad:.2}   plain {plain_ad:.2}",
        best(|| first(attention(q.clone(), q.clone(), q.clone(), None, None, opts))),
        best(|| first(attention_plain(q.clone(), q.clone(), q.clone(), scale))),
    );

    // 6. Plain gemm: flex's f32 matmul at a conv-like size (gemm crate, AVX2 micro-kernel).
    let a = randn([1024, 1152], &d);
    let bm = randn([1152, 256], &d);
    let mm = best(|| first(a.clone().matmul(bm.clone())));
    println!(
        "matmul 1024×1152 · 1152×256: {mm:.2} ({:.1} GFLOP/s)",
        2.0 * 1024.0 * 1152.0 * 256.0 / 1e9 / (mm / 1e3)
    );
}
