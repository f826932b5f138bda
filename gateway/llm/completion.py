"""What ``LlmProxy.complete`` answers: one in-process, non-streaming chat completion, and its trace.

Judges (and evaluation runs that generate outputs) call our own routes without an HTTP call to
ourselves: the same route lookup, ``Upstreams.dispatch`` (retries, backoff, ``Retry-After``,
fallback), CLIENT spans, metrics and trace-summary row as a client's call. What differs is around
it: the call starts a trace of its own (a judge call is not part of the call it judges, which may
have ended long ago) with span links to the spans it is about, its top span carries the caller's
attributes (``gateway.judge.*``), and every outcome that is not a 2xx JSON object is raised as a
``ProxyError`` instead of being relayed to a client. This module holds the pieces of that which are
not the request path itself: the answer's shape, the links, the message text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Link, SpanContext, TraceFlags

from gateway.llm.errors import InvalidRequestError

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


@dataclass(frozen=True, slots=True)
class Completion:
    """A 2xx JSON answer of ``LlmProxy.complete`` and what its call cost."""

    data: dict[str, Any]  # the upstream's parsed JSON answer
    text: str | None  # choices[0].message.content (None when absent)
    response_model: str | None
    target: str  # Target.label of the target that answered
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None  # from the answering target's prices, None when it has none
    trace_id: str  # hex 32: the call's own trace
    span_id: str  # hex 16: its top (INTERNAL) span, the one the trace store keeps
    attempts: int
    latency_s: float


def message_text(data: dict[str, Any]) -> str | None:
    """``choices[0].message.content`` when it is text (a list of text parts is joined)."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
        return "".join(parts) if parts else None
    return None


def span_links(links: Sequence[tuple[str, str]]) -> list[Link]:
    """``(trace_id_hex, span_id_hex)`` pairs as span links; InvalidRequestError naming a bad one."""
    result: list[Link] = []
    for index, pair in enumerate(links):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise InvalidRequestError(f"links[{index}]: expected a (trace_id, span_id) pair, got {pair!r}.")
        trace_id, span_id = (str(part).lower() for part in pair)
        if not _TRACE_ID.fullmatch(trace_id) or trace_id == "0" * 32:
            raise InvalidRequestError(f"links[{index}]: trace id {pair[0]!r} is not 32 hex digits (and not all 0).")
        if not _SPAN_ID.fullmatch(span_id) or span_id == "0" * 16:
            raise InvalidRequestError(f"links[{index}]: span id {pair[1]!r} is not 16 hex digits (and not all 0).")
        context = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=_SAMPLED)
        result.append(Link(context))
    return result
