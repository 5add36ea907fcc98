"""One analysis on the GPU engine (Mesa's lavapipe in CI) against the CPU engine."""

from __future__ import annotations

import os

import numpy as np
import pytest

import diagfim
from conftest import random_state


def test_gpu_engine_agrees_with_cpu():
    state = random_state([5, 16, 8, 4], seed=41)
    x = np.random.default_rng(42).normal(size=(40, 5))
    opts = dict(activations=["sigmoid", "tanh"], samples=8, seed=1)
    cpu = diagfim.analyze(state, x, engine="cpu", **opts)
    try:
        gpu = diagfim.analyze(state, x, engine="gpu", **opts)
    except diagfim.DiagfimError as e:
        if os.environ.get("DIAGFIM_REQUIRE_GPU") == "1" or "GPU engine" not in str(e):
            raise
        pytest.skip(f"no GPU adapter here (CI sets DIAGFIM_REQUIRE_GPU=1): {e}")
    assert gpu.engine == "gpu" and cpu.engine == "cpu"
    assert list(gpu) == list(cpu)
    for name in ("fisher", "var1", "var2", "mc1", "mc2"):
        for param in cpu.params:
            g, c = gpu[f"{name}/{param}"], cpu[f"{name}/{param}"]
            scale = max(np.abs(c).max(), 1e-30)
            assert np.abs(g - c).max() <= 2e-3 * scale, f"{name}/{param}"
