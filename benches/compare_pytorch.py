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

In-process mode (`--mode inprocess`, the default for `--device cpu`): everything runs in one
Python process on the CPU, with the same thread count on both sides. The model is built in
torch (784-256-128-64-10 sigmoid by default, seeded), diagfim gets the same weights and inputs
through its Python package (converted once, before the timed region: no file IO), and the
script times (median of --reps after one warm-up):

    (a) diagfim keys=["fisher"], bounds="none"        the exact Fisher diagonal only
    (b) diagfim, every key, bounds="all"              the full analysis (no data labels)
    (c) BackPACK DiagGGNExact (f32)                   the exact Fisher diagonal
    (d) BackPACK BatchGrad + BatchDiagHessian         per-sample Î1 = g², Î2 = diag H on the
        on B·N labels sampled from the softmax         same B·N sampled labels, in chunks

and checks that (a)'s Fisher equals (c)'s DiagGGNExact / B (CrossEntropyLoss with
reduction="sum" sums the per-input Fisher; diagfim reports their mean):

    python3 benches/compare_pytorch.py --device cpu [--inputs 1024] [--samples 16] \
        [--threads T] [--reps 5] [--json out.json]
"""
import argparse
import json
import os
import platform
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
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["auto", "inprocess", "bench"], default="auto",
                    help="inprocess: diagfim's Python package and torch in this process (CPU "
                    "only); bench: diagfim's bench example and CLI as subprocesses; auto: "
                    "inprocess for --device cpu, else bench")
    ap.add_argument("--layers", default=None,
                    help="widths (default 784,256,128,64,10 inprocess, 784,512,256,128,10 bench)")
    ap.add_argument("--activation", default="sigmoid")
    ap.add_argument("--inputs", type=int, default=None,
                    help="B (default 1024 inprocess, 256 bench)")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--reps", type=int, default=None,
                    help="timed repetitions after one warm-up (default 5 inprocess, 10 bench)")
    ap.add_argument("--max-hessian-labels", type=int, default=1024,
                    help="bench mode: BatchDiagHessian on at most this many labels, scaled")
    ap.add_argument("--bench", default="target/release/examples/bench_analysis")
    ap.add_argument("--tmp", default="/tmp/diagfim_compare.safetensors")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="torch device (cpu only to check the script without a GPU)")
    ap.add_argument("--engine", default="gpu", help="bench mode: diagfim engine, gpu or cpu")
    ap.add_argument("--cli", default="target/release/diagfim")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="inprocess: torch.set_num_threads(T) and diagfim threads=T")
    ap.add_argument("--seed", type=int, default=0, help="inprocess: seed of model, inputs, labels")
    ap.add_argument("--chunk", type=int, default=512,
                    help="inprocess (d): sampled labels per BackPACK backward pass (memory)")
    ap.add_argument("--per-sample-reps", type=int, default=None,
                    help="inprocess (d): timed repetitions of the per-sample route (default: "
                    "--reps, at most 3)")
    ap.add_argument("--json", default=None, help="inprocess: write the numbers to this file")
    a = ap.parse_args()
    mode = a.mode
    if mode == "auto":
        mode = "inprocess" if a.device == "cpu" else "bench"
    if mode == "inprocess":
        if a.device != "cpu":
            ap.error("--mode inprocess runs on the CPU only (--device cpu)")
        a.layers = a.layers or "784,256,128,64,10"
        a.inputs = a.inputs or 1024
        a.reps = a.reps or 5
        return run_inprocess(a)
    a.layers = a.layers or "784,512,256,128,10"
    a.inputs = a.inputs or 256
    a.reps = a.reps or 10
    return run_bench(a)


def run_bench(a):
    """diagfim's bench example and CLI as subprocesses, BackPACK on --device."""

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


ACTIVATIONS = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU,
               "softplus": torch.nn.Softplus, "logsigmoid": torch.nn.LogSigmoid}


def cpu_model_name():
    """The CPU's model name (Linux /proc/cpuinfo, else platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def median_time(fn, reps, warmup=None):
    """Median wall time of `fn` over `reps` runs after one warm-up (`warmup`, else `fn`),
    all times, and the last run's value."""
    (warmup or fn)()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        value = fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2], ts, value


