"""Shapes shared by the serving modules: what a parsed request is, what a runtime takes and returns.

Pipeline of one ``/invocations`` request::

    payload.parse_request(body, content_type, signature)  -> ParsedRequest(data, params)
    enforcement.enforce_input(data, signature.inputs)      -> ModelInput (reordered, cast, checked)
    enforcement.enforce_params(params, signature.params)   -> dict of params with defaults
    Runtime.predict(data, params)                          -> raw prediction (ndarray, dict, Frame, list, ...)
    output.to_jsonable(prediction)                         -> what goes under "predictions"

No pandas anywhere on this path: a DataFrame-like input is a ``Frame`` of named 1-D numpy columns.
A runtime that wants a pandas DataFrame (a pyfunc model) converts at its own boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Frame:
    """A column-oriented table: what MLflow would have as a pandas DataFrame.

    ``columns`` maps column name to a 1-D numpy array of length ``nrows``, in column order
    (schema order once enforced). Unnamed columns (an unnamed column signature, or a
    ``dataframe_split`` without ``columns``) are keyed by their position: 0, 1, 2, ...
    A column of lists/dicts/strings is an object array. An output Frame (what a runtime returns)
    may hold an [N, ...] array as a column: row i's value is its sub-array.

    ``block``: when every column is a view of one 2-D array, in order, that array: a runtime that
    wants the whole table as a matrix (mlflow's ``df.values``) takes it without copying. A Frame made
    with ``of_block`` makes those views only when ``columns`` is first read: the iris request path
    reads only ``names`` and ``block``, and four views cost as much as parsing the rest of its body.
    """

    __slots__ = ("_columns", "_names", "nrows", "block")

    def __init__(
        self,
        columns: dict[str | int, np.ndarray] | None,
        nrows: int,
        block: np.ndarray | None = None,
        names: tuple[str | int, ...] | None = None,
    ) -> None:
        # columns None: ``block``'s columns named ``names``, as views made when first read (``of_block``).
        self._columns = columns
        self._names = names
        self.nrows = nrows
        self.block = block

    @classmethod
    def of_block(cls, names: tuple[str | int, ...], block: np.ndarray) -> Frame:
        """The table whose columns are ``block``'s ([rows, len(names)]), named ``names`` in order."""
        return cls(None, block.shape[0], block, names)

    @property
    def columns(self) -> dict[str | int, np.ndarray]:
        columns = self._columns
        if columns is None:
            block = self.block
            assert block is not None and self._names is not None  # of_block sets both
            columns = self._columns = {name: block[:, i] for i, name in enumerate(self._names)}
        return columns

    @property
    def names(self) -> tuple[str | int, ...]:
        """The column names in order (without making an ``of_block`` Frame's column views)."""
        return self._names if self._names is not None else tuple(self.columns)

    def same_columns_as(self, other: Frame) -> bool:
        """True when both hold the very same column arrays in the same order."""
        if len(self.columns) != len(other.columns):
            return False
        return all(
            a == b and x is y for (a, x), (b, y) in zip(self.columns.items(), other.columns.items(), strict=True)
        )

    def __repr__(self) -> str:
        return f"Frame(columns={self.columns!r}, nrows={self.nrows!r}, block={self.block!r})"


# What reaches a runtime: a table, one tensor, or named tensors (MLflow's dict of arrays).
ModelInput = Frame | np.ndarray | dict[str, np.ndarray]


@dataclass(slots=True)
class ParsedRequest:
    """A decoded ``/invocations`` body, before signature enforcement.

    ``unwrapped`` is MLflow's unified-LLM shortcut (a JSON object with ``messages``, ``prompt``
    or ``input``): the whole object goes to the model and the answer is not wrapped in
    ``{"predictions": ...}``.
    """

    data: ModelInput | list[Any] | dict[str, Any] | Any
    params: dict[str, Any] | None
    unwrapped: bool = False


class ColumnSpec(Protocol):
    """What the conversions and type checks read of ``signature.ColSpec`` (declared here: signature
    imports them)."""

    @property
    def name(self) -> str | None: ...
    @property
    def type(self) -> str: ...
    @property
    def required(self) -> bool: ...
    @property
    def items(self) -> ColumnSpec | None: ...
    @property
    def properties(self) -> tuple[ColumnSpec, ...] | None: ...
    @property
    def values(self) -> ColumnSpec | None: ...


class Runtime(Protocol):
    """A loaded model, ready to predict. Implementations: ``OnnxRuntime``, ``PyfuncRuntime``.

    ``predict`` is blocking (it is called in an executor thread, never on the event loop) and
    raises ``ModelPredictError`` when the model itself fails. ``unload`` frees the session.
    """

    def predict(self, data: ModelInput, params: dict[str, Any] | None) -> Any: ...

    def unload(self) -> None: ...
