"""What a span needs from an upstream answer: id, model, finish reasons, usage, optionally the output.

``AnswerSummary.from_body`` reads a non-streamed answer; ``StreamState`` (streaming.py) fills the
same fields chunk by chunk while the chunks themselves pass through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.llm.content import output_messages_from_response
from gateway.telemetry import semconv as sc


class AnswerSummary:
    __slots__ = (
        "response_id",
        "response_model",
        "finish_reasons",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "dimension_count",
        "output_messages",
    )

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.finish_reasons: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cache_read_tokens: int | None = None
        self.cache_write_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.dimension_count: int | None = None
        self.output_messages: list[dict[str, Any]] | None = None

    @classmethod
    def from_body(cls, operation: str, body: bytes, *, capture: bool) -> AnswerSummary:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        return cls.from_data(operation, data, capture=capture)

    @classmethod
    def from_data(cls, operation: str, data: dict[str, Any], *, capture: bool) -> AnswerSummary:
        """The same from an answer already parsed (``LlmProxy.complete`` parses it once for its caller)."""
        summary = cls()
        summary.read_header(data)
        summary.read_usage(data.get("usage"))
        choices = data.get("choices")
        if isinstance(choices, list):
            summary.finish_reasons = [
                str(c["finish_reason"]) for c in choices if isinstance(c, dict) and c.get("finish_reason")
            ]
        if operation == sc.OPERATION_EMBEDDINGS:
            items = data.get("data")
            if isinstance(items, list) and items and isinstance(items[0], dict):
                vector = items[0].get("embedding")
                if isinstance(vector, list):
                    summary.dimension_count = len(vector)
        elif capture:
            summary.output_messages = output_messages_from_response(operation, data)
        return summary

    def read_header(self, data: Mapping[str, Any]) -> None:
        response_id = data.get("id")
        if isinstance(response_id, str):
            self.response_id = response_id
        model = data.get("model")
        if isinstance(model, str):
            self.response_model = model

    def read_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        if isinstance(prompt, int):
            self.input_tokens = prompt
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        if isinstance(completion, int):
            self.output_tokens = completion
        # chat completions' names, else the Responses API's
        prompt_details = usage.get("prompt_tokens_details", usage.get("input_tokens_details"))
        if isinstance(prompt_details, dict) and isinstance(prompt_details.get("cached_tokens"), int):
            self.cache_read_tokens = prompt_details["cached_tokens"]
        completion_details = usage.get("completion_tokens_details", usage.get("output_tokens_details"))
        if isinstance(completion_details, dict) and isinstance(completion_details.get("reasoning_tokens"), int):
            self.reasoning_tokens = completion_details["reasoning_tokens"]

    def attributes(self) -> dict[str, Any]:
        """The span attributes this answer sets (content excluded)."""
        attributes: dict[str, Any] = {}
        if self.response_id is not None:
            attributes[sc.GEN_AI_RESPONSE_ID] = self.response_id
        if self.response_model is not None:
            attributes[sc.GEN_AI_RESPONSE_MODEL] = self.response_model
        if self.finish_reasons:
            attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] = self.finish_reasons
        if self.input_tokens is not None:
            attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = self.input_tokens
        if self.output_tokens is not None:
            attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = self.output_tokens
        if self.cache_read_tokens is not None:
            attributes[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = self.cache_read_tokens
        if self.cache_write_tokens is not None:
            attributes[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] = self.cache_write_tokens
        if self.reasoning_tokens is not None:
            attributes[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = self.reasoning_tokens
        if self.dimension_count is not None:
            attributes[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = self.dimension_count
        return attributes
