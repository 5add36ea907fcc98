"""Shared helpers of the diagfim Python tests.

Optional dependencies (torch, ray) are skipped when missing, unless DIAGFIM_REQUIRE_TORCH=1 /
DIAGFIM_REQUIRE_RAY=1 (set by CI): then a missing one fails the tests instead.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]

# Test the installed package (pip install ./python), never the source folder python/diagfim,
# which has no compiled extension: `python -m pytest` run in python/ would put it first.
_SOURCE = str(REPO / "python")
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _SOURCE]

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def require(module: str, env: str):
    """Imports `module`; skips if missing, fails if `env`=1."""
    if os.environ.get(env) == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def diagfim_cli() -> list:
    """The command line: $DIAGFIM_BIN, else the repository's release binary, else cargo run."""
    path = os.environ.get("DIAGFIM_BIN")
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"DIAGFIM_BIN={path} does not exist")
        return [path]
    built = REPO / "target" / "release" / "diagfim"
    if built.is_file():
        return [str(built)]
    cargo = shutil.which("cargo")
    assert cargo, "set DIAGFIM_BIN to the diagfim binary (cargo is not on PATH either)"
    return [cargo, "run", "--quiet", "--release", "--manifest-path", str(REPO / "Cargo.toml"),
            "--bin", "diagfim", "--"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(diagfim_cli() + [str(a) for a in args], capture_output=True, text=True)
    assert proc.returncode == 0, f"diagfim {' '.join(map(str, args))} failed:\n{proc.stderr}"
    return proc


def random_state(widths, seed=0, bias=True, scale=1.0, no_bias_layers=()):
    """A state dict '<2l>.weight' / '<2l>.bias' (like nn.Sequential with activations between
    the Linears) of random float64 arrays."""
    rng = np.random.default_rng(seed)
    state = {}
    for l, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
        k = 2 * l
        state[f"{k}.weight"] = rng.normal(0.0, scale / np.sqrt(i), size=(o, i))
        if bias and l not in no_bias_layers:
            state[f"{k}.bias"] = rng.normal(0.0, 0.5, size=(o,))
    return state


def assert_close(got, want, rtol=1e-12, name=""):
    """Elementwise relative closeness; for signed tensors relative to the max |want|."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    scale = np.abs(want)
    if (want < 0).any():
        scale = np.full_like(scale, np.abs(want).max())
    bad = np.abs(got - want) > rtol * scale + 1e-300
    assert not bad.any(), (
        f"{name}: {bad.sum()} entries differ, max abs diff {np.abs(got - want).max():.3e}, "
        f"max |want| {np.abs(want).max():.3e}"
    )


@pytest.fixture
def small_model(tmp_path):
    """A 5-7-6-4 model (sigmoid, tanh) saved as safetensors, its state dict and inputs."""
    import safetensors.numpy as st

    state = random_state([5, 7, 6, 4], seed=1, no_bias_layers=(1,))
    path = tmp_path / "model.safetensors"
    st.save_file(state, str(path), metadata={"activations": "sigmoid,tanh"})
    x = np.random.default_rng(2).normal(size=(20, 5))
    return path, state, ["sigmoid", "tanh"], x
