"""The OpenAI Responses API (``POST /v1/responses``): what the proxy reads from its bodies, answers and events.

The bytes pass through as they came (the ``model`` value aside); this module only reads them on the side:

- a request: its ``gen_ai.request.*`` attributes, and the ``prompt`` parameter when its ``id`` is one of
  our references (``prompts:/qa@production``): rendered from the registry into ``instructions`` and
  ``input`` (below), any other id passed through to the provider untouched;
- an answer (a response object): id, model, usage (``input_tokens`` with ``input_tokens_details.cached_tokens``,
  ``output_tokens`` with ``output_tokens_details.reasoning_tokens``), the finish state, and the output as
  GenAI messages when content is captured;
- a stream of typed events (``event: response.created`` ... ``response.output_text.delta`` ...
  ``response.completed``): only the events that carry the response object are parsed (the first, and the
  last, whose response holds the usage and the whole output); of the others only the first ``*.delta`` is
  noticed (time to the first output delta). A stream that fails after its first byte ends with one ``error``
  event in the shape the API documents (``{"type": "error", "code", "message", "param", "sequence_number"}``).

A rendered prompt (a chat template of system/user/assistant messages) becomes: its system and developer
messages' text, joined by blank lines, the ``instructions`` (before the request's own instructions, when it
has some); its other messages, input items placed before the request's own ``input`` (a string input is one
user message). Its model config fills the request fields the request leaves unset, translated to this API
(``max_tokens`` -> ``max_output_tokens``, ``reasoning_effort`` -> ``reasoning.effort``; chat-only fields such
as ``stop`` or ``seed`` are left out), and its response format becomes ``text.format``.

Finish reasons: ``incomplete_details.reason`` of an incomplete response (``max_output_tokens``,
``content_filter``), else its ``status`` (``completed``, ``failed``, ``cancelled``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.llm.answer import AnswerSummary
from gateway.llm.content import to_text
from gateway.llm.errors import InvalidRequestError, from_gateway_error
from gateway.llm.prompt_link import LinkedPrompt, PromptRenderer
from gateway.telemetry import semconv as sc

PROMPT_REF_PREFIX = "prompts:/"
_INSTRUCTION_ROLES = ("system", "developer")
# chat-completion field (a prompt's model config, prompts/linking.py) -> Responses API field
_CONFIG_FIELDS = {
    "model": "model",
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "parallel_tool_calls",
    "service_tier": "service_tier",
    "user": "user",
    "top_logprobs": "top_logprobs",
}
_RESPONSE_EVENTS = (b"response.created", b"response.completed", b"response.incomplete", b"response.failed")
_FINAL_EVENTS = frozenset(_RESPONSE_EVENTS[1:])


# -- requests -----------------------------------------------------------------------------------------


def links_our_prompt(data: Mapping[str, Any]) -> bool:
    """The body's ``prompt.id`` is one of our references (else the prompt is the provider's, passed through)."""
    prompt = data.get("prompt")
    return (
        isinstance(prompt, Mapping) and isinstance(prompt.get("id"), str) and prompt["id"].startswith(PROMPT_REF_PREFIX)
    )


def apply_prompt(data: dict[str, Any], renderer: PromptRenderer | None) -> LinkedPrompt:
    """Render ``data["prompt"]`` (a ``prompts:/`` reference) into ``data`` in place, dropping the key."""
    spec = data.pop("prompt")
    if renderer is None:
        raise InvalidRequestError(
            "prompt registry not available: this gateway was started without prompts, so 'prompt.id' "
            f"{spec['id']!r} cannot be rendered.",
            code="prompt_registry_unavailable",
        )
    unknown = sorted(set(spec) - {"id", "version", "variables"})
    if unknown:
        raise InvalidRequestError(
            f"'prompt' has unknown key(s) {', '.join(unknown)}; expected 'id', 'version', 'variables'."
        )
    ref: str = spec["id"]
    version = spec.get("version")
    if version is not None:
        if not isinstance(version, str | int) or isinstance(version, bool) or not str(version).isdigit():
            raise InvalidRequestError(f"'prompt.version' must be a version number, got {version!r}.")
        if "@" in ref or "/" in ref[len(PROMPT_REF_PREFIX) :]:
            raise InvalidRequestError(
                f"'prompt.version' {version!r} given with 'prompt.id' {ref!r}, which already names a version or an "
                "alias: give one or the other."
            )
        ref = f"{ref}/{version}"
    variables = spec.get("variables") or {}
    if not isinstance(variables, Mapping):
        raise InvalidRequestError(f"'prompt.variables' must be an object, got {type(variables).__name__}.")
    own_input = data.get("input")
    if own_input is not None and not isinstance(own_input, str | list):
        raise InvalidRequestError(f"'input' must be a string or a list of input items, got {type(own_input).__name__}.")
    own_instructions = data.get("instructions")
    if own_instructions is not None and not isinstance(own_instructions, str):
        raise InvalidRequestError(f"'instructions' must be a string, got {type(own_instructions).__name__}.")
    try:
        linked = renderer(ref, variables)
    except GatewayError as exc:
        raise from_gateway_error(exc) from None
    instructions = [to_text(m.get("content")) for m in linked.messages if m.get("role") in _INSTRUCTION_ROLES]
    items = [
        {"role": m.get("role", "user"), "content": m.get("content")}
        for m in linked.messages
        if m.get("role") not in _INSTRUCTION_ROLES
    ]
    if own_instructions:
        instructions.append(own_instructions)
    if instructions:
        data["instructions"] = "\n\n".join(instructions)
    if isinstance(own_input, str):
        items.append({"role": "user", "content": own_input})
    elif isinstance(own_input, list):
        items.extend(own_input)
    data["input"] = items
    for key, value in linked.model_config.items():
        field = _CONFIG_FIELDS.get(key)
        if field is not None and field not in data:
            data[field] = value
    effort = linked.model_config.get("reasoning_effort")
    if effort is not None and "reasoning" not in data:
        data["reasoning"] = {"effort": effort}
    text_format = _text_format(linked.response_format)
    if text_format is not None:
        text = data.get("text")
        if text is None:
            data["text"] = {"format": text_format}
        elif isinstance(text, dict) and "format" not in text:
            text["format"] = text_format
    return linked


def _text_format(response_format: Any) -> dict[str, Any] | None:
    """A chat ``response_format`` as the Responses API's ``text.format``."""
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind == "json_schema" and isinstance(response_format.get("json_schema"), Mapping):
        return {"type": "json_schema", **response_format["json_schema"]}
    if kind in ("json_object", "text"):
        return {"type": kind}
    return None


