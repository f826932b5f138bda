"""Pieces of error messages and log lines: how an exception is named (no stack trace, no payload), and
how a JSON value's type is named."""

from __future__ import annotations

from typing import Any


def first_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message: enough to act on, no stack trace."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, as a message names it: null, boolean, number, string, list, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
