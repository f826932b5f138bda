"""Shape a prediction for the ``{"predictions": ...}`` body the way MLflow's scoring server does.

MLflow (``_get_jsonable_obj`` + ``NumpyEncoder``): ndarray -> nested lists; DataFrame -> list of row
records; Series -> one-column records (column = series name, or ``0``); dict/list -> as is with numpy
values converted; numpy scalars -> Python; bytes -> base64 (``encodebytes``, as MLflow);
datetimes -> ISO strings.
Our ``Frame`` answers like a DataFrame. pandas is imported only when the prediction is a pandas object.

Non-string dict keys become strings here (``json.dumps`` does that in MLflow; orjson would refuse them).
NaN and infinities stay floats: orjson writes them as ``null``.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import numpy as np

from gateway.serving.types import Frame

# Exact types only: np.float64 subclasses float but orjson refuses it, so it must not slip through.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def to_jsonable(prediction: Any) -> Any:
    """Convert ``prediction`` into lists, dicts and JSON scalars (orjson can dump the result)."""
    # Fast paths first: a numeric ndarray or a dict of them is almost every ONNX/sklearn answer.
    if isinstance(prediction, np.ndarray):
        return _array(prediction)
    if isinstance(prediction, dict):
        return {_key(k): _array(v) if isinstance(v, np.ndarray) else to_jsonable(v) for k, v in prediction.items()}
    if type(prediction) in _SCALARS:
        return prediction
    if isinstance(prediction, Frame):
        return _records(list(prediction.columns), [_array(c) for c in prediction.columns.values()])
    if isinstance(prediction, list | tuple):
        return [to_jsonable(v) for v in prediction]
    if isinstance(prediction, np.generic):
        return _scalar(prediction)
    if isinstance(prediction, bytes | bytearray | memoryview):
        return _b64(bytes(prediction))
    if isinstance(prediction, dt.datetime | dt.date | dt.time):
        return prediction.isoformat()
    if type(prediction).__module__.startswith("pandas"):
        return _pandas(prediction)
    if hasattr(prediction, "model_dump"):  # a pydantic model (MLflow's NumpyEncoder does the same)
        return to_jsonable(prediction.model_dump())
    return prediction


def _array(arr: np.ndarray) -> Any:
    kind = arr.dtype.kind
    if kind in "biuf":
        return arr.tolist()
    if kind == "M":
        # datetime64[ns].tolist() gives int nanoseconds; ISO strings are what MLflow sends.
        return np.datetime_as_string(arr).tolist()
    if kind == "m":
        return arr.astype("timedelta64[ns]").astype(np.int64).tolist()
    if kind == "U":
        return arr.tolist()
    # object, bytes, complex...: convert element by element (bytes -> base64, nested arrays -> lists).
    return _nested(arr.tolist())


def _nested(value: Any) -> Any:
    if isinstance(value, list):
        return [_nested(v) for v in value]
    if type(value) in _SCALARS:
        return value
    return to_jsonable(value)


def _scalar(value: np.generic) -> Any:
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value))
    if isinstance(value, np.bytes_):
        return _b64(bytes(value))
    item = value.item()
    return item if type(item) in _SCALARS else to_jsonable(item)


def _b64(data: bytes) -> str:
    # encodebytes (newline every 76 chars and at the end) is what MLflow's NumpyEncoder sends.
    return base64.encodebytes(data).decode("ascii")


def _key(key: Any) -> Any:
    if isinstance(key, str):
        return key
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, bool) or key is None:
        return "true" if key else ("false" if key is not None else "null")
    return str(key)


def _records(names: list[Any], columns: list[list[Any]]) -> list[dict[Any, Any]]:
    keys = [_key(n) for n in names]
    # One or two columns (a label, probabilities) is the usual answer: a dict display per row is several
    # times faster than dict(zip(...)) (docs/benchmarks.md), and a joined call shapes every row of its
    # requests here.
    if len(keys) == 1:
        (k0,) = keys
        return [{k0: a} for a in columns[0]]
    if len(keys) == 2:
        k0, k1 = keys
        return [{k0: a, k1: b} for a, b in zip(columns[0], columns[1], strict=True)]
    # Each row of zip(*columns) has one value per key: the inner zip needs no strict check.
    return [dict(zip(keys, row)) for row in zip(*columns, strict=True)]  # noqa: B905


def _pandas(obj: Any) -> Any:
    import pandas as pd

    if isinstance(obj, pd.Series):
        obj = obj.to_frame(name=obj.name if obj.name is not None else 0)
    if isinstance(obj, pd.DataFrame):
        columns = [_array(obj.iloc[:, i].to_numpy()) for i in range(obj.shape[1])]
        return _records(list(obj.columns), columns)
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    if obj is pd.NaT or obj is pd.NA:
        return None
    return obj
