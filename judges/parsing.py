"""Reading a judge's answer: tolerant of how models actually write, strict about the value.

A judge is asked for ``{"rationale": "...", "result": <value>}`` (judges/request.py), under a JSON
schema where the route supports one. What comes back is read as:

1. the text is the JSON object; else
2. a fenced code block (```` ```json ... ``` ````, or a bare ```` ``` ````) anywhere in it holds it; else
3. a JSON object starts somewhere after a preamble ("Here is my assessment: {...}"): the first one
   with a ``result`` is taken, else the first object;
4. no object at all: the whole text may still be the bare value ("Yes", "4", a label).

The result then must be of the judge's value kind, with these tolerances: for ``bool``, ``"yes"``/
``"no"``, ``"true"``/``"false"``, ``"pass"``/``"fail"`` (any case, a final full stop allowed) and 1/0;
for ``int``, a whole number written as ``4.0`` or ``"4"``; for ``float``, a numeric string; for
``categorical``, a label in another case. The value must lie in the range, or be one of the labels. A
``result`` key may also be spelled ``score``, ``verdict``, ``value``, ``rating`` or ``answer``.

Anything else is a :class:`ParseProblem` whose ``message`` says what was wrong, in words the judge can
act on: the runner sends it back in its one repair request, and stores it in the error assessment when
the repair fails too (``code`` becomes the assessment's ``error_code``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from judges.definitions import ValueKind

NO_ANSWER: Final = "empty_answer"
NO_JSON: Final = "no_json"
NO_RESULT: Final = "no_result"
WRONG_TYPE: Final = "wrong_type"
OUT_OF_RANGE: Final = "out_of_range"

RESULT_KEYS: Final = ("result", "score", "verdict", "value", "rating", "answer")
_TRUE: Final = frozenset({"yes", "true", "pass", "passed", "y"})
_FALSE: Final = frozenset({"no", "false", "fail", "failed", "n"})
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript)?[ \t]*\n?(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SHOWN = 80


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's answer, read: the value (of the judge's kind) and its rationale, when it gave one."""

    value: Any
    rationale: str | None


@dataclass(frozen=True, slots=True)
class ParseProblem:
    """Why an answer could not be used: ``code`` (``no_json``, ``wrong_type``, ``out_of_range``, ...)
    and a message naming what was wrong."""

    code: str
    message: str


def parse_verdict(text: str | None, kind: ValueKind) -> Verdict | ParseProblem:
    """Read a judge's answer text as a value of ``kind`` and a rationale, or say what was wrong."""
    if text is None or not text.strip():
        return ParseProblem(NO_ANSWER, "The answer was empty.")
    answer = _json_object(text)
    if answer is None:
        bare = _coerce(_bare_value(text), kind)
        if isinstance(bare, Verdict):  # the whole answer is the value itself ("Yes", "4")
            return bare
        return ParseProblem(NO_JSON, f"The answer holds no JSON object: {_excerpt(text)}.")
    key = next((k for k in RESULT_KEYS if k in answer), None)
    if key is None:
        keys = ", ".join(sorted(answer)) or "none"
        return ParseProblem(NO_RESULT, f"The JSON object has no 'result' key (its keys: {keys}).")
    coerced = _coerce(answer[key], kind)
    if isinstance(coerced, ParseProblem):
        return coerced
    return Verdict(coerced.value, _rationale(answer.get("rationale", answer.get("reasoning"))))


def _json_object(text: str) -> dict[str, Any] | None:
    stripped = text.strip()
    found = _loads_object(stripped)
    if found is not None:
        return found
    for block in _FENCE.findall(text):
        found = _loads_object(block.strip())
        if found is not None:
            return found
    return _embedded_object(text)


