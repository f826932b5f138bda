"""The floor of an ASGI passthrough to an OpenAI-compatible upstream: raw ASGI + one aiohttp session.

What no Python proxy on uvicorn goes below, measured beside the gateway in the same paced setup
(``loadtest/llm_paced.py --floor``): no Starlette, no routing, no validation, no spans, no metrics.
Run under ``uvicorn --loop uvloop --http httptools``:

- ``POST /v1/...``: the body goes unchanged to ``$BARE_LLM_UPSTREAM`` + the path after ``/v1``
  with one shared ``aiohttp.ClientSession``; an SSE answer is relayed chunk by chunk, any other
  answer is read whole and sent in one piece with the upstream's status and content type.
- ``GET /ping``: readiness.

``$BARE_LLM_API_KEY`` (optional) is sent upstream as the bearer key. Imports nothing from ``gateway``.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

UPSTREAM_ENV = "BARE_LLM_UPSTREAM"
API_KEY_ENV = "BARE_LLM_API_KEY"

_state: dict[str, Any] = {}


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            headers = {"content-type": "application/json"}
            if key := os.environ.get(API_KEY_ENV):
                headers["authorization"] = f"Bearer {key}"
            _state["headers"] = headers
            _state["base"] = os.environ[UPSTREAM_ENV].rstrip("/")
            _state["session"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512),
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept", "Accept-Encoding"),
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _state["session"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path: str = scope["path"]
    if scope["method"] == "GET" and path == "/ping":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"\n"})
        return
    body = await _read_body(receive)
    session: aiohttp.ClientSession = _state["session"]
    async with session.post(
        _state["base"] + path.removeprefix("/v1"), data=body, headers=_state["headers"], allow_redirects=False
    ) as answer:
        media_type = answer.headers.get("content-type", "application/json")
        headers = [(b"content-type", media_type.encode("latin-1"))]
        if media_type.startswith("text/event-stream"):
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            async for chunk in answer.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        content = await answer.read()
    headers.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
