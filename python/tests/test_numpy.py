"""numpy-only tests (no torch): the Python API against the command line, closed forms, the
Mapping and file outputs, and the error cases."""

from __future__ import annotations

import json
import math
import os
import pickle
import sys

import numpy as np
import pytest
import safetensors.numpy as st

import diagfim
from conftest import assert_close, random_state, run_cli


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


ACTS = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "identity": lambda z: z,
    "softplus": lambda z: np.logaddexp(0.0, z),
    "logsigmoid": lambda z: -np.logaddexp(0.0, -z),
}


def _forward(state, acts, x):
    """Per layer input activations and the output h, in numpy."""
    keys = sorted({int(k.split(".")[0]) for k in state})
    a = x
    inputs = []
    for l, k in enumerate(keys):
        inputs.append(a)
        z = a @ state[f"{k}.weight"].T
        if f"{k}.bias" in state:
            z = z + state[f"{k}.bias"]
        a = ACTS[acts[l]](z) if l < len(acts) else z
    return inputs, a


def _load(path):
    return st.load_file(str(path))


def _summary_without_time(s):
    """SUMMARY.json without its timings (wall time, the theory layer's seconds)."""
    s = dict(s)
    s.pop("wall_time_s")
    s.pop("theory_s")
    return s


@pytest.mark.parametrize(
    "family, labels_kind, per_input, dtype",
    [
        ("categorical", "classes", False, np.float64),
        ("categorical", None, True, np.float32),
        ("gaussian", "targets", False, np.float64),
        ("bernoulli", "indicators", False, np.float64),
        ("bernoulli", None, True, np.float32),
        ("poisson", "counts", False, np.float64),
    ],
)
def test_equals_command_line(tmp_path, small_model, family, labels_kind, per_input, dtype):
    path, state, acts, x = small_model
    x = x.astype(dtype)
    np.save(tmp_path / "x.npy", x)
    args = ["analyze", "--model", path, "--inputs", tmp_path / "x.npy", "--engine", "cpu",
            "--samples", "8", "--seed", "3", "--family", family, "--sigma2", "0.7",
            "--out", tmp_path / "r.safetensors", "--summary", tmp_path / "s.json"]
    labels = None
    if labels_kind == "classes":
        labels = np.random.default_rng(5).integers(0, 4, size=len(x)).astype(np.int32)
    elif labels_kind == "targets":
        labels = np.random.default_rng(5).normal(size=(len(x), 4))
    elif labels_kind == "indicators":
        labels = np.random.default_rng(5).random(size=(len(x), 4)) < 0.4  # bool [B, O]
    elif labels_kind == "counts":
        labels = np.random.default_rng(5).poisson(2.0, size=(len(x), 4)).astype(np.int64)
    if labels is not None:
        np.save(tmp_path / "y.npy", labels)
        args += ["--labels", tmp_path / "y.npy"]
    if per_input:
        args.append("--per-input")
    run_cli(*args)
    want = _load(tmp_path / "r.safetensors")
    kwargs = dict(family=family, sigma2=0.7, samples=8, seed=3, engine="cpu", labels=labels,
                  per_input=per_input)
    for model in (path, str(path), state):
        result = diagfim.analyze(model, x, activations=None if model is not state else acts,
                                 **kwargs)
        assert set(result) == set(want)  # load_file sorts the names
        for name, value in want.items():
            assert result[name].dtype == np.float64
            assert_close(result[name], value, 1e-12, name)
        with open(tmp_path / "s.json") as f:
            assert _summary_without_time(result.summary) == _summary_without_time(json.load(f))
    if labels is not None:
        assert any(k.startswith("ef/") for k in result)


def test_save_and_read_back(tmp_path, small_model):
    path, state, acts, x = small_model
    result = diagfim.analyze(path, x, engine="cpu", samples=4, bounds="keys")
    result.save(tmp_path / "r.safetensors", tmp_path / "s.json")
    back = st.load_file(str(tmp_path / "r.safetensors"))
    assert set(back) == set(result)
    for name in back:
        np.testing.assert_array_equal(back[name], result[name])
    with open(tmp_path / "s.json") as f:
        assert json.load(f) == result.summary
    # save without a summary
    result.save(str(tmp_path / "only.safetensors"))
    assert set(st.load_file(str(tmp_path / "only.safetensors"))) == set(result)