def run_inprocess(a):
    """diagfim's Python package and PyTorch + BackPACK in this process, on the CPU."""
    import diagfim

    # BackPACK's hooks warn that inputs need no gradient; that is intended here.
    warnings.filterwarnings("ignore", message="Full backward hook")
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad, DiagGGNExact

    try:
        from backpack.extensions import BatchDiagHessian
    except ImportError:  # older BackPACK: DiagHessian per sample (one backward per label)
        BatchDiagHessian = None
        from backpack.extensions import DiagHessian

    threads = a.threads if a.threads and a.threads > 0 else os.cpu_count()
    a.reps = max(1, a.reps)
    torch.set_num_threads(threads)
    b, n = a.inputs, a.samples
    widths = [int(w) for w in a.layers.split(",")]
    act = ACTIVATIONS[a.activation]

    # The model and inputs, seeded (torch's default Linear initialisation).
    torch.manual_seed(a.seed)
    mods = []
    for i in range(len(widths) - 1):
        mods.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            mods.append(act())
    model = torch.nn.Sequential(*mods)
    x = torch.randn(b, widths[0], generator=torch.Generator().manual_seed(a.seed + 1))

    # diagfim's side, converted once outside the timed region: float64 copies of the same
    # float32 weights and inputs (exact), no file IO.
    mlp = diagfim.load_model(model)
    x64 = np.ascontiguousarray(x.double().numpy())
    common = dict(engine="cpu", samples=n, seed=a.seed, threads=threads)

    def fisher_only():
        return diagfim.analyze(mlp, x64, keys=["fisher"], bounds="none", **common)

    def full():
        return diagfim.analyze(mlp, x64, bounds="all", **common)

    model = extend(model)
    loss_sum = extend(torch.nn.CrossEntropyLoss(reduction="sum"))
    y_any = torch.zeros(b, dtype=torch.long)  # the GGN of the cross-entropy ignores labels

    def ggn():
        model.zero_grad()
        loss = loss_sum(model(x), y_any)
        with backpack(DiagGGNExact()):
            loss.backward()

    # (d) the per-sample route: labels sampled from the softmax (N per input, seeded), per
    # sample gradients g (Î1 = g²) and diagonal Hessians (Î2), in chunks of whole inputs;
    # reduced to what diagfim's Monte-Carlo keys report: means of Î1, Î2 and the per-input
    # sample variances over the N labels, averaged over inputs.
    per_chunk = max(1, a.chunk // n)  # inputs per backward pass
    params = list(model.parameters())

    def per_sample(limit_inputs=None):
        gen = torch.Generator().manual_seed(a.seed + 2)
        stop = b if limit_inputs is None else min(b, limit_inputs)
        acc = [[torch.zeros_like(p) for _ in range(4)] for p in params]
        for s in range(0, stop, per_chunk):
            xc = x[s:min(stop, s + per_chunk)]
            with torch.no_grad():
                prob = torch.softmax(model(xc), dim=1)
            y = torch.multinomial(prob, n, replacement=True, generator=gen).reshape(-1)
            xr = xc.repeat_interleave(n, dim=0)
            model.zero_grad()
            if BatchDiagHessian is not None:
                loss = loss_sum(model(xr), y)
                with backpack(BatchGrad(), BatchDiagHessian()):
                    loss.backward()
                hs = [p.diag_h_batch for p in params]
            else:
                # DiagHessian per label (the Hessian of one sample's loss).
                hs = [[] for _ in params]
                for i in range(len(y)):
                    model.zero_grad()
                    loss = loss_sum(model(xr[i:i + 1]), y[i:i + 1])
                    with backpack(DiagHessian()):
                        loss.backward()
                    for k, p in enumerate(params):
                        hs[k].append(p.diag_h.detach().clone())
                hs = [torch.stack(h) for h in hs]
                model.zero_grad()
                loss = loss_sum(model(xr), y)
                with backpack(BatchGrad()):
                    loss.backward()
            m = len(xc)
            for k, p in enumerate(params):
                i1 = (p.grad_batch ** 2).reshape(m, n, *p.shape)
                i2 = hs[k].reshape(m, n, *p.shape)
                acc[k][0] += i1.sum(dim=(0, 1))
                acc[k][1] += i2.sum(dim=(0, 1))
                acc[k][2] += i1.var(dim=1).sum(dim=0)
                acc[k][3] += i2.var(dim=1).sum(dim=0)
            for p in params:
                for attr in ("grad_batch", "diag_h_batch", "diag_h"):
                    if hasattr(p, attr):
                        delattr(p, attr)
        return [[t / (stop * (n if j < 2 else 1)) for j, t in enumerate(a4)] for a4 in acc]

    hess_name = "BatchDiagHessian" if BatchDiagHessian is not None else "DiagHessian per label"
    t_a, ts_a, result = median_time(fisher_only, a.reps)
    t_b, ts_b, full_result = median_time(full, a.reps)
    t_c, ts_c, _ = median_time(ggn, a.reps)
    d_reps = max(1, a.per_sample_reps or min(a.reps, 3))
    t_d, ts_d, stats = median_time(per_sample, d_reps, warmup=lambda: per_sample(per_chunk))

    # Agreement: diagfim's Fisher (mean over inputs) against DiagGGNExact / B (float32).
    ggn()
    worst_ggn = 0.0
    for name, p in model.named_parameters():
        want = p.diag_ggn_exact.detach().double() / b
        got = torch.tensor(result["fisher/" + name])
        worst_ggn = max(worst_ggn, float((got - want).abs().max() / want.abs().max()))
    # The per-sample route estimates what diagfim computes exactly: its mean Î1, Î2 over the
    # B·N labels differ from the Fisher by Monte-Carlo error of variance var1/(B·N),
    # var2/(B·N) per entry (z-scores of RMS ≈ 1), and its per-input sample variances over the
    # N labels, averaged over inputs, estimate var1 and var2 (ratio of sums ≈ 1).
    z2 = {"Î1": [0.0, 0], "Î2": [0.0, 0]}
    var_ratio = {"Î1": [0.0, 0.0], "Î2": [0.0, 0.0]}
    for (name, _), st in zip(model.named_parameters(), stats):
        f = np.asarray(full_result["fisher/" + name])
        for j, (what, key) in enumerate((("Î1", "var1"), ("Î2", "var2"))):
            var = np.asarray(full_result[f"{key}/{name}"])
            est = st[j].double().numpy()
            ok = var > 1e-300  # Î2 of the last layer is exact (var2 = 0)
            z = (est[ok] - f[ok]) / np.sqrt(var[ok] / (b * n))
            z2[what][0] += float((z * z).sum())
            z2[what][1] += int(ok.sum())
            var_ratio[what][0] += float(st[2 + j].double().sum())
            var_ratio[what][1] += float(var.sum())
    z_rms = {k: (v[0] / v[1]) ** 0.5 if v[1] else float("nan") for k, v in z2.items()}
    var_ratio = {k: v[0] / v[1] if v[1] else float("nan") for k, v in var_ratio.items()}

    rows = [
        ("a", 'diagfim keys=["fisher"], bounds="none"', t_a),
        ("b", f'diagfim full: {len(full_result.computed_keys)} keys, bounds="all"', t_b),
        ("c", "BackPACK DiagGGNExact (f32)", t_c),
        ("d", f"BackPACK BatchGrad + {hess_name} ({b * n} labels)", t_d),
    ]
    versions = {
        "torch": torch.__version__,
        "backpack-for-pytorch": package_version("backpack-for-pytorch"),
        "diagfim": diagfim.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    print(f"MLP {a.layers} {a.activation}, B = {b}, N = {n}, seed {a.seed}; CPU: "
          f"{cpu_model_name()} ({os.cpu_count()} logical cores), {threads} threads on both "
          "sides (torch.set_num_threads, diagfim threads=)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"median of {a.reps} runs after one warm-up ((d): {d_reps} runs)\n")
    print("| run | what | time (ms) | / DiagGGNExact |")
    print("|---|---|---:|---:|")
    for key, what, t in rows:
        print(f"| {key} | {what} | {t * 1e3:.2f} | {t / t_c:.2f}× |")
    print(f"\n(d) / (b): {t_d / t_b:.2f}× (the per-sample route against diagfim's full analysis)")
    print(f"fisher vs DiagGGNExact/B: max relative difference {worst_ggn:.2e} "
          "(torch in f32; ≤ 1e-5 expected)")
    print(f"per-sample route vs diagfim: RMS z-score of mean Î1 − fisher {z_rms['Î1']:.2f}, "
          f"of mean Î2 − fisher {z_rms['Î2']:.2f} (≈ 1: Monte-Carlo error as var1, var2 "
          f"predict); Σ sample variances / Σ var1 {var_ratio['Î1']:.3f}, / Σ var2 "
          f"{var_ratio['Î2']:.3f} (≈ 1)")
    targets = [("(a) ≤ 2× (c)", t_a <= 2 * t_c, t_a / t_c),
               ("(b) ≤ 15× (c)", t_b <= 15 * t_c, t_b / t_c),
               ("(d) ≥ 20× (b)", t_d >= 20 * t_b, t_d / t_b)]
    print("targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'} ({r:.2f}×)"
                                   for name, ok, r in targets))
    if a.json:
        out = {
            "layers": widths, "activation": a.activation, "inputs": b, "samples": n,
            "seed": a.seed, "threads": threads, "cpu": cpu_model_name(),
            "cpu_count": os.cpu_count(), "versions": versions, "reps": a.reps,
            "per_sample_reps": d_reps, "per_sample_hessian": hess_name,
            "times_s": {"a_fisher_only": t_a, "b_full": t_b, "c_diag_ggn_exact": t_c,
                        "d_per_sample": t_d},
            "all_times_s": {"a": ts_a, "b": ts_b, "c": ts_c, "d": ts_d},
            "ratios": {"a_over_c": t_a / t_c, "b_over_c": t_b / t_c, "d_over_c": t_d / t_c,
                       "d_over_b": t_d / t_b},
            "targets_met": {name: ok for name, ok, _ in targets},
            "fisher_vs_ggn_max_rel_diff": worst_ggn,
            "per_sample_z_rms": z_rms,
            "per_sample_variance_ratio": var_ratio,
            "diagfim_full_keys": full_result.computed_keys,
            "diagfim_theory_s": full_result.theory_s,
        }
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"numbers written to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
