"""The value parsers of every settings section, and ``ConfigError``.

A parser takes ``(key, raw value)`` and returns the parsed value or raises :class:`ConfigError`
whose message starts with ``key``. For the plain settings of gateway/config.py the key is "where the
value came from" (``GATEWAY_PORT (environment)``, ``port (config file gateway.yaml)``); inside a
structured section it is the key path (``llm.routes[0].retries``). Raw values come from YAML, JSON,
command-line flags or environment text, so numbers and booleans are also accepted as text.

Imports nothing of ours, so that gateway/config.py and the modules holding section types
(gateway/llm/routes_config.py) can both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml

Parser = Callable[[str, Any], Any]


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key, its source and value."""


def integer(minimum: int, maximum: int | None = None) -> Callable[[str, Any], int]:
    """An int (or its text) within ``[minimum, maximum]``; booleans and fractions are refused."""

    def parse(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{key}: {value!r} is not an integer.")
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not an integer.") from None
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(f"{key}: {value!r} is out of range; expected an integer {bound}.")
        return number

    return parse


def optional_integer(minimum: int) -> Callable[[str, Any], int | None]:
    """Like :func:`integer`; None, ``""``, ``auto`` and ``none`` mean unset."""
    inner = integer(minimum)

    def parse(key: str, value: Any) -> int | None:
        if value is None or value == "" or (isinstance(value, str) and value.lower() in {"auto", "none"}):
            return None
        return inner(key, value)

    return parse


def number(*, minimum: float, inclusive: bool) -> Callable[[str, Any], float]:
    """A float (or an int, or their text) above ``minimum`` (or equal to it when ``inclusive``); NaN and
    booleans are refused. Durations are numbers whose key ends in ``_s`` or ``_ms``."""

    def parse(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{key}: {value!r} is not a number.")
        try:
            result = float(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not a number.") from None
        if not (result >= minimum if inclusive else result > minimum):  # also refuses NaN
            raise ConfigError(f"{key}: {value!r} must be a number {'>=' if inclusive else '>'} {minimum:g}.")
        return result

    return parse


positive = number(minimum=0, inclusive=False)
non_negative = number(minimum=0, inclusive=True)


def boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text_value = str(value).strip().lower()
    if text_value in {"1", "true", "yes", "on"}:
        return True
    if text_value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{key}: {value!r} is not a boolean (use true or false).")


def text(key: str, value: Any) -> str:
    """A non-empty string, stripped."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: {value!r} must be a non-empty string.")
    return value.strip()


def optional_text(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return text(key, value)


def list_of(item: Parser) -> Callable[[str, Any], tuple[Any, ...]]:
    """A list (or comma-separated text, as env vars carry lists), each item parsed as ``key[i]``."""

    def parse(key: str, value: Any) -> tuple[Any, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            parts: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, list | tuple):
            parts = list(value)
        else:
            raise ConfigError(f"{key}: {value!r} must be a list.")
        return tuple(item(f"{key}[{i}]", part) for i, part in enumerate(parts))

    return parse


def mapping(key: str, value: Any) -> Mapping[str, Any]:
    """A mapping, or JSON or YAML text holding one (from an env var); None is empty."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{key}: {value!r} is not a JSON or YAML mapping.") from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}.")
    return dict(value)


def keys_of(key: str, value: Any, known: tuple[str, ...]) -> Mapping[str, Any]:
    """A mapping (inside a section) whose keys are all in ``known``."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}.")
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}.")
    return value