def test_mapping_and_repr(small_model):
    path, state, acts, x = small_model
    result = diagfim.analyze(path, x, engine="cpu", samples=4)
    assert isinstance(result, diagfim.Result)
    from collections.abc import Mapping

    assert isinstance(result, Mapping)
    assert len(result) == len(list(result)) == len(result.keys())
    assert "fisher/0.weight" in result and "fisher/nope" not in result
    with pytest.raises(KeyError):
        result["fisher/nope"]
    assert result["fisher/0.weight"].shape == (7, 5)
    assert result["fisher/2.weight"].shape == (6, 7)
    assert "fisher/2.bias" not in result  # layer 2 has no bias
    assert result.params == ["0.weight", "0.bias", "2.weight", "4.weight", "4.bias"]
    assert result.key_names[:3] == ["fisher", "var1", "var2"]
    assert result.inputs == 20 and result.samples == 4 and result.engine == "cpu"
    assert not result["fisher/0.weight"].flags.writeable
    text = repr(result)
    assert "20 inputs" in text and "fisher" in text and "0.weight" in text
    s = result.summary
    assert s["inputs"] == 20 and s["samples"] == 4 and s["family"] == "categorical"
    layers = {l["name"]: l for l in s["layers"]}
    assert set(layers) == set(result.params)
    assert layers["0.weight"]["theory"]["recommendation"]["estimator"] in (
        "i1", "i2", "combination")
    assert math.isclose(layers["0.weight"]["means"]["fisher"],
                        float(result["fisher/0.weight"].mean()), rel_tol=1e-12)


def test_model_object_and_conversions(small_model):
    path, state, acts, x = small_model
    m = diagfim.load_model(path)
    assert m.widths == [5, 7, 6, 4] and m.activations == acts
    assert [p for p, _ in m.params] == ["0.weight", "0.bias", "2.weight", "4.weight", "4.bias"]
    assert dict(m.params)["2.weight"] == [6, 7]
    assert m.num_params == 7 * 5 + 7 + 6 * 7 + 4 * 6 + 4
    assert "5-7-6-4" in repr(m) and "layer 0" in m.describe()
    m2 = diagfim.load_model(state, activations="sigmoid,tanh")
    assert m2.params == m.params
    a = diagfim.analyze(m, x, engine="cpu", samples=3)
    b = diagfim.analyze(m2, x.tolist(), engine="cpu", samples=3)  # lists become arrays
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # activations override the file's metadata, as --activations does
    c = diagfim.analyze(path, x, activations=["relu", "relu"], engine="cpu", samples=3)
    assert not np.array_equal(c["fisher/0.weight"], a["fisher/0.weight"])


def test_inputs_float32_and_strided_are_copied_alike(small_model):
    path, state, acts, x = small_model
    m = diagfim.load_model(path)
    ref = diagfim.analyze(m, x, engine="cpu", samples=3)
    wide = np.zeros((20, 10))
    wide[:, ::2] = x
    strided = diagfim.analyze(m, wide[:, ::2], engine="cpu", samples=3)  # non-contiguous
    fortran = diagfim.analyze(m, np.asfortranarray(x), engine="cpu", samples=3)
    for k in ref:
        np.testing.assert_array_equal(ref[k], strided[k])
        np.testing.assert_array_equal(ref[k], fortran[k])
    f32 = diagfim.analyze(m, x.astype(np.float32), engine="cpu", samples=3)
    f64 = diagfim.analyze(m, x.astype(np.float32).astype(np.float64), engine="cpu", samples=3)
    for k in ref:
        np.testing.assert_array_equal(f32[k], f64[k])


