"""ONNX packages served with onnxruntime directly, matching mlflow's ``_OnnxModelWrapper``.

The session is built once, from the model's PATH (so tensors saved as external data load), with the
package's providers and session options. Everything predict needs per input (name, dtype, rank) is
computed at load, so a request only casts and feeds.

Frame answers: mlflow returns a DataFrame with one column per output, each output flattened; for a
classifier with ``label`` [N] and ``probabilities`` [N, 3] that fails ("All arrays must be of the same
length"). We answer one column per output with one value per row: a [N] or [N, 1] output gives scalars,
a wider output gives each row's sub-array (``{"label": 0, "probabilities": [0.97, 0.03, 0.0]}``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from gateway.error_text import first_line
from gateway.errors import BadRequest, InvalidPackage, ServiceUnavailable
from gateway.serving.package import ModelPackage
from gateway.serving.runtimes._common import frame_to_matrix, predict_error
from gateway.serving.types import Frame, ModelInput

logger = logging.getLogger("gateway.serving")

CPU_PROVIDER = "CPUExecutionProvider"
DEFAULT_PROVIDERS: list[Any] = ["CUDAExecutionProvider", CPU_PROVIDER]  # mlflow's default list

_ORT_DTYPES: dict[str, np.dtype[Any]] = {
    f"tensor({name})": np.dtype(dtype)
    for name, dtype in {
        "float": np.float32,
        "double": np.float64,
        "float16": np.float16,
        "bool": np.bool_,
        "int8": np.int8,
        "int16": np.int16,
        "int32": np.int32,
        "int64": np.int64,
        "uint8": np.uint8,
        "uint16": np.uint16,
        "uint32": np.uint32,
        "uint64": np.uint64,
        "string": np.object_,
    }.items()
}
# Which input kinds may be cast to a graph dtype of each kind without losing meaning.
_CASTABLE_FROM = {"f": "fiub", "i": "iub", "u": "ub", "b": "b", "O": "OUS"}
SPINNING_ENTRIES = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")
_EXECUTION_MODES = {
    "SEQUENTIAL": ort.ExecutionMode.ORT_SEQUENTIAL,
    "PARALLEL": ort.ExecutionMode.ORT_PARALLEL,
}


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One graph input: its name, numpy dtype (None for non-tensor inputs) and dims (None = variable)."""

    name: str
    dtype: np.dtype[Any] | None
    shape: tuple[int | None, ...] | None

    def prepare(self, value: Any) -> np.ndarray:
        """Cast to the graph's dtype (float64 -> float32 as mlflow does, and other lossless casts)
        and add a trailing axis when a column feeds a [N, 1] input."""
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype == object and arr.ndim == 1 and arr.size and isinstance(arr[0], list | np.ndarray):
            arr = np.stack([np.asarray(v) for v in arr])  # a column of per-row tensors
        dtype = self.dtype
        if dtype is not None and arr.dtype != dtype and arr.dtype.kind in _CASTABLE_FROM.get(dtype.kind, ""):
            arr = arr.astype(dtype)
        shape = self.shape
        if shape is not None and arr.ndim != len(shape) and arr.ndim >= 1:
            rest = [d for d in shape[1:] if d is not None]
            if len(rest) == len(shape) - 1 and arr.size == arr.shape[0] * int(np.prod(rest)):
                arr = arr.reshape((arr.shape[0], *rest))
            elif arr.ndim + 1 == len(shape) and shape[-1] in (None, 1):
                arr = arr[..., np.newaxis]
        return arr


