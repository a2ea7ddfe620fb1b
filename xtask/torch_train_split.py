"""One Adam training step (ε-MSE, batch 32) of a TorchScript ADM from ../shared/bench, split into
forward + backward and the optimizer step, to set beside `tweedie bench --only train`, which
prints the same split (docs/backends.md, "Where LibTorch's training gap lies").

    python xtask/torch_train_split.py ../shared/bench/adm32_ch32_embedded.torchscript.pt 2
"""
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
torch.jit.optimized_execution(False).__enter__()  # as pytorch_adm.py: eager execution
net = torch.jit.load(sys.argv[1])
opt = torch.optim.Adam(net.parameters(), 1e-4)
r = 64 if "adm64" in sys.argv[1] else 32
xb = torch.randn(32, 3, r, r)
tb = torch.randint(0, 1000, (32,))
fb, st = [], []
for i in range(6):
    t0 = time.perf_counter()
    loss = (net(xb, tb)[:, :3] - xb).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    t1 = time.perf_counter()
    opt.step()
    t2 = time.perf_counter()
    if i >= 2:  # two warm-ups
        fb.append(t1 - t0)
        st.append(t2 - t0)
fb.sort()
st.sort()
f, s = fb[len(fb) // 2], st[len(st) // 2]
print(f"pytorch train step b32: {s * 1e3:.0f} ms (forward+backward {f * 1e3:.0f} ms, Adam {(s - f) * 1e3:.0f} ms) -> {32 / s:.1f} images/s")
