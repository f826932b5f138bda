"""The all-double table fast path (one float64 matrix) answers exactly as the per-column path."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.errors import GatewayError
from gateway.serving.enforcement import enforce_input
from gateway.serving.payload import parse_request
from gateway.serving.signature import parse_signature
from gateway.serving.types import Frame

NAMES = ["a", "b", "c"]


def _signature(types: list[str]) -> Any:
    inputs = [{"type": t, "name": n, "required": True} for n, t in zip(NAMES, types, strict=True)]
    return parse_signature({"inputs": json.dumps(inputs), "outputs": None, "params": None})


DOUBLE = _signature(["double", "double", "double"])
# The same table with one column typed so the fast path cannot apply, then compared column by column.
MIXED = _signature(["double", "double", "float"])


def _parse(signature: Any, columns: list[str], data: list[list[Any]]) -> Frame:
    body = orjson.dumps({"dataframe_split": {"columns": columns, "data": data}})
    frame = enforce_input(parse_request(body, "application/json", signature).data, signature.inputs)
    assert isinstance(frame, Frame)
    return frame


@pytest.mark.parametrize(
    "data",
    [
        [[1.5, 2, 3.25]],
        [[1, 2, 3], [4, 5, 6]],
        [[None, 2.0, 3.0]],
        [[True, 0.5, 1e10]],
    ],
)
def test_block_equals_per_column_path(data: list[list[Any]]) -> None:
    fast = _parse(DOUBLE, NAMES, data)
    assert fast.block is not None and fast.block.dtype == np.float64
    for i, name in enumerate(NAMES):
        expected = np.array([row[i] for row in data], dtype=np.float64)
        np.testing.assert_array_equal(fast.columns[name], expected)
        np.testing.assert_array_equal(fast.block[:, i], expected)
    slow = _parse(MIXED, NAMES, data)
    assert slow.block is None
    np.testing.assert_array_equal(fast.columns["a"], slow.columns["a"])


def test_reordered_or_extra_columns_drop_the_block_but_keep_values() -> None:
    frame = _parse(DOUBLE, ["c", "a", "b"], [[3.0, 1.0, 2.0]])
    assert list(frame.columns) == NAMES
    assert frame.block is None  # reordered: the runtime stacks the columns itself
    assert [float(frame.columns[n][0]) for n in NAMES] == [1.0, 2.0, 3.0]


def test_bad_cell_falls_back_and_names_the_column() -> None:
    with pytest.raises(GatewayError) as info:
        _parse(DOUBLE, NAMES, [[1.0, "two", 3.0]])
    assert info.value.status == 400
    assert "b" in info.value.message


PLAIN_CASES = [
    [[1.5, 2, 3.25]],
    [[1, 2, 3], [4, 5, 6]],
    [[None, 2.0, 3.0]],
    [["1.5", 2, 3]],
    [[1, 2]],
    [[1, 2, 3], [4, 5]],
    [[[1], [2], [3]]],
    [[1, 2, 3, 4]],
    [[1, {"x": 1}, 3]],
    [[1, 2, 3], 4],
    [1, 2, 3],
    [],
    "rows",
]


def _outcome(signature: Any, split: dict[str, Any]) -> Any:
    body = orjson.dumps({"dataframe_split": split})
    try:
        frame = enforce_input(parse_request(body, "application/json", signature).data, signature.inputs)
    except GatewayError as exc:
        return ("error", exc.status, exc.message)
    assert isinstance(frame, Frame)
    block = None if frame.block is None else frame.block.tolist()
    # repr: NaN (a null cell) compares equal to itself only as text
    return repr((frame.names, frame.nrows, block, {k: (v.dtype, v.tolist()) for k, v in frame.columns.items()}))


@pytest.mark.parametrize("data", PLAIN_CASES)
def test_plain_split_answers_as_the_general_path(data: Any) -> None:
    # {"columns", "data"} alone takes the one-step path (payload._plain_double_split); an "index" key, even
    # null, sends the same table through the general one (_frame_from_split). Same table, same errors.
    plain = _outcome(DOUBLE, {"columns": NAMES, "data": data})
    general = _outcome(DOUBLE, {"columns": NAMES, "data": data, "index": None})
    assert plain == general


def test_a_block_frame_makes_its_column_views_when_first_read() -> None:
    block = np.arange(6, dtype=np.float64).reshape(2, 3)
    frame = Frame.of_block(("a", "b", "c"), block)
    assert frame.names == ("a", "b", "c") and frame.nrows == 2 and frame.block is block
    assert [c.tolist() for c in frame.columns.values()] == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    assert all(np.shares_memory(c, block) for c in frame.columns.values())  # views, not copies
    assert frame.columns is frame.columns  # made once
