"""Prompt references: ``prompts:/name/3``, ``prompts:/name@alias``, ``prompts:/name@latest``.

MLflow's rules: a prompt name matches ``^[a-zA-Z0-9_.-]+$``; aliases follow the model-registry
alias rules (``gateway.refs.validate_alias``: ``latest`` and ``v<digits>`` cannot be set);
``prompts:/name/latest`` and stages are not references. The ``prompts:/`` prefix may be left out
(``qa@production``, ``qa/3``), and a bare name means the prompt itself (its ``latest`` version
where a version is needed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import InvalidParameter
from gateway.refs import LATEST, validate_alias

__all__ = ["LATEST", "PromptRef", "parse_prompt_ref", "parse_prompt_version", "validate_alias", "validate_prompt_name"]

SCHEME = "prompts:/"
MAX_NAME_LENGTH = 255
_NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]+$")
_ALIAS_RE = re.compile(r"^[\w\-]+$")


@dataclass(frozen=True, slots=True)
class PromptRef:
    """A prompt, or one of its versions named by number or alias (at most one of the two is set)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{SCHEME}{self.name}/{self.version}"
        if self.alias is not None:
            return f"{SCHEME}{self.name}@{self.alias}"
        return f"{SCHEME}{self.name}"


def validate_prompt_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise InvalidParameter(
            f"Invalid prompt name {name!r}: use 1 to {MAX_NAME_LENGTH} letters, digits, '_', '.' or '-'."
        )
    return name


def parse_prompt_version(value: object) -> int:
    """A version number from a path, a JSON body or the command line (``"3"`` or ``3``)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidParameter(f"Invalid prompt version {value!r}: expected a positive integer.")
    text = str(value).strip()
    if (
        not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) < 1
    ):  # the length first: int() refuses 4,300+ digits
        raise InvalidParameter(f"Invalid prompt version {value!r}: expected a positive integer.")
    return int(text)


def parse_prompt_ref(text: str) -> PromptRef:
    """Parse a reference; ``@latest`` (any case) is kept as the alias ``latest``."""
    if not isinstance(text, str):
        raise InvalidParameter(f"A prompt reference must be a string, got {type(text).__name__}.")
    body = text[len(SCHEME) :] if text.startswith(SCHEME) else text
    if "@" in body:
        name, _, alias = body.partition("@")
        if not alias or not _ALIAS_RE.match(alias):
            raise InvalidParameter(f"Not a proper prompt reference: {text!r}. Expected prompts:/NAME@ALIAS.")
        return PromptRef(_name_in(name, text), alias=LATEST if alias.lower() == LATEST else alias)
    name, slash, selector = body.partition("/")
    if not slash:
        return PromptRef(_name_in(name, text))
    if not selector.isdigit():
        raise InvalidParameter(
            f"Not a proper prompt reference: {text!r}. Expected prompts:/NAME/VERSION (a number) or "
            "prompts:/NAME@ALIAS (use @latest for the highest version)."
        )
    try:
        version = parse_prompt_version(selector)
    except InvalidParameter as exc:
        raise InvalidParameter(f"Not a proper prompt reference: {text!r}: {exc.message}") from None
    return PromptRef(_name_in(name, text), version=version)


def _name_in(name: str, text: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise InvalidParameter(
            f"Not a proper prompt reference: {text!r}: the name must be 1 to {MAX_NAME_LENGTH} letters, "
            "digits, '_', '.' or '-'."
        )
    return name
