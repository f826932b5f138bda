"""Code judges: a Python function that judges in process, with no LLM call (MLflow's ``@scorer`` functions,
Phoenix's code evaluators). Defined in the configuration only (``judges.code``, gateway/judge_code_settings.py):
naming a callable is running code in the gateway's processes, an operator's decision, so no API call can
define one.

The function takes any of ``inputs``, ``outputs`` and ``expectations`` by name (those without a default
are the fields the judge requires: an item lacking one gets a ``missing_field`` error assessment, as for
an LLM judge; ``**kwargs`` takes all three) and returns, sync or async:

- the value itself (``bool``, ``int``, ``float`` or ``str`` per the judge's value kind), or
- a mapping with ``value`` (or ``result``) and optionally ``rationale``, or
- an object with a ``value`` attribute and optionally ``rationale`` (a small dataclass, MLflow's Feedback).

The value is checked against the value kind as an LLM judge's answer is (judges/parsing.py): a value that is
not of it is an error assessment (``wrong_type``, ``out_of_range``). An exception raised by the function is an
error assessment ``code_error`` naming the exception; an async function (or a sync one with ``thread: true``,
run in a thread) past ``judges.call_timeout_s`` is one with ``code_timeout``. A sync function runs on the
event loop (what makes it instant): it must not block; give ``thread: true`` to one that does I/O or heavy work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Final

from gateway.config_values import ConfigError
from gateway.errors import InvalidParameter
from gateway.judge_code_settings import CodeJudgeSettings
from judges.definitions import ALLOWED_VARIABLES, Judge, ValueKind, validate_judge_name
from judges.parsing import ParseProblem, coerce_value, rationale_text

CODE_ERROR: Final = "code_error"
CODE_TIMEOUT: Final = "code_timeout"
NO_VALUE: Final = "no_value"


@dataclasses.dataclass(frozen=True, slots=True)
class CodeFunction:
    """The function of a code judge: ``ref`` as configured, the callable, the item fields it takes."""

    ref: str
    function: Callable[..., Any]
    parameters: tuple[str, ...]
    thread: bool = False

    def arguments(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {name: item.get(name) for name in self.parameters}


class CodeJudgeFailed(Exception):
    """The function raised, ran too long, or returned no value of the judge's kind: ``code`` and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def load_code_judges(entries: tuple[CodeJudgeSettings, ...], reserved: Mapping[str, Any]) -> dict[str, Judge]:
    """The configured code judges by name; ConfigError naming ``judges.code[i]`` for one that cannot be
    used (a name of ``reserved``, the built-ins; a function that does not import or takes other arguments)."""
    judges: dict[str, Judge] = {}
    for index, entry in enumerate(entries):
        where = f"judges.code[{index}]"
        try:
            name = validate_judge_name(entry.name, f"{where}.name")
            kind = ValueKind.from_dict(entry.value_kind, f"{where}.value_kind")
        except InvalidParameter as exc:
            raise ConfigError(exc.message) from None
        if name in reserved:
            raise ConfigError(f"{where}.name: {name!r} is a built-in judge; name the code judge otherwise.")
        function = _import(entry.function, f"{where}.function")
        parameters, required = _parameters(function, entry.function, f"{where}.function")
        judges[name] = Judge(
            name=name,
            instructions="",
            value_kind=kind,
            route=None,
            required=tuple((field,) for field in required),
            prompt_name=entry.function,
            prompt_version=entry.version,
            description=entry.description,
            code=CodeFunction(entry.function, function, parameters, entry.thread),
        )
    return judges


def _import(ref: str, where: str) -> Callable[..., Any]:
    module_name, _, path = ref.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module failing as it loads
        raise ConfigError(f"{where}: cannot import module {module_name!r} ({type(exc).__name__}: {exc}).") from None
    for attribute in path.split("."):
        if not hasattr(found, attribute):
            raise ConfigError(f"{where}: module {module_name!r} has no {path!r}.")
        found = getattr(found, attribute)
    if not callable(found):
        raise ConfigError(f"{where}: {ref!r} is not callable (a {type(found).__name__}).")
    function: Callable[..., Any] = found
    return function


def _parameters(function: Callable[..., Any], ref: str, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The item fields ``function`` takes, and those it requires (no default)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: the signature of {ref!r} cannot be read.") from None
    taken: list[str] = []
    required: list[str] = []
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            taken.extend(name for name in ALLOWED_VARIABLES if name not in taken)
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        elif parameter.name in ALLOWED_VARIABLES and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
            taken.append(parameter.name)
            if parameter.default is inspect.Parameter.empty:
                required.append(parameter.name)
        elif parameter.default is inspect.Parameter.empty:
            raise ConfigError(
                f"{where}: {ref!r} takes {parameter.name!r}, which a code judge cannot give: it may take only "
                f"{', '.join(ALLOWED_VARIABLES)} (by name)."
            )
    if not taken:
        raise ConfigError(f"{where}: {ref!r} takes none of {', '.join(ALLOWED_VARIABLES)}: it would see nothing.")
    ordered = tuple(name for name in ALLOWED_VARIABLES if name in taken)
    return ordered, tuple(name for name in ALLOWED_VARIABLES if name in required)


async def run_code(judge: Judge, item: Mapping[str, Any], timeout_s: float) -> tuple[Any, str | None]:
    """The value and rationale ``judge``'s function gives for ``item``; CodeJudgeFailed when it raises,
    runs past ``timeout_s`` (async, or in a thread) or returns no value of the judge's kind."""
    code = judge.code
    assert code is not None
    arguments = code.arguments(item)
    shown = f"The code judge {judge.name!r} ({code.ref})"
    try:
        if code.thread:
            async with asyncio.timeout(timeout_s) as bound:
                result = await asyncio.to_thread(code.function, **arguments)
        else:
            bound = None
            result = code.function(**arguments)
            if inspect.isawaitable(result):
                async with asyncio.timeout(timeout_s) as bound:
                    result = await result
    except TimeoutError as exc:
        if bound is not None and bound.expired():
            raise CodeJudgeFailed(CODE_TIMEOUT, f"{shown} gave no value within judges.call_timeout_s="
                                                f"{timeout_s:g} s.") from None  # fmt: skip
        raise CodeJudgeFailed(CODE_ERROR, f"{shown} raised {_named(exc)}") from None
    except Exception as exc:
        raise CodeJudgeFailed(CODE_ERROR, f"{shown} raised {_named(exc)}") from None
    value, rationale = _unpack(result, shown)
    coerced = coerce_value(value, judge.value_kind)
    if isinstance(coerced, ParseProblem):
        raise CodeJudgeFailed(coerced.code, f"{shown} returned a value not of its kind: {coerced.message}")
    return coerced.value, rationale


def _unpack(result: Any, shown: str) -> tuple[Any, str | None]:
    if isinstance(result, Mapping):
        key = next((key for key in ("value", "result") if key in result), None)
        if key is None:
            keys = ", ".join(sorted(str(k) for k in result)) or "none"
            raise CodeJudgeFailed(NO_VALUE, f"{shown} returned a mapping without 'value' (its keys: {keys}).")
        return result[key], rationale_text(result.get("rationale"))
    if hasattr(result, "value") and not isinstance(result, bool | int | float | str):
        return result.value, rationale_text(getattr(result, "rationale", None))
    return result, None


def _named(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
