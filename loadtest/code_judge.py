"""The judge of ``make bench-judge-queue``: a code judge (``judges.code``, judges/code.py), instant and in process,
so that the benchmark measures the queue and the workers, not an LLM call."""

from __future__ import annotations

from typing import Any


def says_no_secret(outputs: Any) -> dict[str, Any]:
    """Yes when the answer holds no 'secret' (the fake upstream's answers never do)."""
    found = "secret" in str(outputs).lower()
    return {"value": not found, "rationale": "mentions a secret" if found else "no secret mentioned"}
