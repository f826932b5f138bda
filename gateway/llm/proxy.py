"""LlmProxy: one proxied LLM call from request to answer, with its spans and metrics.

Order per request: SERVER span (continuing ``traceparent``) -> gateway key -> body -> prompt link ->
route (whose targets must speak the endpoint's API: OpenAI's, or Anthropic's Messages API) -> the key's model
list -> the key's rate limits and budget (gateway/limits/: 429, or the answer's ``x-ratelimit-*`` headers) ->
upstream attempts (``Upstreams.dispatch``) -> the answer as the upstream sent it, or a stream relayed event by
event. A Responses API call is pinned to the target that created it (gateway/llm/response_pins.py) before
its id reaches the client; its follow-ups (gateway/llm/followups.py) and ``previous_response_id`` go there.
The call's ``CallRecord`` (gateway/llm/call_record.py) ends the SERVER span with the call's summary when the
answer (or the stream) is done: a whole answer is sent first, and its spans and metrics are recorded after.
A call that fails is recorded, then its error is raised for the app's one error handler, which answers it in
the route's shape (OpenAI's; Anthropic's under /v1/messages).

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

from gateway.errors import GatewayError, Unauthenticated
from gateway.http import BodyLimit, read_body
from gateway.json_depth import DEFAULT_MAX_JSON_DEPTH
from gateway.keys import GatewayKey, GatewayKeys, check_model
from gateway.limit_settings import LimitsSettings
from gateway.limits.limiter import KeyLimiter
from gateway.llm import spans
from gateway.llm.answer import AnswerSummary
from gateway.llm.call_record import CLIENT_DISCONNECTED, CallRecord, RecordingResponse
from gateway.llm.completion import Completion, message_text, span_links
from gateway.llm.errors import InvalidRequestError, ProxyError, from_gateway_error
from gateway.llm.followups import (
    FOLLOW_UPS,
    FollowUpCall,
    check_response_id,
    pinned_target,
    previous_response_target,
    unknown_response,
)
from gateway.llm.openai_responses import response_id_in
from gateway.llm.prompt_link import PromptRenderer
from gateway.llm.request_body import (
    CHAT,
    DELETE_RESPONSE,
    FORMAT_OTHER,
    FORMAT_RESPONSES,
    RESPONSES,
    Operation,
    ParsedCall,
)
from gateway.llm.response_pins import Pin, ResponsePins
from gateway.llm.routes_config import API_ANTHROPIC, AuthSettings, LlmSettings, Route
from gateway.llm.upstream import Attempt, Completed, Upstreams, error_message

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
        self.body_limit = BodyLimit("llm.max_body_bytes", settings.max_body_bytes)
        self.max_json_depth = DEFAULT_MAX_JSON_DEPTH  # http.max_json_depth: the app sets its own
        # The app hands its keys (kept current from the store); from settings, the bootstrap keys only.
        self.keys = auth if isinstance(auth, GatewayKeys) else GatewayKeys(auth)
        # A key's rate limits and budget (gateway/limits/): this process's counts; the app sets its own (on Redis
        # when redis_url is set).
        self.limiter = KeyLimiter(LimitsSettings())
        self.renderer = renderer
        # Response id -> the target that created it: in memory unless the app sets a shared one before start().
        self.pins: ResponsePins = ResponsePins()
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
        await self.pins.close()

    def list_models(self, request: Request) -> Response:
        """The routes, as OpenAI's model list (only those a key limited to some may use); ``x-api-key`` is taken
        too: Anthropic's SDK lists models with it."""
        headers = request.headers
        api_key = headers.get("x-api-key")
        authorization = headers.get("authorization") or (f"Bearer {api_key}" if api_key else None)
        key = self.keys.authorize_key("llm", authorization, request.scope["path"])
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
            if operation.format == FORMAT_OTHER and operation in FOLLOW_UPS:
                attempt = await self._follow_up(request, operation, call)
            else:
                attempt = await self._create(request, operation, call)
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

    async def _create(self, request: Request, operation: Operation, call: CallRecord) -> Attempt:
        """A call with a body naming its route (chat, completions, embeddings, responses, messages...)."""
        headers = request.headers
        key = self._authorize(request, operation)
        call.key_id = key.id if key is not None else None
        raw = await read_body(request, self.body_limit)
        parsed = call.parsed = ParsedCall(operation, raw, self.renderer, self.max_json_depth)
        check_model(key, parsed.model)  # 403 naming the model, for a key limited to others
        route = call.route = self.settings.routes.get(parsed.model)
        if route is None:
            raise self._unknown_model(parsed.model)
        if route.api != operation.api:
            raise self._wrong_api(route, operation)
        if parsed.previous_response_id is not None:  # the target that holds it, no fallback
            previous = parsed.previous_response_id
            pin = await self.pins.lookup(previous)
            if pin is None:
                raise unknown_response(previous)
            parsed.pinned = previous_response_target(pin, route, self.settings.routes, previous)
        if (key is not None and key.limited) or route.limited:  # 429 over the key's or the route's limits
            call.admission = await self.limiter.admit(key, route, _limited_view(parsed))
        if operation.api == API_ANTHROPIC:
            beta = headers.get("anthropic-beta")
            if beta:
                parsed.extra_headers = {"anthropic-beta": beta}
        attempt = await self.upstreams.dispatch(parsed, route, call.span, call)
        if operation is RESPONSES:
            await self._pin(attempt, route)
        return attempt

    async def _follow_up(self, request: Request, operation: Operation, call: CallRecord) -> Attempt:
        """A call on a stored response, to the target that created it."""
        key = self._authorize(request, operation)
        call.key_id = key.id if key is not None else None
        response_id: str = request.path_params["response_id"]
        check_response_id(response_id)
        pin = await self.pins.lookup(response_id)
        if pin is None:
            raise unknown_response(response_id)
        route, target = pinned_target(pin, self.settings.routes, response_id)
        check_model(key, route.name)  # a key limited to other models reaches none of this route's responses
        query = request.scope.get("query_string", b"").decode("latin-1")
        parsed = call.parsed = FollowUpCall(operation, response_id, query, target)
        call.route = route
        attempt = await self.upstreams.dispatch(parsed, route, call.span, call)
        outcome = attempt.outcome
        if operation is DELETE_RESPONSE and isinstance(outcome, Completed) and outcome.status < 300:
            await self.pins.forget(response_id)
        return attempt

    async def _pin(self, attempt: Attempt, route: Route) -> None:
        """Remember which target created a response, before its id reaches the client."""
        outcome = attempt.outcome
        if isinstance(outcome, Completed):
            response_id = outcome.data.get("id") if outcome.data is not None else None
        else:
            response_id = response_id_in(outcome.first_events)
        if isinstance(response_id, str) and response_id:
            await self.pins.remember(response_id, Pin(route.name, attempt.target.label))

    def _authorize(self, request: Request, operation: Operation) -> GatewayKey | None:
        """The request's gateway key (when keys are on): ``Authorization: Bearer``, or for Anthropic's API also
        ``x-api-key`` (what its SDKs may send). A key limited to some routes is checked against the route's
        path in the table (a follow-up's is ``/v1/responses/{response_id}``, not the id)."""
        headers = request.headers
        authorization = headers.get("authorization")
        route = getattr(request.scope.get("route"), "entry", None)  # the table's entry (gateway/api/routing.py)
        path: str = route.path if route is not None else request.scope["path"]
        if operation.api != API_ANTHROPIC:
            return self.keys.authorize_key("llm", authorization, path)
        if authorization is None and headers.get("x-api-key"):
            authorization = "Bearer " + headers["x-api-key"]
        try:
            return self.keys.authorize_key("llm", authorization, path)
        except Unauthenticated as exc:
            if exc.reason != "missing_api_key":
                raise
            raise Unauthenticated(
                "Missing gateway key: send the header 'x-api-key: <key>' (or 'Authorization: Bearer <key>').",
                reason="missing_api_key",
            ) from None

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
            parsed = call.parsed = ParsedCall(CHAT, raw, self.renderer, self.max_json_depth)
            if parsed.stream:
                raise InvalidRequestError("'stream' must be false: complete() returns the whole answer.")
            route = call.route = self.settings.routes.get(parsed.model)
            if route is None:
                raise self._unknown_model(parsed.model)
            if route.api != CHAT.api:
                raise self._wrong_api(route, CHAT)
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

    def _wrong_api(self, route: Route, operation: Operation) -> InvalidRequestError:
        if operation.api == API_ANTHROPIC:
            others = [name for name, r in self.settings.routes.items() if r.api == API_ANTHROPIC]
            return InvalidRequestError(
                f"Route {route.name!r} speaks the OpenAI API; {operation.span_name} needs a route whose targets "
                f"have provider: anthropic (here: {', '.join(others) or 'none configured'}).",
                code="wrong_api",
            )
        return InvalidRequestError(
            f"Route {route.name!r} speaks the Anthropic Messages API (provider anthropic): call it with "
            "POST /v1/messages.",
            code="wrong_api",
        )

    def _unknown_model(self, model: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"The model {model!r} does not exist on this gateway; "
            f"its routes are: {', '.join(self.settings.routes) or '(none configured)'}.",
            status=404,
            code="model_not_found",
        )


def _limited_view(parsed: ParsedCall) -> Mapping[str, Any]:
    """What the key's limiter reads of a body (``max_tokens``, ``max_completion_tokens``, ``n``): the Responses
    API names its bound ``max_output_tokens``."""
    data = parsed.data
    if parsed.operation.format == FORMAT_RESPONSES and "max_output_tokens" in data:
        return {"max_tokens": data["max_output_tokens"]}
    return data


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
