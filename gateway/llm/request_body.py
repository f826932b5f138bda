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

from gateway.json_depth import DEFAULT_MAX_JSON_DEPTH, json_depth_exceeds, too_deep_message
from gateway.llm import anthropic_messages, openai_responses
from gateway.llm.errors import InvalidRequestError
from gateway.llm.prompt_link import LinkedPrompt, PromptRenderer, apply_prompt
from gateway.llm.routes_config import API_ANTHROPIC, API_OPENAI, Target
from gateway.telemetry import semconv as sc

# What a body and its answer look like (which reader of this package reads them).
FORMAT_CHAT = "chat"
FORMAT_TEXT_COMPLETION = "text_completion"
FORMAT_EMBEDDINGS = "embeddings"
FORMAT_RESPONSES = "responses"  # the OpenAI Responses API (gateway/llm/openai_responses.py)
FORMAT_MESSAGES = "messages"  # the Anthropic Messages API (gateway/llm/anthropic_messages.py)
FORMAT_OTHER = "other"  # read for its id and model only: token counts, a stored response's follow-ups


@dataclass(frozen=True, slots=True)
class Operation:
    """One endpoint the proxy relays: its gen_ai.operation.name, upstream path and SERVER span name, the
    format of its bodies, the wire API of the targets that serve it, and whether it is inference (a call
    whose usage counts, with gen_ai.client.inference metrics), as opposed to token counts and follow-ups."""

    name: str
    path: str  # appended to a target's base_url
    span_name: str
    streams: bool  # accepts "stream": true
    format: str = FORMAT_CHAT
    api: str = API_OPENAI
    inference: bool = True
    method: str = "POST"


CHAT = Operation(sc.OPERATION_CHAT, "/chat/completions", "POST /v1/chat/completions", True)
COMPLETIONS = Operation(
    sc.OPERATION_TEXT_COMPLETION, "/completions", "POST /v1/completions", True, FORMAT_TEXT_COMPLETION
)
EMBEDDINGS = Operation(sc.OPERATION_EMBEDDINGS, "/embeddings", "POST /v1/embeddings", False, FORMAT_EMBEDDINGS)
# The Responses API is chat for the conventions (none of their values names it), told apart by openai.api.type.
RESPONSES = Operation(sc.OPERATION_CHAT, "/responses", "POST /v1/responses", True, FORMAT_RESPONSES)
RESPONSES_INPUT_TOKENS = Operation(
    sc.OPERATION_COUNT_TOKENS, "/responses/input_tokens", "POST /v1/responses/input_tokens", False, FORMAT_OTHER,
    inference=False,
)  # fmt: skip
MESSAGES = Operation(sc.OPERATION_CHAT, "/messages", "POST /v1/messages", True, FORMAT_MESSAGES, API_ANTHROPIC)
COUNT_TOKENS = Operation(
    sc.OPERATION_COUNT_TOKENS, "/messages/count_tokens", "POST /v1/messages/count_tokens", False, FORMAT_MESSAGES,
    API_ANTHROPIC, inference=False,
)  # fmt: skip
# A stored response's follow-ups: the upstream path is /responses/{id}<suffix>, to the target that created it.
RETRIEVE_RESPONSE = Operation(
    sc.OPERATION_RETRIEVE_RESPONSE, "", "GET /v1/responses/{response_id}", True, FORMAT_OTHER, inference=False,
    method="GET",
)  # fmt: skip
DELETE_RESPONSE = Operation(
    sc.OPERATION_DELETE_RESPONSE, "", "DELETE /v1/responses/{response_id}", False, FORMAT_OTHER, inference=False,
    method="DELETE",
)  # fmt: skip
CANCEL_RESPONSE = Operation(
    sc.OPERATION_CANCEL_RESPONSE, "/cancel", "POST /v1/responses/{response_id}/cancel", False, FORMAT_OTHER,
    inference=False,
)  # fmt: skip
LIST_INPUT_ITEMS = Operation(
    sc.OPERATION_LIST_INPUT_ITEMS, "/input_items", "GET /v1/responses/{response_id}/input_items", False,
    FORMAT_OTHER, inference=False, method="GET",
)  # fmt: skip
OPERATION_PATHS = (CHAT.path, COMPLETIONS.path, EMBEDDINGS.path, RESPONSES.path, MESSAGES.path)

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

    __slots__ = (
        "operation", "raw", "data", "model", "stream", "prompt", "previous_response_id", "extra_headers", "pinned",
        "_changed", "_bodies",
    )  # fmt: skip

    def __init__(
        self, operation: Operation, raw: bytes, renderer: PromptRenderer | None, max_depth: int = DEFAULT_MAX_JSON_DEPTH
    ) -> None:
        self.operation = operation
        self.raw = raw
        self.previous_response_id: str | None = None
        self.extra_headers: dict[str, str] | None = None  # sent upstream besides the target's own (anthropic-beta)
        self.pinned: Target | None = None  # the one target to send it to (a stored response's), no fallback
        if json_depth_exceeds(raw, max_depth):  # http.max_json_depth: prompt rendering, spans and orjson.dumps recurse
            raise InvalidRequestError(too_deep_message(max_depth), code="json_too_deep")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(f"Request body is not valid JSON: {exc}.", code="invalid_json") from None
        if not isinstance(data, dict):
            raise InvalidRequestError(f"Request body must be a JSON object, got {type(data).__name__}.")
        self.data: dict[str, Any] = data
        self.prompt: LinkedPrompt | None = None
        self._changed = False
        format = operation.format
        if operation is CHAT and "prompt" in data:
            self.prompt = apply_prompt(data, renderer)
            self._changed = True
        elif format == FORMAT_RESPONSES:
            self.previous_response_id = openai_responses.check_request(data)
            if openai_responses.links_our_prompt(data):
                self.prompt = openai_responses.apply_prompt(data, renderer)
                self._changed = True
        elif format == FORMAT_MESSAGES:
            anthropic_messages.check_request(data)
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

    @property
    def upstream_path(self) -> str:
        """Appended to a target's base URL (a follow-up's names its response)."""
        return self.operation.path

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
        format = self.operation.format
        if format == FORMAT_RESPONSES:
            openai_responses.request_attributes(data, attributes)
        elif format == FORMAT_MESSAGES:
            anthropic_messages.request_attributes(data, attributes)
        else:
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
