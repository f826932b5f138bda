"""``text/csv`` bodies of ``/invocations``: a header row and rows, typed by the signature the way
``pandas.read_csv(dtype=...)`` types them (missing-value markers, int/float/bool inference), without pandas.

``parse_csv`` is what ``payload.parse_request`` calls for the CSV content type; errors are ``BadRequest``
with MLflow's leading words.
"""

from __future__ import annotations

import csv
import io
import re
from typing import cast

import numpy as np

from gateway.errors import BadRequest
from gateway.serving.conversion import COLUMN_DTYPES, SCALAR_TYPES, array_from_json, object_column
from gateway.serving.limits import check_rows
from gateway.serving.messages import column_label
from gateway.serving.signature import ColSpec, Schema, TensorSpec
from gateway.serving.types import Frame

# pandas.read_csv's default missing-value markers.
_NA_VALUES = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)  # fmt: skip
_INT_RE = re.compile(r"\s*[+-]?\d+\s*")
_FLOAT_RE = re.compile(r"\s*[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|inf|infinity)\s*", re.I)
_TRUE = frozenset(["True", "TRUE", "true"])
_FALSE = frozenset(["False", "FALSE", "false"])


def _csv_error(detail: object) -> BadRequest:
    return BadRequest(
        "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid CSV-formatted "
        f"Pandas DataFrame produced using the `pandas.DataFrame.to_csv()` method. Error: '{detail}'"
    )


def parse_csv(body: bytes, schema: Schema | None, max_rows: int | None = None) -> Frame:
    """A CSV body (header row, then rows) to a Frame typed as ``pandas.read_csv(dtype=...)`` types it;
    ``TooManyRows`` past ``max_rows`` data rows, before any cell is converted."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            "Invalid input. Ensure that input is a valid UTF-8 encoded string. "
            f"Error: '{exc.reason} at byte {exc.start}'"
        ) from None
    if schema is not None and not schema.is_tensor:
        complex_cols = [str(s.name) for s in schema.inputs if isinstance(s, ColSpec) and s.type not in SCALAR_TYPES]
        if complex_cols:
            raise _csv_error(f"columns {complex_cols} have array/object/map/any types, which CSV cannot carry")
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]  # pandas skips blank lines
    except csv.Error as exc:
        raise _csv_error(exc) from exc
    if rows and max(map(len, rows)) > len(rows[0]):
        _raise_wide_row(text)
    if not rows:
        raise _csv_error("No columns to parse from file")
    if max_rows is not None:
        check_rows(len(rows) - 1, max_rows)
    names = _csv_names(rows[0])
    width = len(names)
    data = [row if len(row) == width else row + [""] * (width - len(row)) for row in rows[1:]]
    cols = list(zip(*data, strict=True)) if data else [() for _ in names]
    out: dict[str | int, np.ndarray] = {}
    for i, (name, raw) in enumerate(zip(names, cols, strict=True)):
        cells = [None if v in _NA_VALUES else v for v in raw]
        spec = schema.column_spec(name, i) if schema is not None else None
        out[name] = _csv_column(cells, spec, name)
    return Frame(out, len(data))


def _raise_wide_row(text: str) -> None:
    """pandas' error for the first row wider than the header, with its line number (the error path
    reads the body again, row by row, for that number)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    width = None
    for row in reader:
        if row:
            if width is None:
                width = len(row)
            elif len(row) > width:
                raise _csv_error(f"Expected {width} fields in line {reader.line_num}, saw {len(row)}")


def _csv_names(header: list[str]) -> list[str]:
    # pandas: an empty header cell is "Unnamed: i", a repeated name gets ".1", ".2", ...
    names: list[str] = []
    for i, name in enumerate(header):
        name = name or f"Unnamed: {i}"
        base, n = name, 0
        while name in names:
            n += 1
            name = f"{base}.{n}"
        names.append(name)
    return names


def _csv_column(cells: list[str | None], spec: ColSpec | TensorSpec | None, name: str) -> np.ndarray:
    label = column_label(name)
    if spec is None:
        return _csv_infer(cells)
    if isinstance(spec, ColSpec):
        kind, dtype = spec.type, COLUMN_DTYPES[spec.type]
    else:
        kind, dtype = spec.dtype.name, spec.dtype
    if dtype.kind == "O":
        return object_column(cells)  # strings as they are (binary too: MLflow does not decode CSV)
    if dtype.kind in "iub":
        if None in cells:
            what = "Bool" if dtype.kind == "b" else "Integer"
            raise _csv_error(f"{what} column has NA values in {label}")
        strings = cast(list[str], cells)
        if dtype.kind == "b":
            return np.array([_csv_bool(v, label, kind) for v in strings], dtype=np.bool_)
        return array_from_json([_csv_int(v, label, kind) for v in strings], dtype, label, kind)
    if dtype.kind == "f":
        for v in cells:
            if v is not None and not _FLOAT_RE.fullmatch(v):
                raise _csv_error(f"could not convert string to float: {v!r} in {label}")
    return array_from_json(cells, dtype, label, kind)


def _csv_int(value: str, label: str, kind: str) -> int:
    if _INT_RE.fullmatch(value):
        return int(value)
    if _FLOAT_RE.fullmatch(value):
        number = float(value)
        if number.is_integer():
            return int(number)
    raise _csv_error(f"cannot safely convert {value!r} to {kind} in {label}")


def _csv_bool(value: str, label: str, kind: str) -> bool:
    if value in _TRUE or value == "1":
        return True
    if value in _FALSE or value == "0":
        return False
    raise _csv_error(f"cannot safely convert {value!r} to {kind} in {label}")


def _csv_infer(cells: list[str | None]) -> np.ndarray:
    """pandas.read_csv's inference: int64, float64 (also all-missing), bool, else object strings."""
    present = [v for v in cells if v is not None]
    if not present:
        return np.full(len(cells), np.nan)
    if all(_INT_RE.fullmatch(v) for v in present):
        if len(present) == len(cells):
            try:
                return np.array([int(v) for v in present], dtype=np.int64)
            except OverflowError:
                return object_column(cells)
        return np.array([float(v) if v is not None else np.nan for v in cells])
    if all(_FLOAT_RE.fullmatch(v) for v in present):
        return np.array(cells, dtype=np.float64)
    if all(v in _TRUE or v in _FALSE for v in present):
        if len(present) == len(cells):
            return np.array([v in _TRUE for v in cells], dtype=np.bool_)
        return object_column([None if v is None else v in _TRUE for v in cells])
    return object_column(cells)