def _loads_object(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _embedded_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` that has a result key, else the first object at all."""
    decoder = json.JSONDecoder()
    first: dict[str, Any] | None = None
    start = text.find("{")
    while start >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            if any(key in value for key in RESULT_KEYS):
                return value
            if first is None:
                first = value
        start = text.find("{", end)
    return first


def _bare_value(text: str) -> Any:
    stripped = text.strip().strip("`").strip()
    try:
        return json.loads(stripped)
    except ValueError:
        return stripped


def coerce_value(value: Any, kind: ValueKind) -> Verdict | ParseProblem:
    """``value`` as ``kind`` (a code judge's value, checked as an LLM judge's answer is), or what was wrong."""
    return _coerce(value, kind)


def rationale_text(value: Any) -> str | None:
    """A rationale as text (None, a string stripped, anything else as JSON)."""
    if value is None or isinstance(value, str):
        return _rationale(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _coerce(value: Any, kind: ValueKind) -> Verdict | ParseProblem:
    """``value`` as the judge's kind, within its range or labels (a Verdict without a rationale)."""
    if kind.kind == "bool":
        return _boolean(value)
    if kind.kind in ("int", "float"):
        return _number(value, kind)
    return _label(value, kind)


def _boolean(value: Any) -> Verdict | ParseProblem:
    if isinstance(value, bool):
        return Verdict(value, None)
    if isinstance(value, int | float) and value in (0, 1):
        return Verdict(value == 1, None)
    if isinstance(value, str):
        word = value.strip().rstrip(".!").strip().lower()
        if word in _TRUE:
            return Verdict(True, None)
        if word in _FALSE:
            return Verdict(False, None)
        return ParseProblem(WRONG_TYPE, f"The result must be true or false, got the text {_excerpt(value)}.")
    if isinstance(value, int | float):
        return ParseProblem(OUT_OF_RANGE, f"The result must be true or false, got the number {value!r}.")
    return ParseProblem(WRONG_TYPE, f"The result must be true or false, got {_kind_of(value)}.")


def _number(value: Any, kind: ValueKind) -> Verdict | ParseProblem:
    wanted = kind.describe()
    number: float | int
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return ParseProblem(WRONG_TYPE, f"The result must be {wanted}, got {_kind_of(value)}.")
    if isinstance(value, str):
        text = value.strip().rstrip(".").strip()
        if not _NUMBER.fullmatch(text):
            return ParseProblem(WRONG_TYPE, f"The result must be {wanted}, got the text {_excerpt(value)}.")
        number = float(text)
    else:
        number = value
    if not math.isfinite(number):
        return ParseProblem(OUT_OF_RANGE, f"The result must be {wanted}, got {value!r}.")
    if kind.kind == "int":
        if not float(number).is_integer():
            return ParseProblem(WRONG_TYPE, f"The result must be {wanted}, got {value!r}, which is not whole.")
        number = int(number)
    else:
        number = float(number)
    assert kind.minimum is not None and kind.maximum is not None
    if not kind.minimum <= number <= kind.maximum:
        return ParseProblem(OUT_OF_RANGE, f"The result must be {wanted}, got {number!r}, which is out of range.")
    return Verdict(number, None)


def _label(value: Any, kind: ValueKind) -> Verdict | ParseProblem:
    if not isinstance(value, str):
        return ParseProblem(WRONG_TYPE, f"The result must be {kind.describe()}, got {_kind_of(value)}.")
    if value in kind.labels:
        return Verdict(value, None)
    folded = value.strip().rstrip(".").strip().casefold()
    for label in kind.labels:
        if label.casefold() == folded:
            return Verdict(label, None)
    return ParseProblem(OUT_OF_RANGE, f"The result must be {kind.describe()}, got {_excerpt(value)}.")


def _rationale(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return json.dumps(value, ensure_ascii=False)


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return f"a list ({_excerpt(json.dumps(value, ensure_ascii=False))})"
    if isinstance(value, dict):
        return f"an object ({_excerpt(json.dumps(value, ensure_ascii=False))})"
    return f"{type(value).__name__} {value!r}"


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= _SHOWN else flat[: _SHOWN - 3] + "...")
