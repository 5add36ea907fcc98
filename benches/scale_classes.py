"""Timing of `diagfim analyze --engine cpu` against the number of classes O (docs/theory.md,
"Spectra that scale in O"): writes a random sigmoid MLP and inputs, then runs the CLI with
`--bounds none`, `keys` and `all` and prints the wall times and the ratio all/none.

    python3 benches/scale_classes.py --sizes 784,64,1000 --inputs 64 [--bin target/release/diagfim]

Needs numpy and safetensors (the CI venv has both). The model is written to a temporary
folder; nothing is kept.
"""
import argparse
import os
import subprocess
import tempfile
import time

import numpy as np
from safetensors.numpy import save_file

ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="784,64,1000")
ap.add_argument("--inputs", type=int, default=64)
ap.add_argument("--bin", default="target/release/diagfim")
ap.add_argument("--bounds", default="none,keys,all")
ap.add_argument("--extra", default="", help="more CLI arguments, space-separated")
args = ap.parse_args()

sizes = [int(s) for s in args.sizes.split(",")]
rng = np.random.default_rng(7)
tensors = {}
for l in range(len(sizes) - 1):
    fan_in = sizes[l]
    tensors[f"{2 * l}.weight"] = rng.normal(0, 2.0 / np.sqrt(fan_in), (sizes[l + 1], fan_in))
    tensors[f"{2 * l}.bias"] = rng.normal(0, 0.3, (sizes[l + 1],))
acts = ",".join(["sigmoid"] * (len(sizes) - 2))
env = dict(os.environ, XDG_RUNTIME_DIR=os.environ.get("XDG_RUNTIME_DIR", "/tmp"))
with tempfile.TemporaryDirectory() as d:
    model = os.path.join(d, "model.safetensors")
    meta = {"format": "pt"}
    if acts:
        meta["activations"] = acts
    save_file(tensors, model, metadata=meta)
    x = os.path.join(d, "x.npy")
    np.save(x, rng.uniform(0, 1, (args.inputs, sizes[0])))
    times = {}
    for b in args.bounds.split(","):
        out = os.path.join(d, "out-" + b)
        cmd = [args.bin, "analyze", "--engine", "cpu", "--family", "categorical", "--model",
               model, "--inputs", x, "--bounds", b, "--out", out] + args.extra.split()
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        times[b] = time.perf_counter() - t0
        print(f"sizes {args.sizes} B={args.inputs} --bounds {b}: {times[b]:.2f} s", flush=True)
    if "all" in times and "none" in times:
        print(f"all/none = {times['all'] / times['none']:.2f}")
