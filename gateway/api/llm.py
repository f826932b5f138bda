"""The OpenAI-compatible endpoints: thin handlers over ``LlmProxy`` (gateway/llm/proxy.py); their routes are in
gateway/api/routes.py."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.llm.proxy import LlmProxy
from gateway.llm.request_body import CHAT, COMPLETIONS, EMBEDDINGS


def _proxy(request: Request) -> LlmProxy:
    proxy: LlmProxy = request.app.state.llm_proxy
    return proxy


async def chat_completions(request: Request) -> Response:
    return await _proxy(request).handle(request, CHAT)


async def completions(request: Request) -> Response:
    return await _proxy(request).handle(request, COMPLETIONS)


async def embeddings(request: Request) -> Response:
    return await _proxy(request).handle(request, EMBEDDINGS)


async def models(request: Request) -> Response:
    return _proxy(request).list_models(request)
