"""examples/ray_fisher.py on a local Ray cluster (2 CPUs, 4 shards) against one process."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import safetensors.numpy as st

import diagfim
from conftest import assert_close, random_state, require

ray = require("ray", "DIAGFIM_REQUIRE_RAY")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "ray_fisher.py"


def test_ray_example_equals_single_process(tmp_path):
    state = random_state([7, 12, 9, 4], seed=31)
    st.save_file(state, str(tmp_path / "model.safetensors"),
                 metadata={"activations": "sigmoid,relu"})
    x = np.random.default_rng(32).normal(size=(103, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    cmd = [sys.executable, str(EXAMPLE), "--model", str(tmp_path / "model.safetensors"),
           "--inputs", str(tmp_path / "x.npy"), "--shards", "4", "--engine", "cpu",
           "--samples", "5", "--seed", "4", "--family", "categorical",
           "--out", str(tmp_path / "r.safetensors"), "--summary", str(tmp_path / "s.json"),
           "--num-cpus", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local cluster
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-5000:]
    for k in range(4):
        assert f"shard {k}: inputs [" in proc.stdout
    assert "merge:" in proc.stdout

    want = diagfim.analyze(tmp_path / "model.safetensors", x, engine="cpu", samples=5, seed=4)
    got = st.load_file(str(tmp_path / "r.safetensors"))
    assert set(got) == set(want)  # load_file sorts the names
    for name in want:
        assert_close(got[name], want[name], 1e-12, name)
    with open(tmp_path / "s.json") as f:
        summary = json.load(f)
    assert summary["inputs"] == 103 and summary["samples"] == 5