class OnnxRuntime:
    """An ``onnxruntime.InferenceSession`` over one package; ``predict`` is thread-safe."""

    def __init__(
        self, pkg: ModelPackage, *, intra_op_num_threads: int | None = None, allow_spinning: bool | None = None
    ) -> None:
        if pkg.model_file is None:  # read_package always sets it for onnx; guard the type
            raise InvalidPackage(f"Model package at '{pkg.path}' names no ONNX model file.")
        self.package = pkg
        options = build_session_options(pkg, intra_op_num_threads=intra_op_num_threads, allow_spinning=allow_spinning)
        providers = select_providers(pkg.flavor_conf.get("providers"))
        self._session: ort.InferenceSession | None = _create_session(str(pkg.model_file), providers, options)
        self.inputs = [InputSpec(i.name, _ORT_DTYPES.get(i.type), _dims(i.shape)) for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._by_name = {spec.name: spec for spec in self.inputs}
        logger.info(
            "Loaded ONNX model %s: inputs %s, outputs %s, providers %s",
            pkg.model_file,
            [s.name for s in self.inputs],
            self.output_names,
            self._session.get_providers(),
        )

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            raise ServiceUnavailable(f"Model at '{self.package.path}' has been unloaded.")
        return self._session

    def predict(self, data: ModelInput, params: dict[str, Any] | None = None) -> Any:
        session = self.session
        feeds = self._feeds(data)
        try:
            outputs = session.run(self.output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise predict_error(exc) from exc
        if isinstance(data, Frame):
            return self._frame_of(outputs, data.nrows)
        return dict(zip(self.output_names, outputs, strict=True))

    def unload(self) -> None:
        self._session = None

    # ----------------------------------------------------------------- feeds

    def _feeds(self, data: ModelInput) -> dict[str, np.ndarray]:
        if isinstance(data, np.ndarray):
            if len(self.inputs) != 1:
                raise BadRequest(
                    f"A single array cannot feed this ONNX model: it takes {len(self.inputs)} inputs "
                    f"{self._names()}. Send named inputs (a JSON object under 'inputs') or a table."
                )
            spec = self.inputs[0]
            return {spec.name: spec.prepare(data)}
        if isinstance(data, Frame):
            return self._frame_feeds(data)
        if isinstance(data, Mapping):
            missing = [s.name for s in self.inputs if s.name not in data]
            if missing:
                raise BadRequest(f"ONNX model inputs {missing} are missing; the model takes {self._names()}.")
            # Extra names are dropped: onnxruntime would refuse the whole request for them.
            return {s.name: s.prepare(data[s.name]) for s in self.inputs}
        raise BadRequest(f"ONNX models take an array, named arrays or a table, not {type(data).__name__}.")

    def _frame_feeds(self, frame: Frame) -> dict[str, np.ndarray]:
        if len(self.inputs) == 1:
            spec = self.inputs[0]
            # One graph input gets every column as a matrix (mlflow: df.values); a lone column of
            # per-row tensors, or a 1-D graph input, takes the column itself.
            if len(frame.names) == 1:
                (column,) = frame.columns.values()
                if column.dtype == object or (spec.shape is not None and len(spec.shape) == 1):
                    return {spec.name: spec.prepare(column)}
            return {spec.name: spec.prepare(frame_to_matrix(frame))}
        # Several graph inputs: one column each, by name (or by position for an unnamed table).
        columns = frame.columns
        if all(isinstance(key, int) for key in columns) and len(columns) == len(self.inputs):
            return {s.name: s.prepare(col) for s, col in zip(self.inputs, columns.values(), strict=True)}
        missing = [s.name for s in self.inputs if s.name not in columns]
        if missing:
            raise BadRequest(
                f"ONNX model inputs {missing} are missing from the table; the model takes {self._names()} "
                f"and the table has columns {list(columns)}."
            )
        return {s.name: s.prepare(columns[s.name]) for s in self.inputs}

    def _names(self) -> list[str]:
        return [s.name for s in self.inputs]

    # ----------------------------------------------------------------- outputs

    def _frame_of(self, outputs: list[Any], nrows: int) -> Frame:
        columns: dict[str | int, np.ndarray] = {}
        for name, value in zip(self.output_names, outputs, strict=True):
            arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
            if arr.ndim >= 2 and arr.shape[0] == nrows:
                if arr.size == nrows:
                    arr = arr.reshape(nrows)  # [N, 1] -> one scalar per row, as mlflow flattens it
                # else: kept [N, ...]; each row's sub-array becomes that row's value (mlflow cannot
                # answer these, see above), and ``to_jsonable`` turns row i into a nested list.
            elif arr.ndim == 0 or arr.shape[0] != nrows:
                if arr.size != nrows:
                    raise predict_error(
                        ValueError(
                            f"output '{name}' has shape {list(arr.shape)}, which is not one value per row of "
                            f"the {nrows}-row input"
                        )
                    )
                arr = arr.reshape(nrows)
            columns[name] = arr
        return Frame(columns=columns, nrows=nrows)


def select_providers(declared: Any) -> list[Any]:
    """The package's providers that this onnxruntime build has, in order; CPU when none is left."""
    if isinstance(declared, str):
        declared = [declared]
    elif not declared:
        declared = DEFAULT_PROVIDERS
    # (name, options) pairs come back from YAML as two-element lists; onnxruntime wants tuples.
    entries = [tuple(p) if isinstance(p, list) else p for p in declared]
    available = set(ort.get_available_providers())
    usable = [p for p in entries if _provider_name(p) in available]
    dropped = [_provider_name(p) for p in entries if _provider_name(p) not in available]
    if dropped:
        logger.warning(
            "ONNX model declares execution providers %s; %s are not available in this "
            "onnxruntime build (available: %s); using %s",
            [_provider_name(p) for p in entries],
            dropped,
            sorted(available),
            [_provider_name(p) for p in usable] or [CPU_PROVIDER],
        )
    return usable or [CPU_PROVIDER]


def build_session_options(
    pkg: ModelPackage, *, intra_op_num_threads: int | None = None, allow_spinning: bool | None = None
) -> ort.SessionOptions:
    """SessionOptions from the flavor's ``onnx_session_options``; ``intra_op_num_threads`` applies when
    the package does not set it (onnxruntime's default pool would take every core, trap 4).

    ``allow_spinning=False`` (several workers share the cores) sets ``session.intra_op.allow_spinning``
    and ``session.inter_op.allow_spinning`` to "0" unless the package's ``extra_session_config`` sets
    them: a spinning pool thread burns a core between small runs that another worker needs."""
    raw = pkg.flavor_conf.get("onnx_session_options") or {}
    if not isinstance(raw, Mapping):
        raise InvalidPackage(f"onnx_session_options in '{pkg.path}/MLmodel' must be a mapping, not {raw!r}.")
    options = ort.SessionOptions()
    try:
        for key, value in raw.items():
            if value is None:
                continue
            if key == "execution_mode":
                options.execution_mode = _EXECUTION_MODES[str(value).upper()]
            elif key == "graph_optimization_level":
                options.graph_optimization_level = _optimization_level(value)
            elif key == "extra_session_config":
                for entry, entry_value in dict(value).items():
                    options.add_session_config_entry(str(entry), str(entry_value))
            elif key in ("intra_op_num_threads", "inter_op_num_threads") or _is_plain_option(options, key):
                setattr(options, key, value)
            else:
                logger.warning("Ignoring unknown onnx_session_options key %r in %s", key, pkg.path)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InvalidPackage(
            f"onnx_session_options in '{pkg.path}/MLmodel' has an invalid value: {first_line(exc)}"
        ) from exc
    if not raw.get("intra_op_num_threads") and intra_op_num_threads is not None:
        options.intra_op_num_threads = intra_op_num_threads
    if allow_spinning is False:
        extra = raw.get("extra_session_config") or {}
        for entry in SPINNING_ENTRIES:
            if entry not in extra:
                options.add_session_config_entry(entry, "0")
    return options


def _create_session(path: str, providers: list[Any], options: ort.SessionOptions) -> ort.InferenceSession:
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as exc:
        if providers == [CPU_PROVIDER]:
            raise InvalidPackage(f"ONNX model '{path}' cannot be loaded: {first_line(exc)}") from exc
        # A provider compiled in but unable to start (no GPU driver): serve on CPU rather than not at all.
        logger.warning(
            "onnxruntime could not start providers %s for %s (%s); falling back to CPU",
            providers,
            path,
            first_line(exc),
        )
        return _create_session(path, [CPU_PROVIDER], options)
    inactive = [_provider_name(p) for p in providers if _provider_name(p) not in session.get_providers()]
    if inactive:
        logger.warning("onnxruntime dropped providers %s for %s; active: %s", inactive, path, session.get_providers())
    return session


def _optimization_level(value: Any) -> ort.GraphOptimizationLevel:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        return ort.GraphOptimizationLevel.__members__[value.upper()]
    return ort.GraphOptimizationLevel(int(value))


def _is_plain_option(options: ort.SessionOptions, key: str) -> bool:
    return not key.startswith("_") and isinstance(getattr(options, key, None), bool | int | str)


def _provider_name(entry: Any) -> str | None:
    if isinstance(entry, tuple | list):
        entry = entry[0] if entry else None
    return entry if isinstance(entry, str) else None


def _dims(shape: Any) -> tuple[int | None, ...] | None:
    if not isinstance(shape, list | tuple):
        return None
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
