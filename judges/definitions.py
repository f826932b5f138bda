"""What a judge is: its name, instructions, the kind of value it answers, the LLM route that runs it
and what it needs from an item. Pure data and checks; the catalog (judges/catalog.py) builds judges
from prompt versions, the runner (judges/runner.py) runs them.

Rules, after MLflow's ``make_judge``:

- instructions are a ``{{ variable }}`` template (prompts/templates.py) that may use only
  ``{{ inputs }}``, ``{{ outputs }}`` and ``{{ expectations }}`` (``ALLOWED_VARIABLES``), at least one
  of them; anything else is a 400 naming each such variable. The built-in ``guidelines`` judge alone
  also has ``{{ guidelines }}``: the guidelines given with the judge where it is used;
- the value kind (``ValueKind``) is ``bool``, ``int`` or ``float`` with a range, or ``categorical``
  with labels; its JSON schema (``value_schema``) is the ``result`` of the judge's structured answer;
- a judge's required fields are what it reads from an item: a custom judge needs each variable its
  instructions use; a built-in needs what its criterion needs (correctness: expectations with an
  ``expected_response`` or ``expected_facts``). An item lacking one gets an error assessment naming
  it (``missing_field``), never a crash or a silent skip.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from gateway.errors import InvalidParameter
from prompts.templates import CompiledTemplate, compile_template, compile_text, validate_template

ALLOWED_VARIABLES: Final = ("inputs", "outputs", "expectations")
GUIDELINES: Final = "guidelines"  # the built-in guidelines judge's own variable
VALUE_TYPES: Final = ("bool", "int", "float", "categorical")
ValueType = Literal["bool", "int", "float", "categorical"]

# A judge's name is also the json_schema name of its request (``judge_<name>``: OpenAI allows 64 of
# [a-zA-Z0-9_-]) and part of its prompt's name (``judges.<name>``).
NAME_PATTERN: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,57}")
MAX_INSTRUCTIONS_CHARS: Final = 100_000
MAX_DESCRIPTION_CHARS: Final = 4096
MAX_ROUTE_CHARS: Final = 255
MAX_LABELS: Final = 50
MAX_LABEL_CHARS: Final = 255  # the assessments' label column
MAX_SAFE_INT: Final = 2**53  # integers JSON carries exactly everywhere

# A required field: the paths of which the item must have one (``("inputs",)``, or alternatives such as
# ``("expectations.expected_response", "expectations.expected_facts")``).
Required = tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ValueKind:
    """What a judge answers: ``bool``; ``int`` or ``float`` within ``[minimum, maximum]``; one of ``labels``."""

    kind: ValueType
    minimum: float | None = None
    maximum: float | None = None
    labels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The API shape: ``{"type": "bool"}``, ``{"type": "int", "min": 1, "max": 5}``, ``{"type":
        "categorical", "labels": [...]}``."""
        data: dict[str, Any] = {"type": self.kind}
        if self.kind in ("int", "float"):
            data["min"], data["max"] = self.minimum, self.maximum
        elif self.kind == "categorical":
            data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: Any, field: str = "value_kind") -> ValueKind:
        """Read the API shape; InvalidParameter naming ``field`` (and the key) when it is not one."""
        if isinstance(data, str) and data in ("bool", "boolean"):  # a bare "bool" is unambiguous
            return BOOL
        if not isinstance(data, Mapping):
            raise InvalidParameter(
                f'Field \'{field}\' must be an object such as {{"type": "bool"}}, {{"type": "int", "min": 1, '
                f'"max": 5}} or {{"type": "categorical", "labels": ["good", "bad"]}}, got {_type_name(data)}.'
            )
        kind = data.get("type")
        if kind not in VALUE_TYPES:
            raise InvalidParameter(f"Field '{field}.type' must be one of {', '.join(VALUE_TYPES)}, got {kind!r}.")
        allowed = {"bool": {"type"}, "int": {"type", "min", "max"}, "float": {"type", "min", "max"}}
        unknown = sorted(set(data) - allowed.get(kind, {"type", "labels"}))
        if unknown:
            raise InvalidParameter(
                f"Field '{field}' has key(s) {', '.join(unknown)} that a {kind} value does not take."
            )
        if kind == "bool":
            return BOOL
        if kind == "categorical":
            return cls("categorical", labels=_labels(data.get("labels"), f"{field}.labels"))
        low = _bound(data.get("min"), f"{field}.min", integral=kind == "int")
        high = _bound(data.get("max"), f"{field}.max", integral=kind == "int")
        if not low < high:
            raise InvalidParameter(f"Field '{field}': min ({low:g}) must be less than max ({high:g}).")
        if kind == "int":
            return cls("int", int(low), int(high))
        return cls("float", low, high)

    def describe(self) -> str:
        """The result's allowed values, in words (the judge's system message, repair requests)."""
        if self.kind == "bool":
            return "true or false (a JSON boolean)"
        if self.kind == "int":
            return f"an integer from {self.minimum:g} to {self.maximum:g}"
        if self.kind == "float":
            return f"a number from {self.minimum:g} to {self.maximum:g}"
        return "one of " + ", ".join(_json_string(label) for label in self.labels)


