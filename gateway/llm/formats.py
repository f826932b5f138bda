"""One call's API, dispatched: which reader reads its answer, its stream and its captured input.

The proxy relays four body formats (``Operation.format``, gateway/llm/request_body.py): OpenAI's chat and
text completions and embeddings (gateway/llm/answer.py, streaming.py, content.py), the OpenAI Responses API
(openai_responses.py) and Anthropic's Messages API (anthropic_messages.py). Whatever the format, the call is
recorded the same way (gateway/llm/call_record.py): an ``AnswerSummary`` for the spans, the trace summary and
the metrics, and ``gen_ai.input.messages`` / ``gen_ai.output.messages`` in the GenAI conventions' message
shape when the route captures content, which is what the trace store's ``input_content`` and
``output_content`` hold for judges to read.

Calls that are not inference (token counts, a stored response's follow-ups) are read for their id and
model only: a retrieved response's usage is the usage of the call that created it, already counted.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.llm import anthropic_messages, content, openai_responses
from gateway.llm.answer import AnswerSummary
from gateway.llm.openai_responses import ResponsesStreamState
from gateway.llm.request_body import FORMAT_MESSAGES, FORMAT_OTHER, FORMAT_RESPONSES, Operation
from gateway.llm.streaming import RelayState, StreamState


def read_answer(operation: Operation, data: dict[str, Any], *, capture: bool) -> AnswerSummary:
    """What the spans need from a whole 2xx answer (already parsed)."""
    summary = AnswerSummary()
    format = operation.format
    if format == FORMAT_RESPONSES:
        openai_responses.read_answer(summary, data, capture=capture)
    elif format == FORMAT_MESSAGES:
        if operation.inference:
            anthropic_messages.read_answer(summary, data, capture=capture)
    elif format == FORMAT_OTHER:
        summary.read_header(data)
    else:
        summary = AnswerSummary.from_data(operation.name, data, capture=capture)
    return summary


def read_body(operation: Operation, body: bytes, *, capture: bool) -> AnswerSummary:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return AnswerSummary()
    return read_answer(operation, data, capture=capture) if isinstance(data, dict) else AnswerSummary()


class _HeaderOnlyState(ResponsesStreamState):
    """A stored response replayed as a stream (GET /v1/responses/{id}?stream=true): its id and model only."""

    __slots__ = ()

    def finish(self) -> AnswerSummary:
        summary = AnswerSummary()
        summary.response_id, summary.response_model = self.summary.response_id, self.summary.response_model
        return summary


def stream_state(operation: Operation, *, capture: bool) -> RelayState:
    format = operation.format
    if format == FORMAT_RESPONSES:
        return ResponsesStreamState(capture=capture)
    if format == FORMAT_MESSAGES:
        return anthropic_messages.MessagesStreamState(capture=capture)
    if format == FORMAT_OTHER:
        return _HeaderOnlyState(capture=False)
    return StreamState(operation.name, capture=capture)


def input_messages(operation: Operation, data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The request's input as GenAI messages; None for a call that is not inference (nothing to capture)."""
    if not operation.inference:
        return None
    format = operation.format
    if format == FORMAT_RESPONSES:
        return openai_responses.input_messages(data)
    if format == FORMAT_MESSAGES:
        return anthropic_messages.input_messages(data)
    return content.input_messages(operation.name, data)
