"""Prompt templates: ``{{ name }}`` placeholders in a text or in each chat message's content.

Rendering follows MLflow's ``PromptVersion.format`` (same placeholder pattern, values ``str()``-ed,
dotted names are flat keys, extra values ignored, a missing variable is an error naming every
missing one), with two deliberate differences, both of which make rendering safer:

- one pass: a value is inserted as is and never scanned again, so a value that itself contains
  ``{{ other }}`` stays literal (MLflow substitutes key by key, so it may expand such a value);
- no code execution: a template with Jinja2 control syntax (``{%`` ... ``%}``) is refused when it
  is registered, where MLflow would run Jinja2 on it.

A template is compiled once (when its version is loaded) into literal and placeholder segments,
so rendering on the request path is one join.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import InvalidParameter

# MLflow's PROMPT_TEMPLATE_VARIABLE_PATTERN (mlflow/prompt/constants.py): what counts as a variable.
VARIABLE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*(?:\.[a-zA-Z_][a-zA-Z0-9_]*)*")
# Any ``{{ ... }}`` without braces inside. MLflow replaces ``{{ key }}`` for every key it is given,
# variable-shaped or not; matching the wider shape keeps that, while only variable-shaped names
# are required (listed as missing when absent).
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s](?:[^{}]*?[^{}\s])?)\s*\}\}")

TemplateType = Literal["text", "chat"]
MAX_MESSAGES = 1000
_MISSING = object()


@dataclass(frozen=True, slots=True)
class CompiledText:
    """One text, split into literals (even indexes) and placeholder names (odd indexes)."""

    parts: tuple[str, ...]
    raw: tuple[str, ...]  # the placeholders as written, re-emitted when no value is given
    variables: tuple[str, ...]  # variable-shaped names, in first-use order, no duplicates

    def render(self, values: Mapping[str, Any]) -> str:
        parts = self.parts
        if len(parts) == 1:
            return parts[0]
        out = [parts[0]]
        raw = self.raw
        for i in range(1, len(parts), 2):
            name = parts[i]
            value = values.get(name, _MISSING)
            out.append(raw[i // 2] if value is _MISSING else str(value))
            out.append(parts[i + 1])
        return "".join(out)


def compile_text(text: str) -> CompiledText:
    parts: list[str] = []
    raw: list[str] = []
    variables: dict[str, None] = {}
    last = 0
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(1)
        parts.append(text[last : match.start()])
        parts.append(name)
        raw.append(match.group(0))
        if VARIABLE_NAME.fullmatch(name):
            variables.setdefault(name)
        last = match.end()
    parts.append(text[last:])
    return CompiledText(tuple(parts), tuple(raw), tuple(variables))


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A text template, or a chat template (one compiled content per message)."""

    template_type: TemplateType
    texts: tuple[CompiledText, ...]
    roles: tuple[str, ...]  # chat only: the role of each message
    variables: tuple[str, ...]

    def missing(self, values: Mapping[str, Any]) -> list[str]:
        return [name for name in self.variables if name not in values]

    def check(self, values: Mapping[str, Any]) -> None:
        """Raise InvalidParameter (400) naming every variable ``values`` lacks."""
        missing = self.missing(values)
        if missing:
            given = ", ".join(sorted(values)) or "none"
            raise InvalidParameter(
                f"Missing variables: {', '.join(repr(m) for m in missing)} (the template uses "
                f"{', '.join(repr(v) for v in self.variables)}; given: {given})."
            )

    def render_text(self, values: Mapping[str, Any]) -> str:
        self.check(values)
        return self.texts[0].render(values)

    def render_messages(self, values: Mapping[str, Any]) -> list[dict[str, str]]:
        """Chat messages; a text template becomes one ``user`` message."""
        self.check(values)
        if self.template_type == "text":
            return [{"role": "user", "content": self.texts[0].render(values)}]
        return [
            {"role": role, "content": text.render(values)} for role, text in zip(self.roles, self.texts, strict=True)
        ]

    def render(self, values: Mapping[str, Any]) -> str | list[dict[str, str]]:
        """What MLflow's ``PromptVersion.format(**values)`` returns: a string or chat messages."""
        return self.render_text(values) if self.template_type == "text" else self.render_messages(values)


def compile_template(template: str | Sequence[Mapping[str, Any]]) -> CompiledTemplate:
    """Compile a template already checked by :func:`validate_template`."""
    if isinstance(template, str):
        text = compile_text(template)
        return CompiledTemplate("text", (text,), (), text.variables)
    texts = tuple(compile_text(message["content"]) for message in template)
    variables: dict[str, None] = {}
    for text in texts:
        variables.update(dict.fromkeys(text.variables))
    return CompiledTemplate("chat", texts, tuple(m["role"] for m in template), tuple(variables))


def validate_template(template: Any) -> tuple[TemplateType, str | list[dict[str, str]]]:
    """Check a template as submitted: a non-empty string, or a non-empty list of ``{role, content}``
    messages with string values. Returns its type and a normalized copy."""
    if isinstance(template, str):
        if not template:
            raise InvalidParameter("Field 'template' must not be empty.")
        _refuse_jinja(template, "template")
        return "text", template
    if not isinstance(template, list):
        raise InvalidParameter(
            f"Field 'template' must be a string or a list of chat messages, got {type(template).__name__}."
        )
    if not template:
        raise InvalidParameter("Field 'template' is an empty list: a chat template needs at least one message.")
    if len(template) > MAX_MESSAGES:
        raise InvalidParameter(f"Field 'template' has {len(template)} messages; at most {MAX_MESSAGES} are allowed.")
    messages: list[dict[str, str]] = []
    for i, message in enumerate(template):
        where = f"template[{i}]"
        if not isinstance(message, dict):
            raise InvalidParameter(
                f"Field '{where}' must be an object with 'role' and 'content', got {type(message).__name__}."
            )
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise InvalidParameter(
                f"Field '{where}' has unsupported key(s) {extra}: a message has 'role' and 'content'."
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise InvalidParameter(f"Field '{where}.role' must be a non-empty string, got {role!r}.")
        if not isinstance(content, str):
            raise InvalidParameter(f"Field '{where}.content' must be a string, got {type(content).__name__}.")
        _refuse_jinja(content, f"{where}.content")
        messages.append({"role": role, "content": content})
    return "chat", messages


def _refuse_jinja(text: str, where: str) -> None:
    if "{%" in text and "%}" in text:
        raise InvalidParameter(
            f"Field '{where}' uses Jinja2 control syntax ('{{% ... %}}'), which this gateway does not execute "
            "(templates never run code); use only '{{ variable }}' placeholders."
        )
