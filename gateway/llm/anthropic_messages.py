"""The Anthropic Messages API (``POST /v1/messages``): what the proxy reads from its bodies, answers and events.

Routes whose targets have ``provider: anthropic`` serve it; the request goes to ``<base_url>/messages`` with
the target's ``x-api-key`` and ``anthropic-version`` (gateway/llm/upstream.py), the body as it came but for
the ``model`` value. This module reads on the side:

- a request: ``gen_ai.request.*`` (``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop_sequences``);
- an answer (a message): id, model, ``stop_reason`` (the finish reason, as Anthropic names it: ``end_turn``,
  ``tool_use``, ``max_tokens``...), usage, and the content blocks as GenAI messages when content is captured;
- a stream: usage from ``message_start`` (input side) and ``message_delta`` (output side, and the input side
  again when it is there), the stop reason from ``message_delta``, the time of the first
  ``content_block_delta``; with capture on, the blocks assembled from their deltas (text, tool use
  arguments, thinking). A stream that fails after its first byte ends with one ``error`` event in
  Anthropic's shape.

Usage follows the conventions' Anthropic rule: ``gen_ai.usage.input_tokens`` is Anthropic's ``input_tokens``
plus ``cache_read_input_tokens`` plus ``cache_creation_input_tokens`` (Anthropic counts them apart), the
last two also as ``gen_ai.usage.cache_read.input_tokens`` and ``gen_ai.usage.cache_write.input_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.http import anthropic_error_body
from gateway.llm.answer import AnswerSummary
from gateway.llm.errors import InvalidRequestError
from gateway.llm.openai_responses import split_event
from gateway.telemetry import semconv as sc

_ALWAYS_READ = frozenset({b"message_start", b"message_delta"})
_CAPTURE_READ = frozenset({b"content_block_start", b"content_block_delta"})


def check_request(data: Mapping[str, Any]) -> None:
    """InvalidRequestError naming what the proxy needs and the body lacks (the rest is the upstream's to check)."""
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequestError(
            "'messages' is required: a list of messages, each {'role': 'user' | 'assistant', 'content': ...}."
            if messages is None
            else f"'messages' must be a list, got {type(messages).__name__}."
        )


def request_attributes(data: Mapping[str, Any], attributes: dict[str, Any]) -> None:
    max_tokens = data.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    top_k = data.get("top_k")
    if isinstance(top_k, int) and not isinstance(top_k, bool):
        attributes[sc.GEN_AI_REQUEST_TOP_K] = top_k
    stop = data.get("stop_sequences")
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        attributes[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = stop


def read_usage(summary: AnswerSummary, usage: Any) -> None:
    """Anthropic's usage into ``summary`` (fields it lacks leave what is there: a stream reports in two steps)."""
    if not isinstance(usage, Mapping):
        return
    read, write = usage.get("cache_read_input_tokens"), usage.get("cache_creation_input_tokens")
    if isinstance(read, int):
        summary.cache_read_tokens = read
    if isinstance(write, int):
        summary.cache_write_tokens = write
    own = usage.get("input_tokens")
    if isinstance(own, int):
        summary.input_tokens = own + (summary.cache_read_tokens or 0) + (summary.cache_write_tokens or 0)
    output = usage.get("output_tokens")
    if isinstance(output, int):
        summary.output_tokens = output


def read_answer(summary: AnswerSummary, data: Mapping[str, Any], *, capture: bool) -> None:
    summary.read_header(data)
    read_usage(summary, data.get("usage"))
    reason = data.get("stop_reason")
    if isinstance(reason, str):
        summary.finish_reasons = [reason]
    if capture:
        parts = [_block_part(block) for block in data.get("content") or () if isinstance(block, Mapping)]
        summary.output_messages = [{"role": "assistant", "parts": parts, "finish_reason": reason}]


def input_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``system`` (as a system message) and ``messages`` as GenAI messages."""
    out: list[dict[str, Any]] = []
    system = data.get("system")
    if isinstance(system, str) and system:
        out.append({"role": "system", "parts": [{"type": "text", "content": system}]})
    elif isinstance(system, list):
        out.append({"role": "system", "parts": [_block_part(b) for b in system if isinstance(b, Mapping)]})
    for message in data.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        role = str(message.get("role", "user"))
        if isinstance(content, str):
            out.append({"role": role, "parts": [{"type": "text", "content": content}]})
            continue
        blocks = [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) else []
        results = [b for b in blocks if b.get("type") == "tool_result"]
        others = [b for b in blocks if b.get("type") != "tool_result"]
        if results:
            out.append({"role": "tool", "parts": [_block_part(b) for b in results]})
        if others or not results:
            out.append({"role": role, "parts": [_block_part(b) for b in others]})
    return out


def _block_part(block: Mapping[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "content": block.get("text", "")}
    if kind == "tool_use":
        return {"type": "tool_call", "id": block.get("id"), "name": block.get("name"), "arguments": block.get("input")}
    if kind == "tool_result":
        return {"type": "tool_call_response", "id": block.get("tool_use_id"), "response": block.get("content")}
    if kind == "thinking":
        return {"type": "reasoning", "content": block.get("thinking", "")}
    return {"type": str(kind)}


class MessagesStreamState:
    """Usage, stop reason and (when capturing) the content of an Anthropic stream, read while it passes."""

    __slots__ = ("summary", "capture", "events", "first_delta_at", "_blocks")

    def __init__(self, *, capture: bool) -> None:
        self.summary = AnswerSummary()
        self.capture = capture
        self.events = 0
        self.first_delta_at: float | None = None
        self._blocks: dict[int, dict[str, Any]] = {}

    def feed(self, events: bytes, at: float | None = None) -> None:
        for event in events.split(b"\n\n"):
            if not event:
                continue
            self.events += 1
            name, payload = split_event(event)
            if name == b"content_block_delta" and self.first_delta_at is None:
                self.first_delta_at = at if at is not None else time.perf_counter()
            if name is not None and name not in _ALWAYS_READ and not (self.capture and name in _CAPTURE_READ):
                continue
            try:
                data = orjson.loads(payload) if payload else None
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict):
                self._read(data, at)

    def _read(self, data: dict[str, Any], at: float | None) -> None:
        kind = data.get("type")
        summary = self.summary
        if kind == "message_start" and isinstance(data.get("message"), Mapping):
            message = data["message"]
            summary.read_header(message)
            read_usage(summary, message.get("usage"))
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, Mapping) and isinstance(delta.get("stop_reason"), str):
                summary.finish_reasons = [delta["stop_reason"]]
            read_usage(summary, data.get("usage"))
        elif kind == "content_block_delta":
            if self.first_delta_at is None:
                self.first_delta_at = at if at is not None else time.perf_counter()
            if self.capture:
                self._delta(data)
        elif kind == "content_block_start" and self.capture:
            block = data.get("content_block")
            if isinstance(block, Mapping) and isinstance(data.get("index"), int):
                self._blocks[data["index"]] = {**block, "_parts": []}

    def _delta(self, data: dict[str, Any]) -> None:
        index, delta = data.get("index"), data.get("delta")
        if not isinstance(index, int) or not isinstance(delta, Mapping):
            return
        block = self._blocks.setdefault(index, {"type": "text", "_parts": []})
        for field in ("text", "partial_json", "thinking"):
            if isinstance(delta.get(field), str):
                block["_parts"].append(delta[field])

    def finish(self) -> AnswerSummary:
        summary = self.summary
        if self.capture:
            parts = []
            for _, block in sorted(self._blocks.items()):
                joined = "".join(block.pop("_parts"))
                if block.get("type") == "text":
                    block["text"] = block.get("text", "") + joined
                elif block.get("type") == "thinking":
                    block["thinking"] = block.get("thinking", "") + joined
                elif block.get("type") == "tool_use" and joined:
                    block["input"] = _json_or_text(joined)
                parts.append(_block_part(block))
            reason = summary.finish_reasons[0] if summary.finish_reasons else None
            summary.output_messages = [{"role": "assistant", "parts": parts, "finish_reason": reason}]
        return summary

    def error_event(self, error: GatewayError) -> bytes:
        return b"event: error\ndata: " + anthropic_error_body(error) + b"\n\n"


def _json_or_text(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
