"""PyTorch timings of the ops in xtask/src/flex_repro.rs (`cargo xtask flex-repro`), same shapes,
same method (fastest of 9 after a warm-up, ms), for the table in docs/backends.md.

    python xtask/flex_repro_torch.py [--threads N]
"""
import argparse, os, time
import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser(); ap.add_argument("--threads", type=int, default=os.cpu_count())
a = ap.parse_args(); torch.set_num_threads(a.threads)


def best(f):
    f()
    ts = []
    for _ in range(9):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return 1e3 * min(ts)


print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fastest of 9, ms")
with torch.no_grad():
    x = torch.randn(32, 64, 32, 32)
    print(f"silu [32,64,32,32]: {best(lambda: F.silu(x)):.2f}   sigmoid: {best(lambda: torch.sigmoid(x)):.2f}   "
          f"x+x: {best(lambda: x + x):.2f}   exp: {best(lambda: torch.exp(x)):.2f}")
    print(f"group norm [32,64,32,32]: F.group_norm {best(lambda: F.group_norm(x, 32, eps=1e-5)):.2f}")
    u = torch.randn(32, 128, 16, 16)
    print(f"upsample2 [32,128,16,16]: interpolate {best(lambda: F.interpolate(u, scale_factor=2, mode='nearest')):.2f}")
for b, c, s in [(1, 128, 16), (1, 64, 32), (32, 64, 32)]:
    x = torch.randn(b, c, s, s); w = torch.randn(c, c, 3, 3) * 0.05; bias = torch.randn(c)
    with torch.no_grad():
        fwd = best(lambda: F.conv2d(x, w, bias, padding=1))

    def fb():
        xa = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.conv2d(xa, w, bias, padding=1).sum(), xa)
    gflop = 2 * b * c * c * 9 * s * s / 1e9
    print(f"conv3x3 [{b},{c},{s},{s}] {c}→{c}: forward {fwd:.2f} ({gflop / (fwd / 1e3):.1f} GFLOP/s)   forward + input grad {best(fb):.2f}")
q = torch.randn(8, 4, 256, 32)
with torch.no_grad():
    sdpa = best(lambda: F.scaled_dot_product_attention(q, q, q))


def ad():
    qa = q.clone().requires_grad_(True)
    torch.autograd.grad(F.scaled_dot_product_attention(qa, qa, qa).sum(), qa)
print(f"attention [8,4,256,32]: sdpa {sdpa:.2f}   | autograd fwd+bwd {best(ad):.2f}")
A = torch.randn(1024, 1152); B = torch.randn(1152, 256)
mm = best(lambda: A @ B)
print(f"matmul 1024×1152 · 1152×256: {mm:.2f} ({2 * 1024 * 1152 * 256 / 1e9 / (mm / 1e3):.1f} GFLOP/s)")
