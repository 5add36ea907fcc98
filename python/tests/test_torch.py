"""PyTorch models: conversion of every supported module, the Fisher against an independent
autograd computation, to_torch, tensors as inputs and labels, and the unsupported modules."""

from __future__ import annotations

import collections
import copy

import numpy as np
import pytest

import diagfim
from conftest import assert_close, require

torch = require("torch", "DIAGFIM_REQUIRE_TORCH")
nn = torch.nn


def every_activation_model(width=8, inputs=5, outputs=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(inputs, width), nn.Sigmoid(),          # 0, 1
        nn.Linear(width, width), nn.Tanh(),              # 2, 3
        nn.Linear(width, width), nn.ReLU(),              # 4, 5
        nn.Linear(width, width), nn.Softplus(),          # 6, 7
        nn.Linear(width, width), nn.LogSigmoid(),        # 8, 9
        nn.Linear(width, width, bias=False), nn.Identity(),  # 10, 11
        nn.Linear(width, width),                         # 12 (identity: nothing between)
        nn.Linear(width, outputs),                       # 13
    )


EVERY_ACTIVATION = ["sigmoid", "tanh", "relu", "softplus", "logsigmoid", "identity", "identity"]


def autograd_fisher(model, x, family, sigma2=1.0):
    """Mean over inputs of the exact Fisher diagonal by autograd over the outputs:
    categorical Σ_c p_c (∂ log p_c/∂θ)², gaussian Σ_a (∂h_a/∂θ)² / σ²."""
    model = copy.deepcopy(model).double()
    names, params = zip(*model.named_parameters())
    total = [torch.zeros_like(p) for p in params]
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    for xi in x:
        h = model(xi[None])[0]
        if family == "categorical":
            logp = torch.log_softmax(h, dim=0)
            p = logp.detach().exp()
            terms = [(logp[c], p[c]) for c in range(h.shape[0])]
        else:
            terms = [(h[a], 1.0 / sigma2) for a in range(h.shape[0])]
        for out, weight in terms:
            grads = torch.autograd.grad(out, params, retain_graph=True)
            for t, g in zip(total, grads):
                t += weight * g**2
    return {n: (t / len(x)).numpy() for n, t in zip(names, total)}


def test_conversion_of_every_supported_module():
    model = every_activation_model()
    m = diagfim.load_model(model)
    assert m.activations == EVERY_ACTIVATION
    assert [p for p, _ in m.params] == [n for n, _ in model.named_parameters()]
    assert [tuple(s) for _, s in m.params] == [tuple(p.shape) for p in model.parameters()]
    assert m.widths == [5, 8, 8, 8, 8, 8, 8, 8, 4]
    # ReLU(inplace=True), a trailing/leading Identity and Identity between Linears
    m2 = diagfim.load_model(nn.Sequential(nn.Identity(), nn.Linear(3, 4), nn.ReLU(inplace=True),
                                          nn.Linear(4, 4), nn.Identity(), nn.Linear(4, 2),
                                          nn.Identity()))
    assert m2.activations == ["relu", "identity"]
    assert [p for p, _ in m2.params] == ["1.weight", "1.bias", "3.weight", "3.bias",
                                         "5.weight", "5.bias"]
    # a single Linear: no hidden layer
    assert diagfim.load_model(nn.Sequential(nn.Linear(3, 2))).activations == []


@pytest.mark.parametrize("family, sigma2", [("categorical", 1.0), ("gaussian", 0.5)])
def test_fisher_against_autograd(family, sigma2):
    model = every_activation_model(seed=1).double()
    x = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    result = diagfim.analyze(model, x, family=family, sigma2=sigma2, engine="cpu", samples=4)
    want = autograd_fisher(model, x, family, sigma2)
    for name, value in want.items():
        assert_close(result[f"fisher/{name}"], value, 1e-6, name)
    # the float32 model converts to the same float64 parameters
    f32 = copy.deepcopy(model).float()
    r32 = diagfim.analyze(f32, x.float(), family=family, sigma2=sigma2, engine="cpu",
                          samples=4)
    want32 = autograd_fisher(f32, x.float(), family, sigma2)
    for name, value in want32.items():
        assert_close(r32[f"fisher/{name}"], value, 1e-6, name)


def test_to_torch_is_keyed_like_named_parameters():
    model = every_activation_model(seed=3)
    x = torch.randn(7, 5)
    result = diagfim.analyze(model, x, engine="cpu", samples=3, bounds="none")
    out = result.to_torch(model)
    assert set(out) == set(result.key_names)
    params = dict(model.named_parameters())
    for key, tensors in out.items():
        assert list(tensors) == list(params)
        for name, t in tensors.items():
            assert t.dtype == torch.float64 and t.shape == params[name].shape
            np.testing.assert_array_equal(t.numpy(), result[f"{key}/{name}"])
    # without a model: CPU tensors of the same names
    assert set(result.to_torch()["fisher"]) == set(params)
    # per-input results keep the leading input axis
    per = diagfim.analyze(model, x, engine="cpu", samples=3, bounds="none", per_input=True)
    assert per.to_torch(model)["fisher"]["0.weight"].shape == (7, 8, 5)
    with pytest.raises(diagfim.DiagfimError, match=r"'0.weight' is not among the model's "
                       r"parameters \(1.weight, 1.bias\)"):
        result.to_torch(nn.Sequential(nn.Identity(), nn.Linear(5, 8)))
    with pytest.raises(diagfim.DiagfimError, match=r"'fisher/0.weight' has shape \[8, 5\] but "
                       r"the model's '0.weight' has shape \[3, 5\]"):
        result.to_torch(nn.Sequential(nn.Linear(5, 3)))


