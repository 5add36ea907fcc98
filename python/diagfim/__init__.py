"""diagfim: the diagonal Fisher information of MLPs, with the exact variances of its two
Monte-Carlo estimators (squared scores Î1 and negative Hessians Î2), their Monte-Carlo values,
the bounds of Soen & Sun (NeurIPS 2024) and a per-layer recommendation.

This package is a thin layer over the Rust library (``diagfim._diagfim``): it converts a
PyTorch ``nn.Sequential`` (or a safetensors file, or a state dict of numpy arrays) into the
library's model, numpy arrays or torch tensors into its inputs, and returns the results as
float64 numpy arrays keyed exactly like RESULT.safetensors (``"fisher/0.weight"``).

torch is optional: numpy-only users pass a safetensors path or a state dict.

    >>> import torch, diagfim
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> result = diagfim.analyze(model, torch.randn(32, 4), engine="cpu")
    >>> result["fisher/0.weight"].shape
    (8, 4)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Dict, Optional, Union

import numpy as np


def _private_runtime_dir() -> None:
    """Mesa's Vulkan drivers warn on stderr when XDG_RUNTIME_DIR is unset. As the CLI does,
    point it at a private folder of this user's ($TMPDIR/diagfim-runtime-UID, mode 0700; one
    owned by someone else or open to others is not used), before any GPU device exists."""
    if os.environ.get("XDG_RUNTIME_DIR") or not hasattr(os, "getuid"):
        return
    import stat
    import tempfile

    uid = os.getuid()
    path = os.path.join(tempfile.gettempdir(), f"diagfim-runtime-{uid}")
    try:
        os.mkdir(path, 0o700)
    except OSError:
        pass
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and st.st_mode & 0o077 == 0:
        os.environ["XDG_RUNTIME_DIR"] = path


_private_runtime_dir()

from . import _diagfim  # noqa: E402
from ._diagfim import DiagfimError, Model  # noqa: E402

__version__ = _diagfim.__version__

__all__ = [
    "DiagfimError",
    "Model",
    "Partial",
    "Result",
    "KEY_NAMES",
    "SUPPORTED_ACTIVATIONS",
    "analyze",
    "analyze_partial",
    "load_model",
    "merge",
]

#: Activation names of the library (one per hidden layer of a model).
SUPPORTED_ACTIVATIONS = tuple(_diagfim.activation_names())

#: The output key names (``fisher``, ``var1``, …), in contract order: the names ``keys=``
#: takes.
KEY_NAMES = tuple(_diagfim.key_names())

#: torch.nn module class name -> diagfim activation name.
_TORCH_ACTIVATIONS = {
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "ReLU": "relu",
    "Softplus": "softplus",
    "LogSigmoid": "logsigmoid",
}

_SUPPORTED_TEXT = (
    "diagfim supports a torch.nn.Sequential of nn.Linear layers with at most one of "
    "nn.Sigmoid, nn.Tanh, nn.ReLU, nn.Softplus (beta=1, threshold=20), nn.LogSigmoid or "
    "nn.Identity between two of them, ending with an nn.Linear (its output is the family's "
    "natural parameter: logits or mean)"
)

ModelLike = Union["Model", str, "os.PathLike[str]", Mapping[str, Any], Any]


def _torch():
    """The torch module if it is already imported (a torch object can only exist then)."""
    return sys.modules.get("torch")


def _is_tensor(obj: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(obj, torch.Tensor)


def _tensor_to_numpy(t: Any, what: str) -> np.ndarray:
    try:
        return t.detach().cpu().numpy()
    except (TypeError, RuntimeError) as e:
        raise DiagfimError(
            f"invalid input: cannot convert {what} (torch dtype {t.dtype}) to numpy: {e}; "
            "convert it with .float() or .double()"
        ) from None


def _activation_list(activations: Any) -> Optional[list]:
    if activations is None:
        return None
    if isinstance(activations, str):
        text = activations.strip()
        return [a.strip() for a in text.split(",")] if text else []
    if isinstance(activations, Sequence):
        return [str(a) for a in activations]
    raise DiagfimError(
        "invalid input: activations must be a list of names or a comma-separated string "
        f"(supported: {', '.join(SUPPORTED_ACTIVATIONS)}); got {type(activations).__name__}"
    )


def _unsupported(index: int, name: str, module: Any, why: str = "") -> DiagfimError:
    reason = f" ({why})" if why else ""
    return DiagfimError(
        f"invalid model: module {index} ('{name}') {module!r} is not supported{reason}; "
        f"{_SUPPORTED_TEXT}"
    )


def _model_from_torch(model: Any) -> Model:
    """Converts an nn.Sequential in memory (float64 copies of the parameters)."""
    torch = _torch()
    nn = torch.nn
    if not isinstance(model, nn.Sequential):
        raise DiagfimError(
            f"invalid model: {type(model).__module__}.{type(model).__qualname__} is not a "
            f"torch.nn.Sequential; {_SUPPORTED_TEXT}. Wrap the layers in nn.Sequential(...) "
            "or pass a safetensors file with activations"
        )
    layers = []
    activations = []
    pending = None  # activation seen since the last Linear: (index, name, act)
    last = None  # (index, name, module) of the last module that is not an Identity
    seen_linear = False
    for index, (name, module) in enumerate(model.named_children()):
        kind = type(module)
        if kind is nn.Linear:
            try:
                key = int(name)
            except ValueError:
                raise _unsupported(
                    index,
                    name,
                    module,
                    "its name is not an integer: diagfim names parameters '<k>.weight' "
                    "like an nn.Sequential built from positional arguments",
                ) from None
            if seen_linear:
                activations.append(pending[2] if pending is not None else "identity")
            with torch.no_grad():
                try:
                    weight = module.weight.detach().to("cpu", torch.float64).numpy()
                    bias = (
                        None
                        if module.bias is None
                        else module.bias.detach().to("cpu", torch.float64).numpy()
                    )
                except (RuntimeError, ValueError, TypeError) as e:
                    raise _unsupported(
                        index, name, module, f"its parameters cannot be read: {e}"
                    ) from None
            layers.append((key, weight, bias))
            seen_linear = True
            pending = None
            last = (index, name, module)
            continue
        if kind is nn.Identity:
            continue  # a no-op: two Linears with only Identities between use 'identity'
        act = _TORCH_ACTIVATIONS.get(kind.__name__)
        if act is None or kind is not getattr(nn, kind.__name__, None):
            raise _unsupported(index, name, module)
        if kind is nn.Softplus and (module.beta != 1 or module.threshold != 20):
            raise _unsupported(
                index,
                name,
                module,
                f"beta={module.beta}, threshold={module.threshold}: only beta=1 with the "
                "default threshold=20 is diagfim's softplus",
            )
        if not seen_linear:
            raise _unsupported(index, name, module, "an activation before the first Linear")
        if pending is not None:
            raise _unsupported(
                index,
                name,
                module,
                f"a second activation after module {pending[0]} ('{pending[1]}'): one "
                "activation per hidden layer",
            )
        pending = (index, name, act)
        last = (index, name, module)
    if not layers:
        raise DiagfimError(
            f"invalid model: the nn.Sequential has no nn.Linear layer; {_SUPPORTED_TEXT}"
        )
    if last is not None and type(last[2]) is not nn.Linear:
        raise _unsupported(
            last[0],
            last[1],
            last[2],
            "the last module must be an nn.Linear: its output is the family's natural "
            "parameter (logits for categorical, the mean for gaussian)",
        )
    return Model.from_layers(layers, activations)


def _model_from_state_dict(state: Mapping[str, Any], activations: Optional[list]) -> Model:
    """A model from a dict '<k>.weight' / '<k>.bias' -> array, as nn.Sequential names them."""
    groups: Dict[int, list] = {}
    for name, value in state.items():
        parts = str(name).rsplit(".", 1)
        key = None
        if len(parts) == 2 and parts[1] in ("weight", "bias"):
            try:
                key = int(parts[0])
            except ValueError:
                key = None
        if key is None:
            raise DiagfimError(
                f"invalid model: unexpected tensor '{name}': expected '<k>.weight' / "
                "'<k>.bias' of an nn.Sequential of nn.Linear layers"
            )
        arr = _tensor_to_numpy(value, f"'{name}'") if _is_tensor(value) else np.asarray(value)
        if arr.dtype.kind != "f":
            raise DiagfimError(
                f"invalid model: tensor '{name}' has dtype {arr.dtype}; diagfim reads float "
                "arrays (float32 or float64)"
            )
        want = 2 if parts[1] == "weight" else 1
        if arr.ndim != want:
            raise DiagfimError(
                f"invalid model: tensor '{name}' has shape {list(arr.shape)}; a weight must be "
                "2-D [out, in] and a bias 1-D [out]"
            )
        slot = groups.setdefault(key, [None, None])
        index = 0 if parts[1] == "weight" else 1
        if slot[index] is not None:
            raise DiagfimError(
                f"invalid model: tensors '{slot[index][0]}' and '{name}' both give the "
                f"{parts[1]} of the same layer {key}; keep only one"
            )
        slot[index] = (name, np.ascontiguousarray(arr, dtype=np.float64))
    if not groups:
        raise DiagfimError("invalid model: the state dict holds no tensors")
    layers = []
    for key in sorted(groups):
        weight, bias = groups[key]
        if weight is None:
            raise DiagfimError(
                f"invalid model: '{key}.bias' exists but '{key}.weight' is missing"
            )
        layers.append((key, weight[1], None if bias is None else bias[1]))
    if activations is None:
        if len(layers) > 1:
            raise DiagfimError(
                f"invalid model: a state dict needs activations=[...] with {len(layers) - 1} "
                f"name(s), one per hidden layer (supported: {', '.join(SUPPORTED_ACTIVATIONS)})"
            )
        activations = []
    return Model.from_layers(layers, activations)


def load_model(model: ModelLike, activations: Any = None) -> Model:
    """Converts ``model`` into the library's :class:`Model` (done once; reuse it across calls).

    ``model`` is one of:

    - a ``torch.nn.Sequential`` of ``nn.Linear`` layers with ``Sigmoid``, ``Tanh``, ``ReLU``,
      ``Softplus`` (beta=1, threshold=20), ``LogSigmoid`` or ``Identity`` between them and an
      ``nn.Linear`` last; two Linears with nothing (or an ``Identity``) between them use the
      ``identity`` activation. Parameters are copied as float64 and named like
      ``model.named_parameters()`` (``"0.weight"``, ``"2.bias"``). ``activations`` must be None.
    - a path (str or os.PathLike) to a safetensors state dict; ``activations`` overrides the
      file's ``activations`` metadata.
    - a dict ``"<k>.weight"`` / ``"<k>.bias"`` -> numpy array (or tensor), with
      ``activations=[...]`` (one name per hidden layer).
    - a :class:`Model` (returned as is).

    Raises :class:`DiagfimError` naming what is unsupported.
    """
    acts = _activation_list(activations)
    if isinstance(model, Model):
        if acts is not None:
            raise DiagfimError("invalid input: activations= cannot change a diagfim.Model")
        return model
    if isinstance(model, (str, os.PathLike)):
        return Model.load(os.fspath(model), acts)
    torch = _torch()
    if torch is not None and isinstance(model, torch.nn.Module):
        if acts is not None:
            raise DiagfimError(
                "invalid input: activations= is for a safetensors path or a state dict; a "
                "torch model's activations come from its modules"
            )
        return _model_from_torch(model)
    if isinstance(model, Mapping):
        return _model_from_state_dict(model, acts)
    raise DiagfimError(
        f"invalid model: {type(model).__module__}.{type(model).__qualname__} is not supported; "
        "pass a torch.nn.Sequential, a safetensors path, a dict of '<k>.weight'/'<k>.bias' "
        f"arrays with activations=[...], or a diagfim.Model. {_SUPPORTED_TEXT}"
    )


def _as_inputs(inputs: Any) -> np.ndarray:
    """A C-contiguous float64 [B, in] array; copies only float32 or non-contiguous data."""
    if _is_tensor(inputs):
        inputs = _tensor_to_numpy(inputs, "the inputs")
    arr = inputs if isinstance(inputs, np.ndarray) else np.asarray(inputs)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8) or arr.ndim != 2:
        raise DiagfimError(
            "invalid input: inputs must be a float32 or float64 array of shape [B, in]; found "
            f"dtype {arr.dtype} and shape {list(arr.shape)}"
        )
    return np.ascontiguousarray(arr, dtype=np.float64)


def _as_labels(labels: Any, family: str, outputs: int) -> Any:
    """Labels as the library reads them: int64 classes [B] or float64 [B, O] (targets,
    0/1 indicators or counts)."""
    if labels is None:
        return None
    if _is_tensor(labels):
        labels = _tensor_to_numpy(labels, "the labels")
    arr = np.asarray(labels)
    kind = family.strip().lower()
    if kind == "categorical":
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise DiagfimError(
                "invalid input: categorical labels must be an integer (e.g. int64, int32 or "
                f"uint8) array of shape [B]; found dtype {arr.dtype} and shape {list(arr.shape)}"
            )
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > 2**62:
            bad = int(np.argmax(arr > 2**62))
            raise DiagfimError(
                f"invalid input: label {arr[bad]} at index {bad} is out of range: the model "
                f"has {outputs} classes, so labels must be 0 to {outputs - 1}"
            )
        return np.ascontiguousarray(arr, dtype=np.int64)
    if kind == "gaussian":
        if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
            raise DiagfimError(
                "invalid input: Gaussian targets must be a float32 or float64 array of shape "
                f"[B, {outputs}]; found dtype {arr.dtype} and shape {list(arr.shape)}"
            )
        if arr.ndim == 1 and outputs == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != outputs:
            raise DiagfimError(
                f"invalid input: Gaussian targets must have shape [B, {outputs}]; found dtype "
                f"{arr.dtype} and shape {list(arr.shape)}"
            )
        return np.ascontiguousarray(arr, dtype=np.float64)
    if kind in ("bernoulli", "poisson"):
        what = "Bernoulli labels (0/1)" if kind == "bernoulli" else "Poisson counts"
        if arr.dtype.kind not in "biuf":
            raise DiagfimError(
                f"invalid input: {what} must be a bool, integer or float array of shape "
                f"[B, {outputs}]; found dtype {arr.dtype} and shape {list(arr.shape)}"
            )
        if arr.ndim == 1 and outputs == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != outputs:
            raise DiagfimError(
                f"invalid input: {what} must have shape [B, {outputs}]; found dtype "
                f"{arr.dtype} and shape {list(arr.shape)}"
            )
        # Values (0/1, whole counts ≥ 0) are checked by the library, which names the entry.
        return np.ascontiguousarray(arr, dtype=np.float64)
    return arr  # unknown family: the library names the problem


def _count(name: str, value: Any, minimum: int = 0, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DiagfimError(f"invalid input: {name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _key_list(keys: Any) -> Any:
    """None (every key), a comma-separated string, or a list of key names (checked by the
    library, whose error lists the valid names)."""
    if keys is None or isinstance(keys, str):
        return keys
    if isinstance(keys, (Sequence, set, frozenset)) and not isinstance(keys, (bytes, bytearray)):
        names = list(keys)
        for k in names:
            if not isinstance(k, str):
                raise DiagfimError(
                    f"invalid input: keys must be key names (strings); got {k!r} "
                    f"(the keys are {', '.join(KEY_NAMES)})"
                )
        return names
    raise DiagfimError(
        "invalid input: keys must be None (every key), a list of key names or a "
        f"comma-separated string (the keys are {', '.join(KEY_NAMES)}); got "
        f"{type(keys).__name__}"
    )


def _common(model, inputs, family, sigma2, activations, samples, seed, labels, engine,
            bounds, input_offset, batch_size, threads, keys, progress):
    mlp = load_model(model, activations)
    if not isinstance(family, str):
        raise DiagfimError(f"invalid input: family must be a string, got {family!r}")
    for name, value in (("engine", engine), ("bounds", bounds)):
        if not isinstance(value, str):
            raise DiagfimError(f"invalid input: {name} must be a string, got {value!r}")
    x = _as_inputs(inputs)
    kwargs = dict(
        family=family,
        sigma2=float(sigma2),
        samples=_count("samples", samples),
        seed=_count("seed", seed),
        labels=_as_labels(labels, family, mlp.widths[-1]),
        engine=engine,
        bounds=bounds,
        input_offset=_count("input_offset", input_offset),
        batch_size=_count("batch_size", batch_size, 1, optional=True),
        threads=_count("threads", threads, 0, optional=True),
        keys=_key_list(keys),
        progress=bool(progress),
    )
    return mlp, x, kwargs


def analyze(
    model: ModelLike,
    inputs: Any,
    *,
    family: str = "categorical",
    sigma2: float = 1.0,
    activations: Any = None,
    samples: int = 16,
    seed: int = 0,
    labels: Any = None,
    engine: str = "auto",
    bounds: str = "all",
    per_input: bool = False,
    input_offset: int = 0,
    batch_size: Optional[int] = None,
    threads: Optional[int] = None,
    keys: Any = None,
    progress: bool = False,
) -> "Result":
    """Exact FIM diagonal, estimator variances, Monte-Carlo estimates and bounds per parameter.

    The same analysis as ``diagfim analyze`` on the command line (README, "Output keys").

    Args:
        model: a ``torch.nn.Sequential``, a safetensors path, a state dict with
            ``activations``, or a :class:`Model` (see :func:`load_model`).
        inputs: numpy array or torch tensor [B, in], float32 or float64. A C-contiguous
            float64 numpy array is read in place without a copy (do not modify it while the
            analysis runs); float32, non-contiguous data and torch tensors on a GPU are copied
            (a CPU float64 tensor shares its memory through ``.numpy()``).
        family: ``"categorical"`` (logits), ``"gaussian"`` (mean, variance ``sigma2``),
            ``"bernoulli"`` (multi-label logits) or ``"poisson"`` (log-rates).
        activations: hidden activations for a safetensors path or a state dict.
        samples: N, labels sampled per input (≥ 2).
        seed: seed of the counter-based RNG.
        labels: data labels for the empirical Fisher ``ef``: integer classes [B]
            (categorical), float targets [B, O] (gaussian), 0/1 indicators [B, O]
            (bernoulli; bool, integer or float) or counts [B, O] (poisson).
        engine: ``"auto"`` (GPU on a hardware adapter, else CPU), ``"cpu"`` or ``"gpu"``.
        bounds: ``"all"``, ``"keys"`` or ``"none"``.
        per_input: keep a leading input axis instead of averaging over inputs.
        input_offset: index of the first input in a larger data set: input i draws the labels
            of input ``input_offset + i`` (shards of one data set then draw what one run would).
        batch_size: inputs per block (memory only; results do not change). Default 256.
        threads: CPU worker threads (default: all cores; results do not change).
        keys: the keys to compute (README, "Output keys"): None for every key this family,
            labels and bounds mode have, or a list of names (``["fisher", "var1"]``) or a
            comma-separated string (``"fisher,var1"``). The engines then compute only what
            these keys need (``keys=["fisher"]`` skips the sampling and the bounds); the
            values of the keys computed do not change. An unknown name, or a key this run
            cannot compute (``ef`` without labels, a bound with ``bounds="none"``), raises
            :class:`DiagfimError`. SUMMARY's means are None for the keys not selected.
        progress: draw a progress bar on stderr (when stderr is a terminal).

    The GIL is released while the analysis runs. Errors raise :class:`DiagfimError`.
    """
    mlp, x, kwargs = _common(model, inputs, family, sigma2, activations, samples, seed,
                             labels, engine, bounds, input_offset, batch_size, threads,
                             keys, progress)
    return Result(_diagfim.analyze(mlp, x, per_input=bool(per_input), **kwargs))


class Result(Mapping):
    """The results of an analysis: a read-only mapping from RESULT.safetensors' names
    (``"fisher/0.weight"``, ``"var1/2.bias"``, …) to float64 numpy arrays of the parameter's
    shape (with a leading input axis for per-input keys when ``per_input=True``).

    The arrays are read-only and created on first access.
    """

    __slots__ = ("_report", "_keys", "_cache", "_summary")

    def __init__(self, report: "_diagfim.Report") -> None:
        self._report = report
        self._keys = tuple(report.keys())
        self._cache: Dict[str, np.ndarray] = {}
        self._summary: Optional[dict] = None

    def __getitem__(self, name: str) -> np.ndarray:
        arr = self._cache.get(name)
        if arr is None:
            arr = self._report.get(name) if isinstance(name, str) else None
            if arr is None:
                raise KeyError(name)
            arr.flags.writeable = False
            self._cache[name] = arr
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    @property
    def summary(self) -> dict:
        """SUMMARY.json as a dict (run information, per-tensor means, bounds and the
        recommendation ``summary["layers"][i]["theory"]["recommendation"]["estimator"]``)."""
        if self._summary is None:
            self._summary = json.loads(self._report.summary_json())
        return self._summary

    @property
    def key_names(self) -> list:
        """The key names present (``fisher``, ``var1``, …), in contract order."""
        present = {name.split("/", 1)[0] for name in self._keys}
        return [k for k in _diagfim.key_names() if k in present]

    @property
    def computed_keys(self) -> list:
        """The keys computed (SUMMARY.json's ``keys``), in contract order: the selection
        (``keys=``) less what this family, labels and bounds mode do not have."""
        return list(self._report.computed_keys)

    @property
    def skipped_keys(self) -> list:
        """The keys this run could compute but that ``keys=`` did not select (SUMMARY.json's
        ``skipped_keys``; their means are None there)."""
        return list(self._report.skipped_keys)

    @property
    def params(self) -> list:
        """The parameter names (``0.weight``, ``0.bias``, …), in model order."""
        out = []
        for name in self._keys:
            param = name.split("/", 1)[1]
            if param not in out:
                out.append(param)
        return out

    @property
    def inputs(self) -> int:
        return self._report.inputs

    @property
    def samples(self) -> int:
        return self._report.samples

    @property
    def engine(self) -> str:
        return self._report.engine

    @property
    def family(self) -> str:
        return self._report.family

    @property
    def wall_time_s(self) -> float:
        return self._report.wall_time_s

    @property
    def theory_s(self) -> Optional[float]:
        """Seconds of the theory layer's per-input work (spectra, trace bounds), summed over
        threads; None when it did not run (e.g. ``bounds="none"`` or ``keys=["fisher"]``)."""
        return self._report.theory_s

    def table(self) -> str:
        """The per-tensor table of key means that the command line prints."""
        return self._report.table()

    def save(self, result_path: Union[str, "os.PathLike[str]"],
             summary_path: Union[str, "os.PathLike[str]", None] = None) -> None:
        """Writes RESULT.safetensors (float64) and, if given, SUMMARY.json, exactly as the
        command line does. Read them back with ``safetensors.numpy.load_file``."""
        self._report.save(os.fspath(result_path))
        if summary_path is not None:
            self._report.save_summary(os.fspath(summary_path))

    def to_torch(self, model: Any = None) -> Dict[str, Dict[str, Any]]:
        """The results as ``{key: {param_name: float64 tensor}}`` keyed like
        ``model.named_parameters()`` (e.g. ``out["fisher"]["0.weight"]``), on each
        parameter's device. Without ``model`` the tensors stay on the CPU. Raises
        :class:`DiagfimError` if a parameter is missing from ``model`` or has another shape."""
        import torch

        params = dict(model.named_parameters()) if model is not None else None
        out: Dict[str, Dict[str, Any]] = {}
        for name in self._keys:
            key, param = name.split("/", 1)
            arr = self[name]
            device = None
            if params is not None:
                p = params.get(param)
                if p is None:
                    raise DiagfimError(
                        f"invalid input: the result's parameter '{param}' is not among the "
                        f"model's parameters ({', '.join(params)})"
                    )
                shape = tuple(p.shape)
                if tuple(arr.shape[arr.ndim - len(shape):]) != shape or arr.ndim - len(shape) > 1:
                    raise DiagfimError(
                        f"invalid input: '{name}' has shape {list(arr.shape)} but the model's "
                        f"'{param}' has shape {list(shape)}"
                    )
                device = p.device
            out.setdefault(key, {})[param] = torch.tensor(arr, dtype=torch.float64, device=device)
        return out

    def __repr__(self) -> str:
        r = self._report
        engine = f"engine {r.engine}" + (f" on {r.adapter}" if r.engine == "gpu" else "")
        head = (
            f"<diagfim.Result: {r.inputs} inputs, N = {r.samples}, {r.family}, {engine}, "
            f"{len(self.params)} tensors × {len(self.key_names)} keys"
            f"{', per input' if r.per_input else ''}; per-tensor means:"
        )
        return head + "\n" + r.table().rstrip("\n") + ">"


def _partial_from_bytes(data: bytes) -> "Partial":
    """Unpickles a :class:`Partial` (module-level so every pickle protocol finds it)."""
    return Partial.from_bytes(data)


class Partial:
    """A mergeable partial analysis of a shard of the inputs (:func:`analyze_partial`).

    Partials of disjoint shards (each with its ``input_offset``) merge into the result of one
    run over all inputs. A Partial pickles (as the library's self-describing bytes), so it can
    travel between processes (multiprocessing, Ray, Dask).
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @property
    def inputs(self) -> int:
        """Number of inputs summed so far."""
        return self._inner.inputs

    def merge(self, other: "Partial") -> "Partial":
        """Adds ``other`` (of the same model and options) in place; returns self. Raises
        :class:`DiagfimError` naming the field that differs."""
        if not isinstance(other, Partial):
            raise DiagfimError(
                f"invalid input: can only merge a diagfim.Partial, got {type(other).__name__}"
            )
        if other is self:
            raise DiagfimError(
                "partial result: cannot merge a partial with itself: their inputs overlap"
            )
        self._inner.merge(other._inner)
        return self

    def finish(self) -> Result:
        """The result over all inputs merged so far."""
        return Result(self._inner.finish())

    def to_bytes(self) -> bytes:
        return self._inner.to_bytes()

    @staticmethod
    def from_bytes(data: bytes) -> "Partial":
        return Partial(_diagfim.Partial.from_bytes(bytes(data)))

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the partial (safetensors) to ``path``."""
        self._inner.save(os.fspath(path))

    @staticmethod
    def load(path: Union[str, "os.PathLike[str]"]) -> "Partial":
        return Partial(_diagfim.Partial.load(os.fspath(path)))

    def __reduce__(self):
        return (_partial_from_bytes, (self.to_bytes(),))

    def __repr__(self) -> str:
        return f"<diagfim.Partial: {self.inputs} inputs>"


def analyze_partial(
    model: ModelLike,
    inputs: Any,
    *,
    family: str = "categorical",
    sigma2: float = 1.0,
    activations: Any = None,
    samples: int = 16,
    seed: int = 0,
    labels: Any = None,
    engine: str = "auto",
    bounds: str = "all",
    input_offset: int = 0,
    batch_size: Optional[int] = None,
    threads: Optional[int] = None,
    keys: Any = None,
    progress: bool = False,
) -> Partial:
    """The analysis of one shard of a data set, to :func:`merge` with the other shards'.

    Same arguments as :func:`analyze` (no ``per_input``). Give each shard the index of its
    first input in the whole data set as ``input_offset``: merged shards then equal one
    :func:`analyze` of all inputs.
    """
    mlp, x, kwargs = _common(model, inputs, family, sigma2, activations, samples, seed,
                             labels, engine, bounds, input_offset, batch_size, threads,
                             keys, progress)
    return Partial(_diagfim.analyze_partial(mlp, x, **kwargs))


def merge(partials: Sequence[Partial]) -> Result:
    """Merges partials (none is modified) and finishes them into one :class:`Result`."""
    items = list(partials)
    for p in items:
        if not isinstance(p, Partial):
            raise DiagfimError(
                f"invalid input: merge takes diagfim.Partial objects, got {type(p).__name__}"
            )
    if not items:
        raise DiagfimError("invalid input: merge needs at least one Partial")
    return Result(_diagfim.merge([p._inner for p in items]))
