"""PyTorch reference for `tweedie bench`'s DPS row, a companion to ../shared/bench/pytorch_adm.py
(same TorchScript files, same timing method: 3 warm-up calls, median of N, eager execution).

A DPS step = the UNet's forward at batch 1 plus the gradient of a squared norm of its output
with respect to the input, the network's parameters frozen (what tweedie_samplers::dps_step
differentiates). Prints one JSON object per model: {"model", "dps_ms"}.

    python xtask/torch_dps.py [--threads N] [--only NAME] [--reps N] [--bench-dir ../shared/bench]

Run by `cargo xtask bench --compare`.
"""
import argparse, json, os, time
import torch


def median(f, n):
    for _ in range(3):
        f()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--only")
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--bench-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench"))
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.jit.optimized_execution(False).__enter__()
meta = json.load(open(os.path.join(a.bench_dir, "models.json")))
for name, m in meta.items():
    if a.only and a.only != name:
        continue
    net = torch.jit.load(os.path.join(a.bench_dir, f"{name}.torchscript.pt"))
    for p in net.parameters():
        p.requires_grad_(False)
    r = m["create_model_args"]["image_size"]
    x0 = torch.randn(1, 3, r, r); t = torch.tensor([500])

    def step():
        x = x0.clone().requires_grad_(True)
        loss = net(x, t)[:, :3].pow(2).sum()
        (g,) = torch.autograd.grad(loss, x)
        return g

    print(json.dumps({"model": name, "dps_ms": 1e3 * median(step, a.reps), "threads": torch.get_num_threads()}), flush=True)