BOOL: Final = ValueKind("bool")


def value_schema(kind: ValueKind) -> dict[str, Any]:
    """The JSON schema of the verdict's ``result``."""
    if kind.kind == "bool":
        return {"type": "boolean"}
    if kind.kind == "int":
        return {"type": "integer", "minimum": kind.minimum, "maximum": kind.maximum}
    if kind.kind == "float":
        return {"type": "number", "minimum": kind.minimum, "maximum": kind.maximum}
    return {"type": "string", "enum": list(kind.labels)}


def value_kind_from_schema(schema: Any) -> ValueKind | None:
    """The value kind whose :func:`value_schema` is ``schema`` (None when it is none of them)."""
    if not isinstance(schema, Mapping):
        return None
    kind = schema.get("type")
    try:
        if kind == "boolean":
            return BOOL
        if kind in ("integer", "number"):
            value_type = "int" if kind == "integer" else "float"
            return ValueKind.from_dict({"type": value_type, "min": schema.get("minimum"), "max": schema.get("maximum")})
        if kind == "string":
            return ValueKind.from_dict({"type": "categorical", "labels": schema.get("enum")})
    except InvalidParameter:
        return None
    return None


def response_format(name: str, kind: ValueKind) -> dict[str, Any]:
    """The judge request's ``response_format``: a strict JSON schema of ``{"rationale", "result"}``."""
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["rationale", "result"],
        "properties": {"rationale": {"type": "string"}, "result": value_schema(kind)},
    }
    return {"type": "json_schema", "json_schema": {"name": f"judge_{name}", "strict": True, "schema": schema}}


@dataclasses.dataclass(frozen=True, slots=True)
class Judge:
    """A judge as it runs: one version of its prompt (``judges.<name>``), its value kind and route
    (None: a built-in judge and no ``judges.route``), what it needs from an item, and for the
    built-in ``guidelines`` judge the guidelines it was given where it is used.

    A code judge (judges/code.py) has ``code``: its function, run in process; no instructions and no
    route, its ``prompt_name`` is the function's ``package.module:function`` and its ``prompt_version``
    the version configured for it."""

    name: str
    instructions: str
    value_kind: ValueKind
    route: str | None
    required: tuple[Required, ...]
    prompt_name: str
    prompt_version: int
    builtin: bool = False
    description: str | None = None
    guidelines: tuple[str, ...] = ()
    code: Any = dataclasses.field(default=None, compare=False)  # a judges.code.CodeFunction (which imports this)
    template: CompiledTemplate = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "template", compile_template(self.instructions))

    @property
    def uses_guidelines(self) -> bool:
        return GUIDELINES in self.template.variables

    def with_guidelines(self, guidelines: Sequence[str]) -> Judge:
        return dataclasses.replace(self, guidelines=tuple(guidelines))

    def to_dict(self) -> dict[str, Any]:
        """The API shape (``GET /api/judges/{name}``); a code judge's has ``kind: "code"`` and ``function``
        (its ``prompt_name``, the function too; ``prompt_version``, its configured version; no instructions)."""
        return {
            "name": self.name,
            "description": self.description,
            "builtin": self.builtin,
            "prompt_name": self.prompt_name,
            "prompt_version": self.prompt_version,
            "route": self.route,
            "value_kind": self.value_kind.to_dict(),
            "required_fields": [" | ".join(paths) for paths in self.required],
            "instructions": self.instructions,
            **({"kind": "code", "function": self.code.ref} if self.code is not None else {}),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class JudgeSpec:
    """A custom judge as it is submitted (``POST /api/judges``, ``gateway judges create``), checked."""

    name: str
    instructions: str
    route: str
    value_kind: ValueKind
    description: str | None = None

    @property
    def required(self) -> tuple[Required, ...]:
        return tuple((name,) for name in check_instructions(self.instructions))


_SPEC_FIELDS = ("name", "instructions", "route", "value_kind", "description")


def parse_judge_spec(body: Mapping[str, Any]) -> JudgeSpec:
    """A custom judge from a request body; InvalidParameter naming the field that is wrong."""
    unknown = sorted(set(body) - set(_SPEC_FIELDS))
    if unknown:
        raise InvalidParameter(
            f"Unknown field(s) {', '.join(unknown)}; a judge has {', '.join(_SPEC_FIELDS)} (description optional)."
        )
    for field in ("name", "instructions", "route", "value_kind"):
        if body.get(field) is None:
            raise InvalidParameter(f"Field '{field}' is required.")
    name = validate_judge_name(body["name"])
    instructions = body["instructions"]
    check_instructions(instructions)
    route = body["route"]
    if not isinstance(route, str) or not route.strip() or len(route) > MAX_ROUTE_CHARS:
        raise InvalidParameter(
            f"Field 'route' must be the name of an LLM route (1 to {MAX_ROUTE_CHARS} characters), got {_shown(route)}."
        )
    description = body.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS):
        raise InvalidParameter(
            f"Field 'description' must be a string of at most {MAX_DESCRIPTION_CHARS} characters, got "
            f"{_shown(description)}."
        )
    return JudgeSpec(name, instructions, route.strip(), ValueKind.from_dict(body["value_kind"]), description)


