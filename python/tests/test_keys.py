"""Key selection (keys=): a subset run holds exactly the selected keys, with the same arrays as
the full run (CPU engine, bit for bit), SUMMARY.json marks the others as skipped (null means),
and the error cases name what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

import diagfim
from conftest import random_state

WIDTHS = [5, 7, 6, 4]
ACTS = ["sigmoid", "tanh"]


@pytest.fixture(scope="module")
def setup():
    state = random_state(WIDTHS, seed=11)
    model = diagfim.load_model(state, activations=ACTS)
    x = np.random.default_rng(12).normal(size=(24, WIDTHS[0]))
    labels = np.random.default_rng(13).integers(0, WIDTHS[-1], size=len(x))
    return model, x, labels


OPTS = dict(engine="cpu", samples=6, seed=4, threads=2)


@pytest.fixture(scope="module")
def full(setup):
    model, x, labels = setup
    return diagfim.analyze(model, x, labels=labels, **OPTS)


def _tensor_keys(result):
    return {name.split("/", 1)[0] for name in result}


def _assert_same_arrays(sub, full, keys):
    assert _tensor_keys(sub) == set(keys)
    for name in sub:
        got, want = sub[name], full[name]
        assert got.shape == want.shape, name
        # Bit for bit: the same bytes (NaN-safe), not merely close values.
        assert got.tobytes() == want.tobytes(), f"{name} differs from the full run"


@pytest.mark.parametrize(
    "keys",
    [
        ["fisher"],
        "fisher",
        ("var1", "var2"),
        "fisher, ef",
        ["w_opt"],  # derived from var1, var2, cov12: those are not reported
        ["var_x", "var_joint1"],
        ["ef_bias", "ub_var1", "lb_fisher", "mc_var2_se"],
    ],
)
def test_subset_equals_full_run(setup, full, keys):
    model, x, labels = setup
    sub = diagfim.analyze(model, x, labels=labels, keys=keys, **OPTS)
    names = [k.strip() for k in keys.split(",")] if isinstance(keys, str) else list(keys)
    _assert_same_arrays(sub, full, names)
    assert sub.key_names == [k for k in full.key_names if k in names]
    assert sub.computed_keys == sub.key_names
    assert set(sub.skipped_keys) == set(full.key_names) - set(names)
    summary = sub.summary
    assert summary["keys"] == sub.computed_keys
    assert summary["skipped_keys"] == sub.skipped_keys
    for layer in summary["layers"]:
        means = layer["means"]
        for k in full.key_names:
            if k in names:
                assert means[k] is not None, (layer["name"], k)
                full_layer = next(
                    l for l in full.summary["layers"] if l["name"] == layer["name"]
                )
                assert means[k] == full_layer["means"][k], (layer["name"], k)
            else:
                assert means[k] is None, (layer["name"], k)


def test_full_run_lists_every_key(full):
    assert full.computed_keys == full.key_names
    assert full.skipped_keys == []
    assert full.summary["skipped_keys"] == []
    assert "fisher" in full.computed_keys and "ef" in full.computed_keys
    assert set(full.computed_keys) <= set(diagfim.KEY_NAMES)
    assert full.theory_s is not None and full.theory_s >= 0.0


def test_all_string_and_none_equal_the_default(setup, full):
    model, x, labels = setup
    for keys in ("all", None, list(full.key_names)):
        r = diagfim.analyze(model, x, labels=labels, keys=keys, **OPTS)
        _assert_same_arrays(r, full, full.key_names)
        assert r.skipped_keys == []


def test_fisher_only_skips_the_theory_layer(setup, full):
    model, x, _ = setup
    r = diagfim.analyze(model, x, keys=["fisher"], bounds="none", **OPTS)
    assert list(r) == [n for n in full if n.startswith("fisher/")]
    assert r.theory_s is None
    # Without labels, ef is neither computed nor skipped (this run does not have it).
    assert "ef" not in r.skipped_keys and "var1" in r.skipped_keys
    for n in r:
        assert r[n].tobytes() == full[n].tobytes()


def test_per_input_subset(setup):
    model, x, labels = setup
    want = diagfim.analyze(model, x, labels=labels, per_input=True, **OPTS)
    got = diagfim.analyze(model, x, labels=labels, per_input=True, keys="fisher,var1", **OPTS)
    _assert_same_arrays(got, want, ["fisher", "var1"])
    assert got["fisher/0.weight"].shape == (len(x), WIDTHS[1], WIDTHS[0])


def test_partials_with_keys_merge_into_the_subset_run(setup, full):
    model, x, labels = setup
    keys = ["fisher", "var2", "var_x"]
    parts = [
        diagfim.analyze_partial(model, x[s:e], labels=labels[s:e], input_offset=s, keys=keys,
                                **OPTS)
        for s, e in ((0, 10), (10, 24))
    ]
    merged = diagfim.merge(parts)
    assert merged.computed_keys == ["fisher", "var2", "var_x"]
    one = diagfim.analyze(model, x, labels=labels, keys=keys, **OPTS)
    for name in one:
        np.testing.assert_allclose(merged[name], one[name], rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(merged[name], full[name], rtol=1e-12, atol=1e-300)
    # A partial of other keys does not merge with these.
    other = diagfim.analyze_partial(model, x[10:], labels=labels[10:], input_offset=10,
                                    keys=["fisher"], **OPTS)
    with pytest.raises(diagfim.DiagfimError, match="key"):
        diagfim.merge([parts[0], other])


@pytest.mark.parametrize("analyze", [diagfim.analyze, diagfim.analyze_partial])
def test_unknown_key_names_the_valid_ones(setup, analyze):
    model, x, _ = setup
    with pytest.raises(diagfim.DiagfimError, match="unknown key 'fishr'") as err:
        analyze(model, x, keys=["fisher", "fishr"], **OPTS)
    for k in ("fisher", "var1", "w_opt", "ef"):
        assert k in str(err.value)
    with pytest.raises(diagfim.DiagfimError, match="unknown key 'nope'"):
        analyze(model, x, keys="fisher,nope", **OPTS)
    assert issubclass(diagfim.DiagfimError, ValueError)


@pytest.mark.parametrize(
    "keys, kwargs, match",
    [
        ([], {}, "no keys"),
        ("", {}, "key"),
        (["ef"], {}, "labels"),
        (["ub_var1"], {"bounds": "none"}, "bounds"),
        ([1], {}, "key names"),
        (3, {}, "keys must be"),
        (b"fisher", {}, "keys must be"),
    ],
)
def test_bad_selections(setup, keys, kwargs, match):
    model, x, _ = setup
    with pytest.raises(diagfim.DiagfimError, match=match):
        diagfim.analyze(model, x, keys=keys, **{**OPTS, **kwargs})


def test_the_raw_module_takes_strings_and_lists(setup):
    model, x, _ = setup
    a = diagfim._diagfim.analyze(model, x, engine="cpu", samples=4, keys="fisher")
    b = diagfim._diagfim.analyze(model, x, engine="cpu", samples=4, keys=["fisher"])
    assert a.computed_keys == b.computed_keys == ["fisher"]
    with pytest.raises(diagfim.DiagfimError, match="keys must be"):
        diagfim._diagfim.analyze(model, x, engine="cpu", samples=4, keys=3.5)
