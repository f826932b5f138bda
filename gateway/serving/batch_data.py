"""Row-wise joining and splitting of model inputs and outputs, for the batcher.

Inputs are joined with one ``np.concatenate`` per column (or tensor) and split back as views; only
inputs with the same structure (``batch_key``) are joined. Outputs are split by row ranges when they
have one row per input row (``output_rows``); anything else makes the batcher run requests one by one.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from gateway.serving.types import Frame

# (start, stop) row ranges, one per request in a batch.
Bounds = Sequence[tuple[int, int]]


def batch_key(data: Any) -> tuple[Hashable, int] | None:
    """(structure, rows) when ``data`` can share a model call with others of the same structure:
    column names or tensor names, dtypes and non-batch dimensions. None: it runs alone."""
    if isinstance(data, Frame):
        rows = data.nrows
        if rows < 1:
            return None
        block = data.block
        if block is not None and block.ndim == 2 and block.shape[0] == rows:
            # Columns that are views of one matrix: the same key as below, without looking at each.
            dtype = block.dtype
            return ("frame", tuple([(name, dtype, ()) for name in data.names])), rows
        spec = []
        for name, col in data.columns.items():
            if not isinstance(col, np.ndarray) or col.ndim < 1 or col.shape[0] != rows:
                return None
            spec.append((name, col.dtype, col.shape[1:]))
        return ("frame", tuple(spec)), rows
    if isinstance(data, np.ndarray):
        if data.ndim < 1 or data.shape[0] < 1:
            return None
        return ("tensor", data.dtype, data.shape[1:]), int(data.shape[0])
    if isinstance(data, dict) and data:
        tensors = []
        rows = -1
        for name, arr in data.items():
            if not isinstance(arr, np.ndarray) or arr.ndim < 1 or arr.shape[0] < 1:
                return None
            if rows not in (-1, arr.shape[0]):
                return None
            rows = int(arr.shape[0])
            tensors.append((name, arr.dtype, arr.shape[1:]))
        return ("tensors", tuple(tensors)), rows
    return None


def join_inputs(parts: Sequence[Any]) -> Any:
    """One input holding every part's rows in order (parts share a ``batch_key``)."""
    first = parts[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, Frame):
        nrows = sum(p.nrows for p in parts)
        blocks = [p.block for p in parts]
        if all(b is not None for b in blocks):
            # Keep the one-matrix fast path: join the matrices, columns stay views of the result.
            block = np.concatenate(blocks)
            return Frame.of_block(first.names, block)
        return Frame({k: np.concatenate([p.columns[k] for p in parts]) for k in first.columns}, nrows)
    return {k: np.concatenate([p[k] for p in parts]) for k in first}


def split_input(data: Any, rows: int, chunk_rows: int) -> list[Any]:
    """``data`` (``rows`` rows, batchable) cut into consecutive views of at most ``chunk_rows`` rows."""
    return [_slice(data, start, min(start + chunk_rows, rows)) for start in range(0, rows, chunk_rows)]


def _slice(data: Any, start: int, stop: int) -> Any:
    if isinstance(data, np.ndarray):
        return data[start:stop]
    if isinstance(data, Frame):
        block = None if data.block is None else data.block[start:stop]
        if block is not None:
            return Frame.of_block(data.names, block)
        return Frame({k: v[start:stop] for k, v in data.columns.items()}, stop - start)
    if isinstance(data, dict):
        return {k: v[start:stop] for k, v in data.items()}
    if isinstance(data, list | tuple):
        return data[start:stop]
    if type(data).__module__.startswith("pandas"):
        return data.iloc[start:stop]
    raise TypeError(f"cannot slice {type(data).__name__}")


def output_rows(output: Any) -> int | None:
    """How many rows a model output has when it is row-shaped (None: not splittable by rows)."""
    if isinstance(output, Frame):
        return output.nrows
    if isinstance(output, np.ndarray):
        return int(output.shape[0]) if output.ndim else None
    if isinstance(output, dict):
        lengths = {_length(v) for v in output.values()}
        return lengths.pop() if len(lengths) == 1 else None
    if isinstance(output, list | tuple):
        return len(output)
    if type(output).__module__.startswith("pandas") and hasattr(output, "iloc"):
        return len(output)
    return None


def _length(value: Any) -> int | None:
    if isinstance(value, np.ndarray):
        return int(value.shape[0]) if value.ndim else None
    if isinstance(value, list | tuple):
        return len(value)
    return None


def row_bounds(row_counts: Iterable[int]) -> list[tuple[int, int]]:
    """The (start, stop) row range of each part of a joined input, from each part's row count, in order."""
    bounds = []
    start = 0
    for rows in row_counts:
        bounds.append((start, start + rows))
        start += rows
    return bounds


def split_output(output: Any, bounds: Bounds) -> list[Any]:
    """The output of a joined input, cut back into one output per request (views where possible)."""
    return [_slice(output, start, stop) for start, stop in bounds]


def join_outputs(outputs: Sequence[Any]) -> Any:
    """The outputs of a split request's chunks, in order, as one output (None when they cannot be joined)."""
    first = outputs[0]
    if isinstance(first, np.ndarray) and all(isinstance(o, np.ndarray) for o in outputs):
        return np.concatenate(outputs)
    if isinstance(first, Frame) and all(
        isinstance(o, Frame) and o.columns.keys() == first.columns.keys() for o in outputs
    ):
        return Frame(
            {k: np.concatenate([o.columns[k] for o in outputs]) for k in first.columns}, sum(o.nrows for o in outputs)
        )
    if isinstance(first, dict) and all(isinstance(o, dict) and o.keys() == first.keys() for o in outputs):
        joined: dict[Any, Any] = {}
        for key in first:
            values = [o[key] for o in outputs]
            if all(isinstance(v, np.ndarray) for v in values):
                joined[key] = np.concatenate(values)
            elif all(isinstance(v, list) for v in values):
                joined[key] = [item for v in values for item in v]
            else:
                return None
        return joined
    if isinstance(first, list) and all(isinstance(o, list) for o in outputs):
        return [item for o in outputs for item in o]
    if type(first).__module__.startswith("pandas"):
        import pandas

        return pandas.concat(outputs, ignore_index=True)
    return None
