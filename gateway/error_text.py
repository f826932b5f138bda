"""How an exception is named in an error message or a log line: no stack trace, no payload."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message: enough to act on, no stack trace."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