def test_results_do_not_depend_on_batch_size_or_threads(small_model):
    path, state, acts, x = small_model
    a = diagfim.analyze(path, x, engine="cpu", samples=4, batch_size=3, threads=1)
    b = diagfim.analyze(path, x, engine="cpu", samples=4, batch_size=256, threads=2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_categorical_closed_form_one_input():
    """B = 1: the last layer's Fisher is diag(C) = p − p² (bias) and (p − p²)·a² (weight),
    and its Var Î2 is 0 (README: Î2 is exact in the last layer)."""
    state = random_state([6, 9, 5], seed=7)
    acts = ["tanh"]
    x = np.random.default_rng(8).normal(size=(1, 6))
    result = diagfim.analyze(state, x, activations=acts, engine="cpu", samples=4)
    inputs, h = _forward(state, acts, x)
    p = np.exp(h[0] - h[0].max())
    p /= p.sum()
    c = p - p**2
    np.testing.assert_allclose(result["fisher/2.bias"], c, rtol=1e-12, atol=0)
    np.testing.assert_allclose(result["fisher/2.weight"], np.outer(c, inputs[1][0] ** 2),
                               rtol=1e-12, atol=1e-300)
    assert np.all(result["var2/2.weight"] == 0) and np.all(result["var2/2.bias"] == 0)
    assert np.all(result["var2/0.weight"] >= 0) and result["var2/0.weight"].max() > 0


def test_gaussian_closed_forms():
    """Gaussian: N·Var Î1 = 2 I² per input (Prop. 5.1), and the last bias' Fisher is 1/σ²."""
    state = random_state([4, 8, 8, 3], seed=11)
    acts = ["softplus", "sigmoid"]
    x = np.random.default_rng(12).normal(size=(6, 4))
    sigma2 = 0.25
    result = diagfim.analyze(state, x, activations=acts, family="gaussian", sigma2=sigma2,
                             engine="cpu", samples=4, per_input=True)
    for name in result:
        if name.startswith("fisher/"):
            param = name.split("/", 1)[1]
            f = result[name]
            assert f.shape[0] == 6
            np.testing.assert_allclose(result[f"var1/{param}"], 2 * f**2, rtol=1e-10,
                                       atol=1e-300)
    np.testing.assert_allclose(result["fisher/4.bias"], np.full((6, 3), 1 / sigma2), rtol=1e-14)
    assert np.all(result["var2/4.weight"] == 0)


# ----------------------------------------------------------------------------- errors


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(diagfim.DiagfimError, match=match) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_error_is_a_value_error():
    assert issubclass(diagfim.DiagfimError, ValueError)
    assert diagfim.DiagfimError is diagfim._diagfim.DiagfimError


def test_input_errors(small_model):
    path, state, acts, x = small_model
    m = diagfim.load_model(path)
    _raises(r"float32 or float64 array of shape \[B, in\]; found dtype int64",
            diagfim.analyze, m, x.astype(np.int64))
    _raises(r"found dtype float64 and shape \[20\]", diagfim.analyze, m, x[:, 0])
    _raises(r"shape \[2, 20, 5\]", diagfim.analyze, m, np.stack([x, x]))
    _raises(r"float16", diagfim.analyze, m, x.astype(np.float16))
    bad = x.copy()
    bad[3, 2] = np.nan
    msg = _raises(r"non-finite value in the inputs at index 17", diagfim.analyze, m, bad,
                  engine="cpu")
    assert "clean the data" in msg
    _raises(r"inputs have 4 columns but the model expects 5 inputs", diagfim.analyze, m,
            x[:, :4], engine="cpu")
    _raises(r"no inputs \(B = 0\)", diagfim.analyze, m, x[:0], engine="cpu")
    _raises(r"at least 2 are needed", diagfim.analyze, m, x, samples=1, engine="cpu")
    _raises(r"samples must be an integer", diagfim.analyze, m, x, samples=-3)
    _raises(r"batch_size must be an integer ≥ 1", diagfim.analyze, m, x, batch_size=0)


def test_label_errors(small_model):
    path, state, acts, x = small_model
    m = diagfim.load_model(path)
    ok = np.zeros(20, dtype=np.int64)
    diagfim.analyze(m, x, labels=ok, engine="cpu", samples=2)
    _raises(r"label 4 at index 2 is out of range: the model has 4 classes, so labels must be "
            r"0 to 3", diagfim.analyze, m, x, labels=np.array([0, 1, 4] + [0] * 17),
            engine="cpu")
    _raises(r"label -1 at index 0 is out of range", diagfim.analyze, m, x,
            labels=np.array([-1] + [0] * 19), engine="cpu")
    _raises(r"integer .* array of shape \[B\]; found dtype float64", diagfim.analyze, m, x,
            labels=np.zeros(20), engine="cpu")
    _raises(r"found dtype int64 and shape \[20, 1\]", diagfim.analyze, m, x,
            labels=np.zeros((20, 1), dtype=np.int64), engine="cpu")
    _raises(r"19 labels for 20 inputs", diagfim.analyze, m, x, labels=ok[:19], engine="cpu")
    _raises(r"Gaussian targets must have shape \[B, 4\]", diagfim.analyze, m, x,
            family="gaussian", labels=np.zeros((20, 3)), engine="cpu")
    _raises(r"Gaussian targets must be a float32 or float64", diagfim.analyze, m, x,
            family="gaussian", labels=ok, engine="cpu")
    t = np.zeros((20, 4))
    t[5, 1] = np.inf
    _raises(r"non-finite value in label 5 at index 1", diagfim.analyze, m, x,
            family="gaussian", labels=t, engine="cpu")
    # Multi-label and count labels: 0/1 and whole counts ≥ 0, the entry named.
    y = np.zeros((20, 4))
    y[3, 2] = 0.5
    _raises(r"label 3: Bernoulli label entry 2 is 0.5: multi-label targets must be 0 or 1",
            diagfim.analyze, m, x, family="bernoulli", labels=y, engine="cpu")
    _raises(r"Bernoulli labels \(0/1\) must have shape \[B, 4\]", diagfim.analyze, m, x,
            family="bernoulli", labels=np.zeros((20, 2), dtype=bool), engine="cpu")
    y = np.ones((20, 4), dtype=np.int64)
    y[7, 0] = -2
    _raises(r"label 7: Poisson label entry 0 is -2: counts must be non-negative whole",
            diagfim.analyze, m, x, family="poisson", labels=y, engine="cpu")
    _raises(r"unknown family 'binomial'.*'bernoulli'.*'poisson'", diagfim.analyze, m, x,
            family="binomial", engine="cpu")


def test_option_errors(small_model):
    path, state, acts, x = small_model
    m = diagfim.load_model(path)
    _raises(r"unknown family 'binomial'", diagfim.analyze, m, x, family="binomial")
    _raises(r"unknown engine 'tpu': use auto, cpu or gpu", diagfim.analyze, m, x, engine="tpu")
    _raises(r"unknown bounds 'some': use all, keys or none", diagfim.analyze, m, x,
            bounds="some")
    _raises(r"σ² must be finite and > 0", diagfim.analyze, m, x, family="gaussian", sigma2=0.0)


def test_model_errors(tmp_path, small_model):
    path, state, acts, x = small_model
    _raises(r"unknown activation 'swish'", diagfim.analyze, state, x,
            activations=["swish", "tanh"])
    _raises(r"needs activations=\[...\] with 2 name", diagfim.analyze, state, x)
    _raises(r"3 layers need 2 hidden activations, got 1", diagfim.analyze, state, x,
            activations=["tanh"])
    _raises(r"cannot read '.*missing.safetensors'", diagfim.analyze,
            tmp_path / "missing.safetensors", x)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    _raises(r"not a valid safetensors file", diagfim.analyze, tmp_path / "junk.safetensors", x)
    bad = dict(state)
    bad["2.weight"] = bad["2.weight"][:, :6]
    _raises(r"layer shapes do not chain", diagfim.analyze, bad, x, activations=acts)
    _raises(r"unexpected tensor 'fc.weight'", diagfim.analyze, {"fc.weight": np.eye(2)}, x)
    _raises(r"'0.bias' exists but '0.weight' is missing", diagfim.analyze,
            {"0.bias": np.zeros(2)}, x)
    _raises(r"a weight must be 2-D", diagfim.analyze, {"0.weight": np.zeros(3)}, x)
    _raises(r"is not supported", diagfim.analyze, 42, x)
    nan = dict(state)
    nan["0.bias"] = nan["0.bias"].copy()
    nan["0.bias"][1] = np.nan
    _raises(r"non-finite value in the parameters of layer '0'", diagfim.analyze, nan, x,
            activations=acts)


def test_result_as_dict_pickles(small_model):
    """dict(result) is plain numpy data that pickles."""
    path, state, acts, x = small_model
    result = diagfim.analyze(path, x, engine="cpu", samples=2, bounds="none")
    back = pickle.loads(pickle.dumps(dict(result)))
    assert set(back) == set(result)


def test_progress_bar_on_a_terminal(tmp_path):
    """progress=True draws the command line's bar on stderr when stderr is a terminal."""
    import os
    import pty
    import subprocess
    import sys

    code = (
        "import numpy as np, diagfim\n"
        "from conftest import random_state\n"
        "x = np.random.default_rng(0).normal(size=(3000, 6))\n"
        "r = diagfim.analyze(random_state([6, 32, 32, 4]), x, activations=['tanh', 'tanh'],\n"
        "                    engine='cpu', samples=4, batch_size=8, progress=True)\n"
        "print('done', r.inputs)\n"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=slave,
                            cwd=os.path.dirname(__file__))
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    out, _ = proc.communicate(timeout=300)
    os.close(master)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert out.decode().strip() == "done 3000"
    assert b"analysing" in err and b"/3000 inputs" in err, err[-2000:]


def test_no_xdg_runtime_dir_warning(tmp_path, small_model):
    """Mesa warns on stderr when XDG_RUNTIME_DIR is unset; importing diagfim gives the drivers
    a private folder first, so a GPU run prints nothing about it (where an adapter exists)."""
    import subprocess

    path, state, acts, x = small_model
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env["TMPDIR"] = str(tmp_path)
    code = (
        "import os, sys, numpy as np, diagfim\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "print(os.environ['XDG_RUNTIME_DIR'])\n"
        "try:\n"
        f"    diagfim.analyze({str(path)!r}, x, engine='gpu', samples=2, bounds='none')\n"
        "except diagfim.DiagfimError as e:\n"
        "    print('no GPU:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    runtime = out.stdout.splitlines()[0]
    assert runtime == str(tmp_path / f"diagfim-runtime-{os.getuid()}")
    assert (os.stat(runtime).st_mode & 0o777) == 0o700
    assert "XDG_RUNTIME_DIR" not in out.stderr, out.stderr
