"""Partial analyses: pickling, merging shards into one run's result, and mismatches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import diagfim
from conftest import assert_close, random_state

STATE = random_state([6, 10, 8, 3], seed=21)
ACTS = ["tanh", "softplus"]
X = np.random.default_rng(22).normal(size=(30, 6))
Y = np.random.default_rng(23).integers(0, 3, size=30)
OPTS = dict(activations=ACTS, engine="cpu", samples=6, seed=9)


def _shards(bounds, **extra):
    return [diagfim.analyze_partial(STATE, X[a:b], labels=Y[a:b], input_offset=a,
                                    **OPTS, **extra) for a, b in bounds]


def test_pickled_partials_merge_into_the_single_run():
    whole = diagfim.analyze(STATE, X, labels=Y, **OPTS)
    parts = _shards([(0, 11), (11, 30)])
    assert [p.inputs for p in parts] == [11, 19]
    back = [pickle.loads(pickle.dumps(p, protocol=proto)) for p, proto in zip(parts, (2, 5))]
    assert all(isinstance(p, diagfim.Partial) for p in back)
    merged = diagfim.merge(back)
    assert merged.inputs == 30
    assert list(merged) == list(whole)
    for name in whole:
        assert_close(merged[name], whole[name], 1e-12, name)
    # merge() leaves its arguments alone; Partial.merge adds in place
    assert [p.inputs for p in back] == [11, 19]
    again = back[0].merge(back[1]).finish()
    assert back[0].inputs == 30
    for name in whole:
        assert_close(again[name], whole[name], 1e-12, name)


def test_bytes_and_files_round_trip(tmp_path):
    (p,) = _shards([(0, 30)])
    q = diagfim.Partial.from_bytes(p.to_bytes())
    p.save(tmp_path / "p.safetensors")
    r = diagfim.Partial.load(tmp_path / "p.safetensors")
    a, b, c = p.finish(), q.finish(), r.finish()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(a[name], c[name])
    assert "30 inputs" in repr(p)


def test_overlapping_shards_are_refused():
    """Shards analysed without their input_offset cover the same input indices."""
    parts = [diagfim.analyze_partial(STATE, X[a:b], **OPTS) for a, b in [(0, 15), (15, 30)]]
    with pytest.raises(diagfim.DiagfimError, match=r"inputs overlap \(inputs \[0, 15\)"):
        diagfim.merge(parts)
    # with the offsets they merge into the single run, Monte-Carlo keys included
    whole = diagfim.analyze(STATE, X, **OPTS)
    parts = [diagfim.analyze_partial(STATE, X[a:b], input_offset=a, **OPTS)
             for a, b in [(15, 30), (0, 15)]]
    merged = diagfim.merge(parts)
    for name in whole:
        assert_close(merged[name], whole[name], 1e-12, name)


@pytest.mark.parametrize(
    "other, field",
    [
        (dict(seed=10), "seed"),
        (dict(samples=7), "samples"),
        (dict(family="gaussian", labels=None), "famil"),
        (dict(bounds="none"), "bound"),
    ],
)
def test_mismatched_partials(other, field):
    (a,) = _shards([(0, 10)])
    kwargs = dict(OPTS, labels=Y[10:20], input_offset=10)
    kwargs.update(other)
    b = diagfim.analyze_partial(STATE, X[10:20], **kwargs)
    with pytest.raises(diagfim.DiagfimError, match=field):
        diagfim.merge([a, b])
    with pytest.raises(diagfim.DiagfimError, match=field):
        a.merge(b)


def test_mismatched_models():
    (a,) = _shards([(0, 10)])
    other = random_state([6, 10, 8, 3], seed=99)
    b = diagfim.analyze_partial(other, X[10:20], input_offset=10, labels=Y[10:20], **OPTS)
    with pytest.raises(diagfim.DiagfimError):
        diagfim.merge([a, b])


def test_partial_errors():
    with pytest.raises(diagfim.DiagfimError, match="at least one Partial"):
        diagfim.merge([])
    with pytest.raises(diagfim.DiagfimError, match="takes diagfim.Partial"):
        diagfim.merge([1])
    with pytest.raises(TypeError):
        diagfim.analyze_partial(STATE, X, per_input=True, **OPTS)
    with pytest.raises(diagfim.DiagfimError):
        diagfim.Partial.from_bytes(b"garbage")
