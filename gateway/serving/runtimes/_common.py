"""Helpers the runtimes share: error wording and table conversion at the runtime boundary."""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway.error_text import first_line
from gateway.errors import GatewayError, ModelPredictError
from gateway.serving.types import Frame

PANDAS_EXTRA = "pip install 'gateway[pandas]'"


def predict_error(exc: BaseException) -> GatewayError:
    """Map an exception raised by a model to what the client sees (ours pass through unchanged)."""
    if isinstance(exc, GatewayError):
        return exc
    # MLflow's leading words, which clients may match on; then what went wrong, never a traceback.
    return ModelPredictError(
        "Encountered an unexpected error while evaluating the model. Verify that the serialized input "
        f"Dataframe is compatible with the model for inference. Error: {first_line(exc)}"
    )


def import_pandas() -> Any | None:
    """pandas when installed, else None (it is an optional extra of the gateway)."""
    try:
        import pandas
    except ImportError:
        return None
    return pandas


def frame_to_dataframe(frame: Frame, pandas: Any) -> Any:
    """A pandas DataFrame with the Frame's columns in order (feature names survive for sklearn)."""
    return pandas.DataFrame(frame.columns, copy=False) if frame.columns else pandas.DataFrame(index=range(frame.nrows))


def frame_to_matrix(frame: Frame) -> np.ndarray:
    """All columns side by side as one 2-D array, like ``DataFrame.values`` (dtypes promoted)."""
    if frame.block is not None:
        return frame.block
    columns = list(frame.columns.values())
    if not columns:
        return np.empty((frame.nrows, 0))
    return np.stack([np.asarray(c) for c in columns], axis=1)


def columns_of(data: dict[str, Any]) -> Frame | None:
    """A dict of equal-length 1-D arrays read as a table (what mlflow makes of it for column models)."""
    lengths = set()
    columns: dict[str | int, np.ndarray] = {}
    for name, value in data.items():
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.ndim != 1:
            return None
        lengths.add(arr.shape[0])
        columns[name] = arr
    if len(lengths) != 1:
        return None
    return Frame(columns=columns, nrows=lengths.pop())
