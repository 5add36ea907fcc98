"""Side-by-side timing of diagfim and PyTorch + BackPACK on the same model and inputs.

Run from the project root on a machine with a GPU, PyTorch and BackPACK (the wheels are in
../shared/gpu/whl), after `cargo build --release --examples`:

    python3 benches/compare_pytorch.py [--layers 784,512,256,128,10] [--inputs 256] [--samples 16]

Without a GPU, `--device cpu --engine cpu` checks the script end to end (the times then
compare CPU implementations only).

It asks diagfim's bench example to write the model (safetensors, PyTorch layout) and the inputs,
loads both into torch, times BackPACK's DiagGGNExact, BatchGrad on the B·N sampled labels and
BatchDiagHessian on them (skipped past --max-hessian-labels to bound memory), then runs
diagfim's bench on the same model and prints both.
"""
import argparse
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from safetensors.torch import load_file


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps, dev):
    """Median wall time of `fn` over `reps` runs after one warm-up."""
    sync(dev)
    fn()
    sync(dev)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="784,512,256,128,10")
    ap.add_argument("--activation", default="sigmoid")
    ap.add_argument("--inputs", type=int, default=256)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--max-hessian-labels", type=int, default=1024)
    ap.add_argument("--bench", default="target/release/examples/bench_analysis")
    ap.add_argument("--tmp", default="/tmp/diagfim_compare.safetensors")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="torch device (cpu only to check the script without a GPU)")
    ap.add_argument("--engine", default="gpu", help="diagfim engine: gpu or cpu")
    ap.add_argument("--cli", default="target/release/diagfim")
    a = ap.parse_args()

    common = ["--layers", a.layers, "--activation", a.activation, "--inputs", str(a.inputs),
              "--samples", str(a.samples), "--engine", a.engine]
    # The bench example's model is deterministic (seed 0): write it and the inputs once.
    subprocess.run([a.bench, *common, "--reps", "1", "--save-model", a.tmp], check=True,
                   stdout=subprocess.DEVNULL)

    # BackPACK's hooks warn that inputs need no gradient; that is intended here.
    warnings.filterwarnings("ignore", message="Full backward hook")
    from backpack import backpack, extend
    from backpack.extensions import BatchDiagHessian, BatchGrad, DiagGGNExact

    dev = torch.device(a.device)
    sd = load_file(a.tmp)
    widths = [int(w) for w in a.layers.split(",")]
    act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU,
           "softplus": torch.nn.Softplus, "logsigmoid": torch.nn.LogSigmoid}[a.activation]
    mods = []
    for i in range(len(widths) - 1):
        mods.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            mods.append(act())
    model = torch.nn.Sequential(*mods)
    model.load_state_dict(sd)
    model = extend(model.to(dev))
    x = torch.from_numpy(np.load(a.tmp + ".x.npy")).to(dev)
    b, n = a.inputs, a.samples
    loss_sum = extend(torch.nn.CrossEntropyLoss(reduction="sum"))

    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)
    y = torch.multinomial(p, n, replacement=True).reshape(-1)  # B·N sampled labels
    xr = x.repeat_interleave(n, dim=0)

    def ggn():
        model.zero_grad()
        loss = loss_sum(model(x), y[::n])
        with backpack(DiagGGNExact()):
            loss.backward()

    def batch_grad():
        model.zero_grad()
        loss = loss_sum(model(xr), y)
        with backpack(BatchGrad()):
            loss.backward()

    results = [("BackPACK DiagGGNExact (B inputs)", timed(ggn, a.reps, dev)),
               (f"BackPACK BatchGrad ({b * n} sampled labels)", timed(batch_grad, a.reps, dev))]
    m = min(b * n, a.max_hessian_labels)

    def batch_diag_hessian():
        model.zero_grad()
        loss = loss_sum(model(xr[:m]), y[:m])
        with backpack(BatchDiagHessian(), BatchGrad()):
            loss.backward()

    t = timed(batch_diag_hessian, max(1, a.reps // 5), dev)
    results.append((f"BackPACK BatchDiagHessian+BatchGrad ({m} labels), scaled to {b * n}",
                    t * (b * n) / m))

    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"MLP {a.layers} {a.activation}, B = {b}, N = {n}, torch {torch.__version__} on {name}")
    for name, t in results:
        print(f"  {name:<62} {t * 1e3:9.2f} ms")
    # Cross-check: diagfim's exact Fisher diagonal against BackPACK's DiagGGNExact (for the
    # softmax cross-entropy, the GGN is the Fisher; sum reduction, so divide by B).
    ggn()
    want = {name: p.diag_ggn_exact.detach().double().cpu() / b
            for name, p in model.named_parameters()}
    result = a.tmp + ".result.safetensors"
    subprocess.run([a.cli, "analyze", "--model", a.tmp, "--inputs", a.tmp + ".x.npy",
                    "--samples", str(n), "--engine", a.engine, "--out", result],
                   check=True, stdout=subprocess.DEVNULL)
    got = load_file(result)
    worst = max(float((got["fisher/" + k].double() - v).abs().max() / v.abs().max())
                for k, v in want.items())
    print(f"  fisher vs DiagGGNExact/B: max relative difference {worst:.2e} "
          f"(torch in f32; ≤ 1e-5 expected)")
    os.remove(result)
    print("diagfim (everything in the contract except ef):")
    out = subprocess.run([a.bench, *common, "--reps", str(a.reps)], check=True,
                         capture_output=True, text=True).stdout
    print("  " + out.replace("\n", "\n  "))
    os.remove(a.tmp)
    os.remove(a.tmp + ".x.npy")


if __name__ == "__main__":
    sys.exit(main())
