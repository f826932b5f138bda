"""Functions the code-judge tests configure as ``judges.code`` (``tests.judges.code_judges:<name>``)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any


def says_four(outputs: Any) -> bool:
    return "4" in str(outputs)


async def length_score(inputs: Any, outputs: Any, expectations: Any = None) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"value": min(5, max(1, len(str(outputs)))), "rationale": f"{len(str(outputs))} characters"}


@dataclasses.dataclass
class Feedback:
    value: Any
    rationale: str | None = None


def tone(outputs: Any) -> Feedback:
    return Feedback("good" if "please" in str(outputs) else "bad", "looked for 'please'")


def matches(outputs: Any, expectations: Any) -> bool:
    return bool(outputs == expectations.get("expected_response"))


def broken(outputs: Any) -> bool:
    raise KeyError("no such field")


def out_of_range(outputs: Any) -> int:
    return 9


async def slow(outputs: Any) -> bool:
    await asyncio.sleep(30)
    return True


def everything(**fields: Any) -> dict[str, Any]:
    return {"result": sorted(name for name, value in fields.items() if value is not None) == ["inputs", "outputs"]}


def needs_trace(outputs: Any, trace: Any) -> bool:
    return True


NOT_CALLABLE = 3
