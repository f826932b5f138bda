"""LlmProxy: one OpenAI-compatible call from request to answer, with its spans and metrics.

Order per request: SERVER span (continuing ``traceparent``) -> gateway key -> body -> prompt link ->
the key's model list -> route -> the key's rate limits and budget (gateway/limits/: 429, or the answer's
``x-ratelimit-*`` headers) -> upstream attempts (``Upstreams.dispatch``) -> the answer as the upstream sent
it, or a stream relayed event by event. The call's ``CallRecord`` (gateway/llm/call_record.py) ends the
SERVER span with the call's summary when the answer (or the stream) is done: a whole answer is sent
first, and its spans and metrics are recorded after. A call that fails is recorded, then its error
is raised for the app's one error handler, which answers it in OpenAI's shape.

``complete`` is the same path for a caller in this process (a judge): no HTTP request, no gateway
key; an INTERNAL span in a trace of its own instead of the SERVER span; the answer returned as a
``Completion`` (gateway/llm/completion.py) and every other outcome raised as a ``ProxyError``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import orjson
from opentelemetry.trace import TracerProvider
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.http import read_body
from gateway.keys import GatewayKeys, check_model
from gateway.limit_settings import LimitsSettings
from gateway.limits.limiter import KeyLimiter
from gateway.llm import spans
from gateway.llm.answer import AnswerSummary
from gateway.llm.call_record import CLIENT_DISCONNECTED, CallRecord, RecordingResponse
from gateway.llm.completion import Completion, message_text, span_links
from gateway.llm.errors import InvalidRequestError, ProxyError, from_gateway_error
from gateway.llm.prompt_link import PromptRenderer
from gateway.llm.request_body import CHAT, Operation, ParsedCall
from gateway.llm.routes_config import AuthSettings, LlmSettings
from gateway.llm.upstream import Completed, Upstreams, error_message

logger = logging.getLogger("gateway.llm")

_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})
CANCELLED = "cancelled"


class LlmProxy:
    """The proxy's state (routes, keys, upstream clients, tracer) and its request path."""

    def __init__(
        self,
        settings: LlmSettings,
        auth: AuthSettings | GatewayKeys,
        tracer_provider: TracerProvider,
        renderer: PromptRenderer | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        # The app hands its keys (kept current from the store); from settings, the bootstrap keys only.
        self.keys = auth if isinstance(auth, GatewayKeys) else GatewayKeys(auth)
        # A key's rate limits and budget (gateway/limits/): this process's counts; the app sets its own (on Redis
        # when redis_url is set).
        self.limiter = KeyLimiter(LimitsSettings())
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
        key = self.keys.authorize_key("llm", request.headers.get("authorization"), request.scope["path"])
        if key is not None and key.models is not None:  # only the routes this key may use
            body = orjson.loads(self._models_body)
            body["data"] = [model for model in body["data"] if model["id"] in key.models]
            return Response(orjson.dumps(body), media_type="application/json")
        return Response(self._models_body, media_type="application/json")

    async def handle(self, request: Request, operation: Operation) -> Response:
        started = time.perf_counter()
        headers = request.headers
        call = CallRecord(self.spans.start_server(operation, request.scope["path"], headers), started)
        try:
            key = self.keys.authorize_key("llm", headers.get("authorization"), request.scope["path"])
            call.key_id = key.id if key is not None else None
            raw = await read_body(request, self.settings.max_body_bytes)
            parsed = call.parsed = ParsedCall(operation, raw, self.renderer)
            check_model(key, parsed.model)  # 403 naming the model, for a key limited to others
            route = call.route = self.settings.routes.get(parsed.model)
            if route is None:
                raise self._unknown_model(parsed.model)
            if key is not None and key.limited:  # 429 over its rate limits or budget
                call.admission = await self.limiter.admit(key, parsed.data)
            attempt = await self.upstreams.dispatch(parsed, route, call.span, call)
        except GatewayError as exc:  # a ProxyError, or e.g. a body over llm.max_body_bytes (413)
            if isinstance(exc, ProxyError) and exc.status >= 500:
                logger.warning("LLM call failed with %d: %s", exc.status, exc.message)
            if call.admission is not None:
                call.admission.add_headers(exc)
            call.fail(exc)
            raise
        except ClientDisconnect:
            call.fail(InvalidRequestError("client disconnected", status=499, error_type=CLIENT_DISCONNECTED))
            return Response(status_code=499)
        except Exception as exc:
            error = _internal_error(exc)
            call.fail(error)
            raise error from exc
        call.attempt = attempt
        outcome = attempt.outcome
        if isinstance(outcome, Completed):  # the upstream's bytes go to the client unchanged, then the call is recorded
            response: Response = RecordingResponse(outcome, call)
        else:
            response = call.streamed(outcome)
        return response if call.admission is None else call.admission.with_headers(response)

    async def complete(
        self,
        body: Mapping[str, Any],
        *,
        attributes: Mapping[str, Any] = _NO_ATTRIBUTES,
        links: Sequence[tuple[str, str]] = (),
        timeout_s: float | None = None,
    ) -> Completion:
        """One non-streaming chat completion for a caller in this process. ``body`` is a chat-completions
        body whose ``model`` is a route; ``attributes`` go on the call's top span, which starts a new trace
        linked to ``links`` (``(trace_id_hex, span_id_hex)`` pairs); ``timeout_s`` bounds the whole call
        (the route's ``timeout_s`` when that is smaller). A 2xx JSON object answer is returned; anything
        else raises a ProxyError: 404 ``model_not_found``, the upstream's own 4xx status and message, 502
        when every attempt failed (``retry_after_s`` set after a final 429) or the answer is not a JSON
        object, 504 on timeout."""
        started = time.perf_counter()
        if timeout_s is not None and not timeout_s > 0:
            raise InvalidRequestError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}.")
        call = CallRecord(self.spans.start_internal(CHAT, attributes, span_links(links)), started)
        try:
            try:
                raw = orjson.dumps(body if isinstance(body, dict) else dict(body))
            except TypeError as exc:  # orjson.JSONEncodeError
                raise InvalidRequestError(f"The request body is not JSON: {exc}.", code="invalid_json") from None
            parsed = call.parsed = ParsedCall(CHAT, raw, self.renderer)
            if parsed.stream:
                raise InvalidRequestError("'stream' must be false: complete() returns the whole answer.")
            route = call.route = self.settings.routes.get(parsed.model)
            if route is None:
                raise self._unknown_model(parsed.model)
            attempt = await self.upstreams.dispatch(parsed, route, call.span, call, timeout_s)
        except ProxyError as exc:
            if exc.status >= 500:
                logger.warning("In-process LLM call failed with %d: %s", exc.status, exc.message)
            call.fail(exc)
            _traced(exc, call)
            raise
        except GatewayError as exc:  # a collaborator's own error, as the proxy's
            error = from_gateway_error(exc)
            call.fail(error)
            raise _traced(error, call) from exc
        except asyncio.CancelledError:
            call.fail(ProxyError("the caller cancelled the call", status=499, error_type=CANCELLED))
            raise
        except Exception as exc:
            error = _internal_error(exc)
            call.fail(error)
            raise error from exc
        call.attempt = attempt
        answer = attempt.outcome
        assert isinstance(answer, Completed)  # a call that does not stream gets a whole answer
        target = attempt.target
        if answer.status >= 300:  # a 4xx about the request itself (the others were failed attempts)
            call.answered(answer)
            raise _traced(
                InvalidRequestError(
                    f"Route {route.name!r}: {target.label} refused the request with HTTP {answer.status}: "
                    f"{error_message(answer.body)}",
                    status=answer.status,
                    code=f"upstream_{answer.status}",
                    error_type=str(answer.status),
                ),
                call,
            )
        data = answer.data
        assert data is not None  # a 2xx is a JSON object (Upstreams refuses any other as a failed attempt)
        summary = call.answered(answer, data) or AnswerSummary()
        context = call.span.get_span_context()
        return Completion(
            data=data,
            text=message_text(data),
            response_model=summary.response_model,
            target=target.label,
            input_tokens=summary.input_tokens,
            output_tokens=summary.output_tokens,
            cost_usd=call.cost_usd,
            trace_id=format(context.trace_id, "032x"),
            span_id=format(context.span_id, "016x"),
            attempts=call.attempts,
            latency_s=time.perf_counter() - started,
        )

    def _unknown_model(self, model: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"The model {model!r} does not exist on this gateway; "
            f"its routes are: {', '.join(self.settings.routes) or '(none configured)'}.",
            status=404,
            code="model_not_found",
        )


def _traced(error: ProxyError, call: CallRecord) -> ProxyError:
    """``error`` with the failed in-process call's trace id and attempt count (a judge records them)."""
    error.trace_id = format(call.span.get_span_context().trace_id, "032x")
    error.attempts = call.attempts
    return error


def _internal_error(exc: Exception) -> ProxyError:
    """An unexpected error of ours, logged with its traceback; the caller gets a 500 pointing to the log."""
    logger.exception("Unexpected error in the LLM proxy", exc_info=exc)
    return ProxyError(
        f"Internal error in the LLM proxy ({type(exc).__name__}); see the gateway log.",
        code="internal_error",
        error_type=type(exc).__name__,
    )
