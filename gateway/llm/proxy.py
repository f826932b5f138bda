"""LlmProxy: one OpenAI-compatible call from request to answer, with its spans and metrics.

Order per request: SERVER span (continuing ``traceparent``) -> gateway key -> body -> prompt link ->
route -> upstream attempts (``Upstreams.dispatch``) -> the answer as the upstream sent it, or a
stream relayed event by event. The call's ``CallRecord`` (gateway/llm/call_record.py) ends the
SERVER span with the call's summary when the answer (or the stream) is done: a whole answer is sent
first, and its spans and metrics are recorded after. A call that fails is recorded, then its error
is raised for the app's one error handler, which answers it in OpenAI's shape.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

import orjson
from opentelemetry.trace import TracerProvider
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.http import read_body
from gateway.llm import spans
from gateway.llm.auth import GatewayKeys
from gateway.llm.call_record import CLIENT_DISCONNECTED, CallRecord, RecordingResponse
from gateway.llm.errors import InvalidRequestError, ProxyError
from gateway.llm.prompt_link import PromptRenderer
from gateway.llm.request_body import Operation, ParsedCall
from gateway.llm.routes_config import AuthSettings, LlmSettings
from gateway.llm.upstream import Completed, Upstreams

logger = logging.getLogger("gateway.llm")


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
        self.keys.authenticate(request.headers.get("authorization"))
        return Response(self._models_body, media_type="application/json")

    async def handle(self, request: Request, operation: Operation) -> Response:
        started = time.perf_counter()
        headers = request.headers
        call = CallRecord(self.spans.start_server(operation, request.scope["path"], headers), started)
        try:
            call.key_id = self.keys.authenticate(headers.get("authorization"))
            raw = await read_body(request, self.settings.max_body_bytes)
            parsed = call.parsed = ParsedCall(operation, raw, self.renderer)
            route = call.route = self.settings.routes.get(parsed.model)
            if route is None:
                raise InvalidRequestError(
                    f"The model {parsed.model!r} does not exist on this gateway; "
                    f"its routes are: {', '.join(self.settings.routes) or '(none configured)'}.",
                    status=404,
                    code="model_not_found",
                )
            attempt = await self.upstreams.dispatch(parsed, route, call.span, call)
        except GatewayError as exc:  # a ProxyError, or e.g. a body over llm.max_body_bytes (413)
            if isinstance(exc, ProxyError) and exc.status >= 500:
                logger.warning("LLM call failed with %d: %s", exc.status, exc.message)
            call.fail(exc)
            raise
        except ClientDisconnect:
            call.fail(InvalidRequestError("client disconnected", status=499, error_type=CLIENT_DISCONNECTED))
            return Response(status_code=499)
        except Exception as exc:
            logger.exception("Unexpected error in the LLM proxy", exc_info=exc)
            error = ProxyError(
                f"Internal error in the LLM proxy ({type(exc).__name__}); see the gateway log.",
                code="internal_error",
                error_type=type(exc).__name__,
            )
            call.fail(error)
            raise error from exc
        call.attempt = attempt
        outcome = attempt.outcome
        if isinstance(outcome, Completed):  # the upstream's bytes go to the client unchanged, then the call is recorded
            return RecordingResponse(outcome, call)
        return call.streamed(outcome)
