"""Model references: ``models:/name@alias``, ``models:/name/3``, ``models:/name/latest``.

MLflow's rules: an alias matches ``^[\\w\\-]*$`` and is at most 255 characters; ``latest`` and
``v<digits>`` are reserved (``latest`` always means the highest version).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import InvalidParameter

LATEST = "latest"
_ALIAS_RE = re.compile(r"^[\w\-]*$")
_RESERVED_VERSION_ALIAS_RE = re.compile(r"^[vV]\d+$")
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAX_NAME_LENGTH = 255
# Versions are 64-bit integers in the store (and in MLflow's API); a larger one is refused, not overflowed.
MAX_VERSION = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model named by alias or by version; exactly one of ``alias`` and ``version`` is set.

    ``alias == "latest"`` means the highest registered version.
    """

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"models:/{self.name}/{self.version}"
        return f"models:/{self.name}@{self.alias}"


def validate_model_name(name: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or not _MODEL_NAME_RE.match(name):
        raise InvalidParameter(
            f"Invalid model name {name!r}: use 1 to {MAX_NAME_LENGTH} letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )
    return name


def validate_alias(alias: str) -> str:
    """Check an alias that is being set (``latest`` and ``v<digits>`` are reserved)."""
    if not alias or len(alias) > MAX_NAME_LENGTH or not _ALIAS_RE.match(alias):
        raise InvalidParameter(f"Invalid alias name {alias!r}: use 1 to {MAX_NAME_LENGTH} letters, digits, '_' or '-'.")
    if alias.lower() == LATEST:
        raise InvalidParameter(f"Alias name {alias!r} is reserved: 'latest' always means the highest version.")
    if _RESERVED_VERSION_ALIAS_RE.match(alias):
        raise InvalidParameter(f"Version alias name {alias!r} is reserved.")
    return alias


def parse_version(text: str | int) -> int:
    """A version from a path segment, a JSON value or a reference: a whole number from 1 to ``MAX_VERSION``
    (``1.5``, ``true`` and ``"1.0"`` are refused rather than truncated)."""
    problem = f"Invalid model version {_shown(text)}: expected a positive integer up to {MAX_VERSION}."
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise InvalidParameter(problem)
    try:
        version = int(text)
    except ValueError:  # also a string of more digits than int() reads
        raise InvalidParameter(problem) from None
    if not 1 <= version <= MAX_VERSION:
        raise InvalidParameter(problem)
    return version


def _shown(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_model_ref(text: str) -> ModelRef:
    """Parse ``models:/name@alias``, ``models:/name/3`` or ``models:/name/latest``.

    The ``models:/`` prefix may be left out (``iris@champion``, ``iris/3``); a bare name means ``@latest``.
    """
    body = text[len("models:/") :] if text.startswith("models:/") else text
    body = body.strip("/") if text.startswith("models:/") else body
    if "@" in body:
        name, _, alias = body.partition("@")
        if not name or not alias or "/" in alias:
            raise InvalidParameter(f"Not a proper models:/ reference: {text!r}. Expected models:/NAME@ALIAS.")
        if alias.lower() == LATEST:
            return ModelRef(validate_model_name(name), alias=LATEST)
        if not _ALIAS_RE.match(alias):
            raise InvalidParameter(f"Invalid alias name {alias!r} in {text!r}.")
        return ModelRef(validate_model_name(name), alias=alias)
    parts = body.split("/")
    if len(parts) == 1 and parts[0]:
        return ModelRef(validate_model_name(parts[0]), alias=LATEST)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise InvalidParameter(
            f"Not a proper models:/ reference: {text!r}. Expected models:/NAME@ALIAS, models:/NAME/VERSION "
            "or models:/NAME/latest."
        )
    name, selector = parts
    if selector.lower() == LATEST:
        return ModelRef(validate_model_name(name), alias=LATEST)
    if not (selector.isascii() and selector.isdigit()):
        raise InvalidParameter(
            f"Not a proper models:/ reference: {text!r}: {selector!r} is neither a version number nor 'latest' "
            "(stages are not supported; use an alias)."
        )
    return ModelRef(validate_model_name(name), version=parse_version(selector))
