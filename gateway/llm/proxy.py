"""LlmProxy: one OpenAI-compatible call from request to answer, with its spans and metrics.

Order per request: SERVER span (continuing ``traceparent``) -> gateway key -> body -> prompt link ->
route -> upstream attempts (``Upstreams.dispatch``) -> the answer as the upstream sent it, or a
stream relayed event by event. The SERVER span ends with the call's summary when the answer (or
the stream) is done: a whole answer is sent first, and its spans and metrics are recorded after.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import orjson
from opentelemetry.trace import Span, TracerProvider
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.http import read_body
from gateway.llm import content, metrics, spans
from gateway.llm.answer import AnswerSummary
from gateway.llm.auth import GatewayKeys
from gateway.llm.errors import INVALID_REQUEST, SERVER, ProxyError
from gateway.llm.prompt_link import PromptRenderer
from gateway.llm.request_body import Operation, ParsedCall
from gateway.llm.routes_config import AuthSettings, LlmSettings, Route
from gateway.llm.streaming import StreamingAnswer, StreamState
from gateway.llm.upstream import Attempt, CallProgress, Completed, Opened, Upstreams
from gateway.telemetry import semconv as sc

logger = logging.getLogger("gateway.llm")

CLIENT_DISCONNECTED = "client_disconnected"


class RecordingResponse(Response):
    """A whole answer whose call is recorded (spans, metrics) once its bytes are handed to the server,
    so the client does not wait for that bookkeeping; recorded also when sending fails."""

    def __init__(self, body: bytes, status_code: int, media_type: str, record: Callable[[], None]) -> None:
        super().__init__(body, status_code=status_code, media_type=media_type)
        self._record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                self._record()
            except Exception:  # the client has its answer: say so in the log, never in a second response
                logger.exception("Could not record the spans and metrics of an LLM call")


class LlmProxy:
    """The proxy's state (routes, keys, upstream clients, tracer) and its request path."""

    def __init__(
        self,
        settings: LlmSettings,
        auth: AuthSettings,
        tracer_provider: TracerProvider,
        renderer: PromptRenderer | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.keys = GatewayKeys(auth)
        self.renderer = renderer
        self.spans = spans.ProxySpans(tracer_provider)
        self.upstreams = Upstreams(settings, self.spans, os.environ if environ is None else environ)
        created = int(time.time())
        self._models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": created, "owned_by": "gateway"}
                    for name in settings.routes
                ],
            }
        )

    async def start(self) -> None:
        await self.upstreams.start()

    async def close(self) -> None:
        await self.upstreams.close()

    def list_models(self, request: Request) -> Response:
        try:
            self.keys.authenticate(request.headers.get("authorization"))
        except ProxyError as exc:
            return exc.response()
        return Response(self._models_body, media_type="application/json")

    async def handle(self, request: Request, operation: Operation) -> Response:
        started = time.perf_counter()
        headers = request.headers
        server_span = self.spans.start_server(operation, request.scope["path"], headers)
        progress = CallProgress()
        call: ParsedCall | None = None
        route: Route | None = None
        key_id: str | None = None
        try:
            key_id = self.keys.authenticate(headers.get("authorization"))
            raw = await read_body(request, self.settings.max_body_bytes)
            call = ParsedCall(operation, raw, self.renderer)
            route = self.settings.routes.get(call.model)
            if route is None:
                raise ProxyError(
                    404,
                    f"The model {call.model!r} does not exist on this gateway; "
                    f"its routes are: {', '.join(self.settings.routes) or '(none configured)'}.",
                    type=INVALID_REQUEST,
                    code="model_not_found",
                )
            attempt = await self.upstreams.dispatch(call, route, server_span, progress)
        except ProxyError as exc:
            if exc.status >= 500:
                logger.warning("LLM call failed with %d: %s", exc.status, exc.message)
            self._end_server(server_span, exc.status, call, route, progress, key_id, None, None, exc)
            return exc.response()
        except GatewayError as exc:  # e.g. a body over llm.max_body_bytes (413)
            error = ProxyError(exc.status, exc.message, type=INVALID_REQUEST, code=exc.error_code.lower())
            self._end_server(server_span, exc.status, call, route, progress, key_id, None, None, error)
            return error.response()
        except ClientDisconnect:
            error = ProxyError(499, "client disconnected", type=INVALID_REQUEST, error_type=CLIENT_DISCONNECTED)
            self._end_server(server_span, 499, call, route, progress, key_id, None, None, error)
            return Response(status_code=499)
        except Exception as exc:
            logger.exception("Unexpected error in the LLM proxy", exc_info=exc)
            error = ProxyError(
                500,
                f"Internal error in the LLM proxy ({type(exc).__name__}); see the gateway log.",
                type=SERVER,
                code="internal_error",
                error_type=type(exc).__name__,
            )
            self._end_server(server_span, 500, call, route, progress, key_id, None, None, error)
            return error.response()
        if isinstance(attempt.outcome, Completed):
            answer = attempt.outcome  # the upstream's bytes go to the client unchanged, then the call is recorded
            record = partial(self._record_answer, attempt, answer, call, route, server_span, progress, key_id)
            return RecordingResponse(answer.body, answer.status, answer.content_type, record)
        return self._relay(attempt, attempt.outcome, call, route, server_span, progress, key_id, started)

    def _record_answer(
        self,
        attempt: Attempt,
        answer: Completed,
        call: ParsedCall,
        route: Route,
        server_span: Span,
        progress: CallProgress,
        key_id: str | None,
    ) -> None:
        """Both spans and the metrics of a whole answer (after it was sent: the client does not wait for this)."""
        operation = call.operation.name
        ok = answer.status < 300
        summary = AnswerSummary.from_body(operation, answer.body, capture=route.capture_content) if ok else None
        captured = self._content(call, route, summary)
        error_type = None if ok else str(answer.status)
        target = attempt.target
        answered = summary or AnswerSummary()
        spans.end_answered(
            attempt.span,
            answered,
            time_to_first_chunk_s=None,
            error_type=error_type,
            content=captured,
            end_time=answer.answered_ns,
        )
        labels = (operation, target.provider, target.model, route.name)
        metrics.record_attempt(labels, answer.answered_at - attempt.started, error_type, summary)
        error = None
        if not ok:
            error = ProxyError(answer.status, "upstream refused the request", type=INVALID_REQUEST)
        self._end_server(server_span, answer.status, call, route, progress, key_id, summary, None, error, captured)

    def _relay(
        self,
        attempt: Attempt,
        opened: Opened,
        call: ParsedCall,
        route: Route,
        server_span: Span,
        progress: CallProgress,
        key_id: str | None,
        started: float,
    ) -> StreamingAnswer:
        target = attempt.target
        state = StreamState(call.operation.name, capture=route.capture_content)

        def on_end(summary: AnswerSummary, error: ProxyError | None, disconnected: bool) -> None:
            first_chunk_s = opened.first_event_at - attempt.started
            error_type = error.error_type if error else (CLIENT_DISCONNECTED if disconnected else None)
            captured = self._content(call, route, summary)
            spans.end_answered(
                attempt.span,
                summary,
                time_to_first_chunk_s=first_chunk_s,
                error_type=error_type,
                error_message=error.message if error else None,
                content=captured,
            )
            labels = (call.operation.name, target.provider, target.model, route.name)
            upstream_error = error.error_type if error else None
            duration_s = time.perf_counter() - attempt.started
            metrics.record_attempt(labels, duration_s, upstream_error, summary, first_chunk_s)
            ttfc = opened.first_event_at - started
            failure = error or (
                ProxyError(200, "client disconnected", type=INVALID_REQUEST, error_type=CLIENT_DISCONNECTED)
                if disconnected
                else None
            )
            self._end_server(server_span, 200, call, route, progress, key_id, summary, ttfc, failure, captured)

        return StreamingAnswer(
            opened.response, opened.chunks, opened.splitter, opened.first_events, state, target.label, on_end
        )

    def _content(self, call: ParsedCall, route: Route, summary: AnswerSummary | None) -> dict[str, str] | None:
        """``gen_ai.input.messages`` / ``gen_ai.output.messages`` when the route captures content."""
        if not route.capture_content:
            return None
        limit = route.capture_max_chars
        messages = content.input_messages(call.operation.name, call.data)
        captured = {sc.GEN_AI_INPUT_MESSAGES: content.to_attribute(messages, limit)}
        if summary is not None and summary.output_messages is not None:
            captured[sc.GEN_AI_OUTPUT_MESSAGES] = content.to_attribute(summary.output_messages, limit)
        return captured

    def _end_server(
        self,
        span: Span,
        status: int,
        call: ParsedCall | None,
        route: Route | None,
        progress: CallProgress,
        key_id: str | None,
        summary: AnswerSummary | None,
        time_to_first_chunk_s: float | None,
        error: ProxyError | None,
        captured: Mapping[str, str] | None = None,
    ) -> None:
        """The SERVER span's summary of the call (what the trace store keeps) and the request metric."""
        attributes: dict[str, Any] = {}
        if key_id is not None:
            attributes[sc.GATEWAY_AUTH_KEY_ID] = key_id
        if call is not None:
            attributes[sc.GEN_AI_OPERATION_NAME] = call.operation.name
            attributes[sc.GEN_AI_REQUEST_STREAM] = call.stream
            if call.prompt is not None:
                attributes[sc.GEN_AI_PROMPT_NAME] = call.prompt.name
                attributes[sc.GEN_AI_PROMPT_VERSION] = call.prompt.version
        if route is not None:
            attributes[sc.GATEWAY_LLM_ROUTE] = route.name
            attributes[sc.GATEWAY_LLM_ATTEMPTS] = progress.attempts
            target = progress.target
            if target is not None:
                attributes[sc.GATEWAY_LLM_TARGET] = target.label
                attributes[sc.GEN_AI_PROVIDER_NAME] = target.provider
                attributes[sc.GEN_AI_REQUEST_MODEL] = target.model
            if captured is None and call is not None and route.capture_content:
                captured = self._content(call, route, summary)
        if summary is not None:
            attributes.update(summary.attributes())
        if time_to_first_chunk_s is not None:
            attributes[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = time_to_first_chunk_s
        if captured:
            attributes.update(captured)
        spans.end_server(
            span,
            status,
            attributes,
            error_type=error.error_type if error else None,
            error_message=error.message if error else None,
        )
        metrics.record_request(route.name if route is not None else "", status)
