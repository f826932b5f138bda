"""What the proxy reads from a request body, and the bytes it sends upstream.

Bodies pass through unchanged except the ``model`` value: unknown fields survive because nothing is
dropped, and when the upstream model equals the requested one the raw bytes go out as they came.
Otherwise the top-level ``"model": "..."`` is spliced in place when it occurs exactly once in the
bytes (no re-serialisation of a large body); any other case falls back to ``orjson.dumps``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.llm.errors import InvalidRequestError
from gateway.llm.prompt_link import LinkedPrompt, PromptRenderer, apply_prompt
from gateway.telemetry import semconv as sc


@dataclass(frozen=True, slots=True)
class Operation:
    """One OpenAI endpoint: its gen_ai.operation.name, upstream path and SERVER span name."""

    name: str
    path: str  # appended to a target's base_url
    span_name: str
    streams: bool  # accepts "stream": true


CHAT = Operation(sc.OPERATION_CHAT, "/chat/completions", "POST /v1/chat/completions", True)
COMPLETIONS = Operation(sc.OPERATION_TEXT_COMPLETION, "/completions", "POST /v1/completions", True)
EMBEDDINGS = Operation(sc.OPERATION_EMBEDDINGS, "/embeddings", "POST /v1/embeddings", False)
OPERATION_PATHS = (CHAT.path, COMPLETIONS.path, EMBEDDINGS.path)

_MODEL_VALUE = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')

# request field -> span attribute, for numbers copied as they are
_NUMERIC_REQUEST_ATTRIBUTES = (
    ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", sc.GEN_AI_REQUEST_TOP_P),
    ("frequency_penalty", sc.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", sc.GEN_AI_REQUEST_PRESENCE_PENALTY),
    ("seed", sc.GEN_AI_REQUEST_SEED),
)


class ParsedCall:
    """A validated request body: the parts the proxy needs, and the upstream body per target model."""

    __slots__ = ("operation", "raw", "data", "model", "stream", "prompt", "_changed", "_bodies")

    def __init__(self, operation: Operation, raw: bytes, renderer: PromptRenderer | None) -> None:
        self.operation = operation
        self.raw = raw
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(f"Request body is not valid JSON: {exc}.", code="invalid_json") from None
        if not isinstance(data, dict):
            raise InvalidRequestError(f"Request body must be a JSON object, got {type(data).__name__}.")
        self.data: dict[str, Any] = data
        self.prompt: LinkedPrompt | None = None
        self._changed = False
        if operation is CHAT and "prompt" in data:
            self.prompt = apply_prompt(data, renderer)
            self._changed = True
        model = data.get("model")
        if model is None:
            raise InvalidRequestError("'model' is required: the name of a route of this gateway (see GET /v1/models).")
        if not isinstance(model, str) or not model:
            raise InvalidRequestError(f"'model' must be a non-empty string, got {model!r}.")
        self.model: str = model
        stream = data.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise InvalidRequestError(f"'stream' must be a boolean, got {stream!r}.")
        self.stream: bool = stream and operation.streams
        if operation is CHAT and "messages" not in data:
            raise InvalidRequestError("'messages' is required: a list of chat messages.")
        self._bodies: dict[str, bytes] = {}

    def body_for(self, upstream_model: str) -> bytes:
        """The bytes to send to a target whose model is ``upstream_model`` (computed once per model)."""
        body = self._bodies.get(upstream_model)
        if body is None:
            body = self._bodies[upstream_model] = self._render(upstream_model)
        return body

    def _render(self, upstream_model: str) -> bytes:
        if not self._changed:
            if upstream_model == self.model:
                return self.raw
            matches = list(_MODEL_VALUE.finditer(self.raw))
            if len(matches) == 1 and matches[0].group(1) == self.model.encode():
                start, end = matches[0].span(1)
                return self.raw[:start] + orjson.dumps(upstream_model)[1:-1] + self.raw[end:]
        return orjson.dumps({**self.data, "model": upstream_model})

    def request_attributes(self) -> dict[str, Any]:
        """The ``gen_ai.request.*`` span attributes this body sets (no content: that is opt-in elsewhere)."""
        data = self.data
        attributes: dict[str, Any] = {}
        for field, name in _NUMERIC_REQUEST_ATTRIBUTES:
            value = data.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
        n = data.get("n")
        if isinstance(n, int) and not isinstance(n, bool) and n != 1:
            attributes[sc.GEN_AI_REQUEST_CHOICE_COUNT] = n
        if self.stream:
            attributes[sc.GEN_AI_REQUEST_STREAM] = True
        stop = data.get("stop")
        if isinstance(stop, str):
            attributes[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            attributes[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = stop
        response_format = data.get("response_format")
        if isinstance(response_format, dict):
            kind = response_format.get("type")
            attributes[sc.GEN_AI_OUTPUT_TYPE] = "json" if kind in ("json_object", "json_schema") else "text"
        if self.prompt is not None:
            attributes[sc.GEN_AI_PROMPT_NAME] = self.prompt.name
            attributes[sc.GEN_AI_PROMPT_VERSION] = self.prompt.version
        encoding_format = data.get("encoding_format")
        if self.operation is EMBEDDINGS and isinstance(encoding_format, str):
            attributes[sc.GEN_AI_REQUEST_ENCODING_FORMATS] = [encoding_format]
        return attributes