def validate_judge_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidParameter(
            f"Field '{field}': {_shown(name)} is not a judge name: a letter, then up to 57 letters, digits, '_' or '-'."
        )
    return name


def check_instructions(
    instructions: Any, *, allowed: Sequence[str] = ALLOWED_VARIABLES, field: str = "instructions"
) -> tuple[str, ...]:
    """The variables a judge's instructions use, in ``allowed``'s order; InvalidParameter naming each
    variable that is not allowed (any ``{{ ... }}``, variable-shaped or not), or when none is used."""
    if not isinstance(instructions, str) or not instructions.strip():
        raise InvalidParameter(f"Field '{field}' must be a non-empty string, got {_shown(instructions)}.")
    if len(instructions) > MAX_INSTRUCTIONS_CHARS:
        raise InvalidParameter(
            f"Field '{field}' has {len(instructions)} characters; at most {MAX_INSTRUCTIONS_CHARS} are allowed."
        )
    try:
        validate_template(instructions)  # refuses Jinja2 control syntax, as a prompt version does
    except InvalidParameter as exc:
        raise InvalidParameter(exc.message.replace("'template'", f"'{field}'")) from None
    used = dict.fromkeys(compile_text(instructions).parts[1::2])  # every placeholder, as written
    refused = [name for name in used if name not in allowed]
    allowed_text = ", ".join(f"{{{{ {name} }}}}" for name in allowed)
    if refused:
        names = ", ".join(f"'{name}'" for name in refused)
        raise InvalidParameter(
            f"Field '{field}' uses variable(s) {names}: a judge's instructions may use only {allowed_text}."
        )
    if not used:
        raise InvalidParameter(
            f"Field '{field}' uses no variable: a judge's instructions must use at least one of {allowed_text} "
            "to see what it judges."
        )
    return tuple(name for name in allowed if name in used)


def missing_field(judge: Judge, item: Mapping[str, Any]) -> str | None:
    """Why ``item`` cannot be judged by ``judge``, naming the field it lacks; None when nothing is missing.
    A field is missing when it is absent or null; a key of expectations also when it is empty."""
    if judge.uses_guidelines and not judge.guidelines:
        return f"The {judge.name} judge was given no 'guidelines' to check the outputs against."
    for paths in judge.required:
        top = paths[0].split(".", 1)[0]
        value = item.get(top)
        need = " or ".join(paths)
        if value is None:
            return f"The item has no '{top}': the {judge.name} judge needs {need}."
        keys = [path.split(".", 1)[1] for path in paths if "." in path]
        if not keys:
            continue
        if not isinstance(value, Mapping):
            return (
                f"The item's '{top}' must be an object with {' or '.join(keys)} for the {judge.name} judge, "
                f"got {_type_name(value)}."
            )
        if not any(value.get(key) not in (None, "", [], {}) for key in keys):
            return (
                f"The item's '{top}' have no {' or '.join(repr(k) for k in keys)}: the {judge.name} judge needs {need}."
            )
    for name in judge.template.variables:  # what its instructions show (a built-in's may have been edited)
        if name in ALLOWED_VARIABLES and item.get(name) is None:
            return f"The item has no '{name}': the instructions of the {judge.name} judge show it."
    return None


def _labels(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_LABELS:
        raise InvalidParameter(f"Field '{field}' must be a list of 2 to {MAX_LABELS} strings, got {_shown(value)}.")
    labels: list[str] = []
    for index, label in enumerate(value):
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS:
            raise InvalidParameter(
                f"Field '{field}[{index}]' must be a non-empty string of at most {MAX_LABEL_CHARS} characters, "
                f"got {_shown(label)}."
            )
        if label in labels:
            raise InvalidParameter(f"Field '{field}' has {label!r} twice: labels must differ.")
        labels.append(label)
    return tuple(labels)


def _bound(value: Any, field: str, *, integral: bool) -> float:
    if value is None:
        raise InvalidParameter(f"Field '{field}' is required: an int or float value kind has a range.")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(f"Field '{field}' must be a number, got {_shown(value)}.")
    if integral and not (isinstance(value, int) or value.is_integer()):
        raise InvalidParameter(f"Field '{field}' must be a whole number for an int value kind, got {value!r}.")
    if not math.isfinite(value) or abs(value) > MAX_SAFE_INT:
        raise InvalidParameter(f"Field '{field}' must be a finite number within +-2^53, got {_shown(value)}.")
    return float(value)


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
