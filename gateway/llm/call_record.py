"""CallRecord: what one proxied call has gathered, from its top span's start to its end.

``LlmProxy.handle`` fills it in as the call gets further (the key id, the parsed body, the route;
``Upstreams.dispatch`` counts the attempts and the target on it, as its ``CallProgress``), and so
does ``LlmProxy.complete`` for an in-process call, whose top span is INTERNAL instead of SERVER. A
call ends in exactly one of these ways, each recording the top span's summary (what the trace store
keeps) and the request metric, and, when an upstream answered, its CLIENT span and attempt metrics:

- ``fail(error)``: no answer came through (a refused request, no such route, every upstream failed),
  recorded before the error is answered;
- ``answered(answer)``: a whole answer, recorded by ``RecordingResponse`` once its bytes were sent
  (by ``LlmProxy.complete`` before it returns);
- ``rejected(answer, error)``: a 2xx answer an in-process caller cannot use (not a JSON object);
- ``streamed(opened)``: a stream, relayed by the ``StreamingAnswer`` it returns, recorded when the
  stream ends (``stream_ended``).

The answering target's prices, when it has them, make the call's ``gateway.usage.cost_usd``. A call of a key with
limits carries its ``Admission`` (gateway/limits/limiter.py), settled as the call ends.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry.trace import Span
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.limits.limiter import Admission
from gateway.llm import content, formats, metrics, spans
from gateway.llm.answer import AnswerSummary
from gateway.llm.errors import ProxyError
from gateway.llm.request_body import ParsedCall
from gateway.llm.routes_config import Route
from gateway.llm.streaming import Opened, RelayState, StreamingAnswer
from gateway.llm.upstream import Attempt, CallProgress, Completed, call_labels
from gateway.telemetry import semconv as sc

logger = logging.getLogger("gateway.llm")

CLIENT_DISCONNECTED = "client_disconnected"


class CallRecord(CallProgress):
    """One proxied call: its top span (SERVER, or INTERNAL in process), start time, progress, key id,
    parsed body, route, the attempt that answered (set before ``answered``, ``rejected`` or
    ``streamed``) and the cost of its answer."""

    __slots__ = (
        "span", "started", "key_id", "parsed", "route", "attempt", "first_event_at", "cost_usd", "admission",
        "stream_state",
    )  # fmt: skip

    attempt: Attempt

    def __init__(self, span: Span, started: float) -> None:
        super().__init__()
        self.span = span
        self.started = started  # perf_counter
        self.key_id: str | None = None
        self.parsed: ParsedCall | None = None
        self.route: Route | None = None
        self.first_event_at: float | None = None  # a stream's first events (perf_counter)
        self.cost_usd: float | None = None  # from the answering target's prices and the answer's usage
        self.admission: Admission | None = None  # a limited key's (gateway/limits/): settled when the call ends
        self.stream_state: RelayState | None = None  # a stream's reader (set by streamed())

    def fail(self, error: GatewayError) -> None:
        """The call ends with ``error`` (or the client left: status 499) and no upstream answer."""
        error_type = error.error_type if isinstance(error, ProxyError) else error.openai_code
        self._end(error.status, None, None, error_type, error.message)

    def answered(self, answer: Completed, data: dict[str, Any] | None = None) -> AnswerSummary | None:
        """Both spans and the metrics of a whole answer (after it was sent: the client does not wait for this);
        ``data`` is the answer already parsed, when it is. The summary of a success is returned."""
        parsed, route, attempt = self.parsed, self.route, self.attempt
        assert parsed is not None and route is not None  # known before any upstream was asked
        operation = parsed.operation
        ok = answer.status < 300
        summary: AnswerSummary | None = None
        if ok:
            capture = route.capture_content
            if data is None:
                summary = formats.read_body(operation, answer.body, capture=capture)
            else:
                summary = formats.read_answer(operation, data, capture=capture)
        captured = _content(parsed, route, summary)
        error_type = None if ok else str(answer.status)
        target = attempt.target
        attributes = spans.answer_attributes(summary or AnswerSummary(), None, captured.genai if captured else None)
        if summary is not None and target.input_price_per_mtok is not None:
            self._price(attributes, summary)
        spans.end_answered(attempt.span, attributes, error_type=error_type, end_time=answer.answered_ns)
        labels = call_labels(parsed, route, target)
        if operation.inference:
            metrics.record_attempt(labels, answer.answered_at - attempt.started, error_type, summary)
        elif error_type is not None:
            metrics.record_upstream_error(labels, error_type)
        self._end(answer.status, summary, captured, error_type, None if ok else "upstream refused the request")
        return summary

    def streamed(self, opened: Opened) -> StreamingAnswer:
        """The response relaying ``opened``; the call is recorded when the stream ends."""
        parsed, route = self.parsed, self.route
        assert parsed is not None and route is not None  # known before any upstream was asked
        self.first_event_at = opened.first_event_at
        state = self.stream_state = formats.stream_state(parsed.operation, capture=route.capture_content)
        return StreamingAnswer(opened, state, self.attempt.target.label, self.stream_ended)

    def stream_ended(self, summary: AnswerSummary, error: ProxyError | None, disconnected: bool) -> None:
        """Both spans and the metrics of a stream, however it ended (``StreamingAnswer`` calls this once)."""
        parsed, route, attempt, first_event_at = self.parsed, self.route, self.attempt, self.first_event_at
        assert parsed is not None and route is not None and first_event_at is not None  # set by streamed()
        target = attempt.target
        state = self.stream_state
        if state is not None and state.first_delta_at is not None:  # the first output delta, where the API tells
            first_event_at = self.first_event_at = state.first_delta_at
        first_chunk_s = first_event_at - attempt.started
        error_type = error.error_type if error else (CLIENT_DISCONNECTED if disconnected else None)
        captured = _content(parsed, route, summary)
        attributes = spans.answer_attributes(summary, first_chunk_s, captured.genai if captured else None)
        if target.input_price_per_mtok is not None:
            self._price(attributes, summary)
        spans.end_answered(
            attempt.span,
            attributes,
            error_type=error_type,
            error_message=error.message if error else None,
        )
        labels = call_labels(parsed, route, target)
        upstream_error = error.error_type if error else None
        duration_s = time.perf_counter() - attempt.started
        if parsed.operation.inference:
            metrics.record_attempt(labels, duration_s, upstream_error, summary, first_chunk_s)
        elif upstream_error is not None:
            metrics.record_upstream_error(labels, upstream_error)
        if error is not None:
            self._end(200, summary, captured, error.error_type, error.message)
        elif disconnected:
            self._end(200, summary, captured, CLIENT_DISCONNECTED, "client disconnected")
        else:
            self._end(200, summary, captured)

    def _price(self, attributes: dict[str, Any], summary: AnswerSummary) -> None:
        """``gateway.usage.cost_usd`` of the answering target (which has prices) on its CLIENT span's
        ``attributes``, kept for the call's summary."""
        cost = self.cost_usd = self.attempt.target.cost_usd(summary.input_tokens, summary.output_tokens)
        if cost is not None:
            attributes[sc.GATEWAY_USAGE_COST_USD] = cost

    def _end(
        self,
        status: int,
        summary: AnswerSummary | None,
        captured: Captured | None,
        error_type: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """The SERVER span's summary of the call (what the trace store keeps) and the request metric; a limited
        key's reservation corrected to the call's real usage, and its cost added to the key's spend."""
        if self.admission is not None:
            self.admission.settle(summary, self.cost_usd)
        attributes: dict[str, Any] = {}
        if self.key_id is not None:
            attributes[sc.GATEWAY_AUTH_KEY_ID] = self.key_id
        parsed, route = self.parsed, self.route
        if parsed is not None:
            attributes[sc.GEN_AI_OPERATION_NAME] = parsed.operation.name
            attributes[sc.GEN_AI_REQUEST_STREAM] = parsed.stream
            if parsed.prompt is not None:
                attributes[sc.GEN_AI_PROMPT_NAME] = parsed.prompt.name
                attributes[sc.GEN_AI_PROMPT_VERSION] = parsed.prompt.version
        if route is not None:
            attributes[sc.GATEWAY_LLM_ROUTE] = route.name
            attributes[sc.GATEWAY_LLM_ATTEMPTS] = self.attempts
            target = self.target
            if target is not None:
                attributes[sc.GATEWAY_LLM_TARGET] = target.label
                attributes[sc.GEN_AI_PROVIDER_NAME] = target.provider
                attributes[sc.GEN_AI_REQUEST_MODEL] = target.model
            if captured is None and parsed is not None and route.capture_content:
                captured = _content(parsed, route, summary)
        if summary is not None:
            attributes.update(summary.attributes())
            if self.cost_usd is not None:
                attributes[sc.GATEWAY_USAGE_COST_USD] = self.cost_usd
        if self.first_event_at is not None:
            attributes[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = self.first_event_at - self.started
        if captured is not None:
            attributes.update(captured.genai)
            attributes.update(captured.mlflow)
        spans.end_server(self.span, status, attributes, error_type=error_type, error_message=error_message)
        metrics.record_request(route.name if route is not None else "", status)


class RecordingResponse(Response):
    """A whole answer whose call is recorded (spans, metrics) once its bytes are handed to the server,
    so the client does not wait for that bookkeeping; recorded also when sending fails."""

    def __init__(self, answer: Completed, call: CallRecord) -> None:
        super().__init__(answer.body, status_code=answer.status, media_type=answer.content_type)
        self._answer = answer
        self._call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                self._call.answered(self._answer, self._answer.data)
            except Exception:  # the client has its answer: say so in the log, never in a second response
                logger.exception("Could not record the spans and metrics of an LLM call")


class Captured:
    """A captured call's content attributes: ``genai`` for both spans (``gen_ai.input.messages`` /
    ``gen_ai.output.messages``, and ``gateway.llm.content_truncated`` when either was cut to
    ``capture_max_chars``: online judges skip those), ``mlflow`` for the SERVER span only
    (``mlflow.spanInputs`` / ``mlflow.spanOutputs``: MLflow's request and response columns, content.py)."""

    __slots__ = ("genai", "mlflow")

    def __init__(self, genai: dict[str, Any], mlflow: dict[str, Any]) -> None:
        self.genai = genai
        self.mlflow = mlflow


def _content(parsed: ParsedCall, route: Route, summary: AnswerSummary | None) -> Captured | None:
    """The call's content attributes when the route captures content (``Captured``), else None."""
    if not route.capture_content:
        return None
    limit = route.capture_max_chars
    messages = formats.input_messages(parsed.operation, parsed.data)
    if messages is None:
        return None
    captured: dict[str, Any] = {}
    mlflow: dict[str, Any] = {sc.MLFLOW_SPAN_INPUTS: content.mlflow_inputs(messages, limit)}
    captured[sc.GEN_AI_INPUT_MESSAGES], cut = content.to_attribute_text(messages, limit)
    if summary is not None and summary.output_messages is not None:
        captured[sc.GEN_AI_OUTPUT_MESSAGES], output_cut = content.to_attribute_text(summary.output_messages, limit)
        mlflow[sc.MLFLOW_SPAN_OUTPUTS] = content.mlflow_outputs(summary.output_messages, limit)
        cut = cut or output_cut
    if cut:
        captured[sc.GATEWAY_LLM_CONTENT_TRUNCATED] = True
    return Captured(captured, mlflow)
