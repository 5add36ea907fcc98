#!/usr/bin/env python3
"""Sharded diagfim analysis of a large data set on a Ray cluster.

The inputs (.npy, [B, in], float32 or float64) are memory-mapped, split into K contiguous
shards, and each shard runs ``diagfim.analyze_partial`` as a Ray task with its
``input_offset`` (the index of its first row), so every shard draws the labels that one
single run over all B inputs would draw. The partials (small: a few arrays of the model's
size, pickled as safetensors bytes) come back and ``diagfim.merge`` adds them into one result,
written as RESULT.safetensors and SUMMARY.json exactly like ``diagfim analyze`` writes them.

Tasks ask for one GPU each when the cluster has GPUs (``engine="auto"`` then uses it), else
one CPU. Each task opens the memory-mapped file itself and reads only its rows, so the model
and data paths must be readable on every node (a shared file system).

    python examples/ray_fisher.py --model model.safetensors --inputs x.npy --shards 8 \\
        --out result.safetensors --summary summary.json

Connects to the cluster named by RAY_ADDRESS, or starts a local one (--num-cpus).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import ray

import diagfim


def shard_bounds(rows: int, shards: int) -> list:
    """[start, stop) of K contiguous shards of about equal size (none empty)."""
    shards = max(1, min(shards, rows))
    edges = np.linspace(0, rows, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def analyze_shard(model: str, inputs: str, start: int, stop: int, options: dict):
    """One shard: memory-map the inputs, analyse rows [start, stop)."""
    began = time.perf_counter()
    x = np.load(inputs, mmap_mode="r")[start:stop]
    partial = diagfim.analyze_partial(model, x, input_offset=start, **options)
    return partial, time.perf_counter() - began


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model .safetensors (with activations)")
    p.add_argument("--inputs", required=True, help="inputs .npy [B, in]")
    p.add_argument("--shards", type=int, default=4, help="number of shards K (default 4)")
    p.add_argument("--out", required=True, help="RESULT.safetensors to write")
    p.add_argument("--summary", help="SUMMARY.json to write")
    p.add_argument("--engine", default="auto", help="auto, cpu or gpu (default auto)")
    p.add_argument("--samples", type=int, default=16, help="labels per input N (default 16)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    p.add_argument("--family", default="categorical", help="categorical or gaussian")
    p.add_argument("--sigma2", type=float, default=1.0, help="Gaussian σ² (default 1)")
    p.add_argument("--activations", help="hidden activations, overriding the model file's")
    p.add_argument("--bounds", default="all", help="all, keys or none (default all)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per task (default: the task's CPUs on a CPU task)")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local cluster started when RAY_ADDRESS is unset")
    args = p.parse_args(argv)
    if args.shards < 1:
        p.error("--shards must be at least 1")

    if not ray.is_initialized():
        ray.init(num_cpus=args.num_cpus)
    x = np.load(args.inputs, mmap_mode="r")
    if x.ndim != 2:
        p.error(f"--inputs must be a 2-D array [B, in]; found shape {x.shape}")
    bounds = shard_bounds(x.shape[0], args.shards)
    # Fail early, on the driver, on a bad model or option (the same checks as the tasks').
    diagfim.load_model(args.model, args.activations)

    gpus = ray.cluster_resources().get("GPU", 0) > 0
    resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    options = dict(family=args.family, sigma2=args.sigma2, activations=args.activations,
                   samples=args.samples, seed=args.seed, engine=args.engine,
                   bounds=args.bounds,
                   threads=args.threads if args.threads is not None else (None if gpus else 1))
    task = ray.remote(**resources)(analyze_shard)
    print(f"{x.shape[0]} inputs in {len(bounds)} shards on "
          f"{'one GPU' if gpus else 'one CPU'} per task", flush=True)

    began = time.perf_counter()
    refs = [task.remote(args.model, args.inputs, a, b, options) for a, b in bounds]
    partials = []
    for k, ((a, b), ref) in enumerate(zip(bounds, refs)):
        partial, seconds = ray.get(ref)
        partials.append(partial)
        print(f"shard {k}: inputs [{a}, {b}) ({b - a} rows): {seconds:.3f} s", flush=True)
    tasks_s = time.perf_counter() - began

    t0 = time.perf_counter()
    result = diagfim.merge(partials)
    merge_s = time.perf_counter() - t0
    result.save(args.out, args.summary)
    print(f"tasks: {tasks_s:.3f} s wall; merge: {merge_s:.3f} s; wrote {args.out}"
          + (f" and {args.summary}" if args.summary else ""), flush=True)
    print(result.table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
