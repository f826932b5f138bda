"""The LLM bench's baseline: the least an ASGI passthrough to an OpenAI-compatible upstream can do.

A bare Starlette app, run by the bench under ``uvicorn --loop uvloop --http httptools``:

- ``POST /v1/chat/completions`` (also ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses``): the request
  body is forwarded unchanged to ``$BARE_LLM_UPSTREAM`` (e.g. ``http://127.0.0.1:8001/v1``)
  with one shared ``httpx.AsyncClient``; the answer comes back with the upstream's status and
  content type. An SSE answer (``text/event-stream``) is streamed through chunk by chunk as it
  arrives; any other answer is read whole and sent in one piece.
- ``GET /ping``: readiness.

No validation, no routing, no retries, no spans, no metrics, no access log: it is what the
gateway's throughput is compared against, not a proxy to use. ``$BARE_LLM_API_KEY`` (optional)
is sent upstream as the bearer key. Imports nothing from ``gateway``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM_ENV = "BARE_LLM_UPSTREAM"
API_KEY_ENV = "BARE_LLM_API_KEY"

_client: httpx.AsyncClient | None = None
_headers: dict[str, str] = {"content-type": "application/json"}


def _upstream() -> httpx.AsyncClient:
    assert _client is not None, "the lifespan creates the client before the first request"
    return _client


async def forward(request: Request) -> Response:
    body = await request.body()
    upstream = _upstream()
    sent = upstream.build_request("POST", request.url.path.removeprefix("/v1"), content=body, headers=_headers)
    answer = await upstream.send(sent, stream=True)
    media_type = answer.headers.get("content-type", "application/json")
    if media_type.startswith("text/event-stream"):
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            media_type=media_type,
            background=BackgroundTask(answer.aclose),
        )
    try:
        content = await answer.aread()
    finally:
        await answer.aclose()
    return Response(content, status_code=answer.status_code, media_type=media_type)


async def ping(request: Request) -> Response:
    return Response(b"\n", media_type="application/json")


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    global _client
    if key := os.environ.get(API_KEY_ENV):
        _headers["authorization"] = f"Bearer {key}"
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    _client = httpx.AsyncClient(
        base_url=os.environ[UPSTREAM_ENV].rstrip("/"), limits=limits, timeout=httpx.Timeout(60.0)
    )
    try:
        yield
    finally:
        await _client.aclose()
        _client = None


app = Starlette(
    routes=[
        Route("/v1/chat/completions", forward, methods=["POST"]),
        Route("/v1/completions", forward, methods=["POST"]),
        Route("/v1/embeddings", forward, methods=["POST"]),
        Route("/v1/responses", forward, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
    ],
    lifespan=_lifespan,
)