def test_tensor_inputs_and_labels():
    model = every_activation_model(seed=4)
    x = torch.randn(9, 5, requires_grad=True)
    y = torch.randint(0, 4, (9,))
    a = diagfim.analyze(model, x, labels=y, engine="cpu", samples=3)
    b = diagfim.analyze(model, x.detach().numpy(), labels=y.numpy(), engine="cpu", samples=3)
    assert "ef/0.weight" in a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    t = torch.randn(9, 4)
    g = diagfim.analyze(model, x, family="gaussian", labels=t, engine="cpu", samples=3)
    assert "ef/13.bias" in g
    with pytest.raises(diagfim.DiagfimError, match="cannot convert the inputs"):
        diagfim.analyze(model, x.detach().to(torch.bfloat16), engine="cpu")
    with pytest.raises(diagfim.DiagfimError, match="found dtype float16"):
        diagfim.analyze(model, x.detach().half(), engine="cpu")


def test_state_dict_of_tensors_matches_module():
    model = every_activation_model(seed=5)
    x = np.random.default_rng(0).normal(size=(6, 5))
    a = diagfim.analyze(model, x, engine="cpu", samples=3)
    b = diagfim.analyze(model.state_dict(), x, activations=EVERY_ACTIVATION, engine="cpu",
                        samples=3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


class NotSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x)


@pytest.mark.parametrize(
    "model, match",
    [
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.Conv2d(1, 1, 3), nn.Linear(4, 2)),
         r"module 1 \('1'\) Conv2d\(1, 1, kernel_size=\(3, 3\).*is not supported"),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.Softplus(beta=2), nn.Linear(4, 2)),
         r"module 1 \('1'\) Softplus\(beta=2.*\(beta=2, threshold=20.0: only beta=1"),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.Softplus(threshold=5), nn.Linear(4, 2)),
         r"threshold=5"),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 2)),
         r"module 1 \('1'\) Dropout\(p=0.1, inplace=False\) is not supported"),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)),
         r"module 1 \('1'\) GELU"),
        (lambda: NotSequential(),
         r"test_torch.NotSequential is not a torch.nn.Sequential"),
        (lambda: nn.Linear(3, 2), r"torch.nn.modules.linear.Linear is not a torch.nn.Sequential"),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Sigmoid()),
         r"module 3 \('3'\) Sigmoid\(\) is not supported \(the last module must be an "
         r"nn.Linear"),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Softmax(-1)),
         r"module 3 \('3'\) Softmax"),
        (lambda: nn.Sequential(nn.Sigmoid(), nn.Linear(3, 2)),
         r"module 0 \('0'\) Sigmoid\(\) is not supported \(an activation before the first"),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.ReLU(), nn.Linear(4, 2)),
         r"module 2 \('2'\) ReLU\(\) is not supported \(a second activation after module 1"),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Tanh()), nn.Linear(4, 2)),
         r"module 1 \('1'\) Sequential"),
        (lambda: nn.Sequential(collections.OrderedDict(fc1=nn.Linear(3, 4), act=nn.Tanh(),
                                                       fc2=nn.Linear(4, 2))),
         r"module 0 \('fc1'\).*its name is not an integer"),
        (lambda: nn.Sequential(), r"has no nn.Linear layer"),
    ],
)
def test_unsupported_modules(model, match):
    with pytest.raises(diagfim.DiagfimError, match=match) as info:
        diagfim.analyze(model(), np.zeros((2, 3)), engine="cpu")
    assert "Sigmoid, nn.Tanh, nn.ReLU, nn.Softplus (beta=1, threshold=20)" in str(info.value)


def test_activations_argument_is_refused_for_torch_models():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(diagfim.DiagfimError, match="activations= is for a safetensors path"):
        diagfim.analyze(model, np.zeros((2, 3)), activations=["relu"])


def test_gil_is_released_during_analysis():
    """Another Python thread runs while the analysis computes."""
    import threading
    import time

    model = every_activation_model(width=32, seed=6)
    x = np.random.default_rng(1).normal(size=(3000, 5))
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    m = diagfim.load_model(model)
    t.start()
    try:
        start = time.perf_counter()
        diagfim.analyze(m, x, engine="cpu", samples=2, bounds="none", threads=1)
        end = time.perf_counter()
    finally:
        stop.set()
        t.join()
    during = [s for s in ticks if start < s < end]
    assert end - start > 0.05, "the analysis is too short to tell"
    assert len(during) >= 5, f"only {len(during)} ticks in {end - start:.3f} s: GIL held?"