def check_request(data: Mapping[str, Any]) -> str | None:
    """The body's ``previous_response_id`` (None when absent); InvalidRequestError naming a bad field."""
    previous = data.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidRequestError(f"'previous_response_id' must be a response id, got {previous!r}.")
    prompt = data.get("prompt")
    if prompt is not None and not isinstance(prompt, Mapping):
        raise InvalidRequestError(f"'prompt' must be an object with 'id' and 'variables', got {type(prompt).__name__}.")
    return previous


def request_attributes(data: Mapping[str, Any], attributes: dict[str, Any]) -> None:
    """This API's ``gen_ai.request.*`` attributes into ``attributes`` (the common numeric ones are set)."""
    max_tokens = data.get("max_output_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    text = data.get("text")
    text_format = text.get("format") if isinstance(text, Mapping) else None
    if isinstance(text_format, Mapping):
        kind = text_format.get("type")
        attributes[sc.GEN_AI_OUTPUT_TYPE] = "json" if kind in ("json_object", "json_schema") else "text"
    conversation = data.get("conversation")
    if isinstance(conversation, Mapping):
        conversation = conversation.get("id")
    if isinstance(conversation, str):
        attributes[sc.GEN_AI_CONVERSATION_ID] = conversation
    attributes[sc.OPENAI_API_TYPE] = sc.OPENAI_API_TYPE_RESPONSES


# -- answers ------------------------------------------------------------------------------------------


def read_answer(summary: AnswerSummary, data: Mapping[str, Any], *, capture: bool) -> None:
    """Id, model, usage, finish state and (when capturing) output of a response object into ``summary``."""
    summary.read_header(data)
    summary.read_usage(data.get("usage"))
    reason = finish_reason(data)
    if reason is not None:
        summary.finish_reasons = [reason]
    if capture:
        summary.output_messages = output_messages(data)


def finish_reason(data: Mapping[str, Any]) -> str | None:
    details = data.get("incomplete_details")
    if isinstance(details, Mapping) and isinstance(details.get("reason"), str):
        return str(details["reason"])
    status = data.get("status")
    return status if isinstance(status, str) and status not in ("in_progress", "queued") else None


def input_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``instructions`` (as a system message) and ``input`` as GenAI messages."""
    messages: list[dict[str, Any]] = []
    instructions = data.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "parts": [{"type": "text", "content": instructions}]})
    value = data.get("input")
    if isinstance(value, str):
        messages.append({"role": "user", "parts": [{"type": "text", "content": value}]})
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping):
                messages.append(_item_message(item, "user"))
    return messages


def output_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A response's ``output`` items as one GenAI output message (one response is one choice)."""
    parts: list[dict[str, Any]] = []
    for item in data.get("output") or ():
        if isinstance(item, Mapping):
            parts.extend(_item_message(item, "assistant")["parts"])
    return [{"role": "assistant", "parts": parts, "finish_reason": finish_reason(data)}]


def _item_message(item: Mapping[str, Any], default_role: str) -> dict[str, Any]:
    kind = item.get("type", "message")
    if kind == "function_call":
        part = {
            "type": "tool_call",
            "id": item.get("call_id"),
            "name": item.get("name"),
            "arguments": item.get("arguments"),
        }
        return {"role": "assistant", "parts": [part]}
    if kind == "function_call_output":
        return {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": item.get("call_id"), "response": item.get("output")}],
        }
    if kind == "reasoning":
        summary = " ".join(to_text(s.get("text")) for s in item.get("summary") or () if isinstance(s, Mapping))
        return {"role": "assistant", "parts": [{"type": "reasoning", "content": summary}]}
    if kind != "message":
        return {"role": default_role, "parts": [{"type": str(kind)}]}
    content = item.get("content")
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            part_type = part.get("type")
            if part_type in ("input_text", "output_text", "text"):
                parts.append({"type": "text", "content": part.get("text", "")})
            elif part_type == "refusal":
                parts.append({"type": "text", "content": part.get("refusal", "")})
            else:
                parts.append({"type": str(part_type)})
    return {"role": str(item.get("role", default_role)), "parts": parts}


# -- streams ------------------------------------------------------------------------------------------


class ResponsesStreamState:
    """Usage, finish state and (when capturing) the output of a Responses stream, read while its events pass."""

    __slots__ = ("summary", "capture", "events", "first_delta_at")

    def __init__(self, *, capture: bool) -> None:
        self.summary = AnswerSummary()
        self.capture = capture
        self.events = 0
        self.first_delta_at: float | None = None

    def feed(self, events: bytes, at: float | None = None) -> None:
        for event in events.split(b"\n\n"):
            if not event:
                continue
            self.events += 1
            name, payload = split_event(event)
            if name is not None:
                if name.endswith(b".delta"):
                    if self.first_delta_at is None:
                        self.first_delta_at = at if at is not None else time.perf_counter()
                    continue
                if name not in _RESPONSE_EVENTS:
                    continue
            data = _json(payload)
            if data is None:
                continue
            kind = str(data.get("type", "")).encode()
            if name is None and kind.endswith(b".delta"):
                if self.first_delta_at is None:
                    self.first_delta_at = at if at is not None else time.perf_counter()
                continue
            response = data.get("response")
            if not isinstance(response, Mapping):
                continue
            if kind in _FINAL_EVENTS:
                read_answer(self.summary, response, capture=self.capture)
            elif kind == b"response.created":
                self.summary.read_header(response)

    def finish(self) -> AnswerSummary:
        return self.summary

    def error_event(self, error: GatewayError) -> bytes:
        """The ``error`` event that ends a stream failing after its first byte (its sequence number follows the
        events relayed: the API numbers them from 0)."""
        body = {
            "type": "error",
            "code": error.openai_code,
            "message": error.message,
            "param": None,
            "sequence_number": self.events,
        }
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


def split_event(event: bytes) -> tuple[bytes | None, bytes]:
    """An SSE event's ``event:`` name (None without one) and its ``data:`` payload (lines joined)."""
    name: bytes | None = None
    data: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].strip())
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, b"\n".join(data)


def _json(payload: bytes) -> dict[str, Any] | None:
    if not payload:
        return None
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def response_id_in(events: bytes) -> str | None:
    """The response id in a stream's first events (``response.created`` carries the response object)."""
    for event in events.split(b"\n\n"):
        name, payload = split_event(event)
        if name is not None and name not in _RESPONSE_EVENTS:
            continue
        data = _json(payload)
        response = data.get("response") if data is not None else None
        if isinstance(response, Mapping) and isinstance(response.get("id"), str):
            return str(response["id"])
    return None
