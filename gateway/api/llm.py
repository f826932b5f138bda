"""The LLM proxy's endpoints (OpenAI's API, and Anthropic's Messages API): thin handlers over ``LlmProxy``
(gateway/llm/proxy.py); their routes are in gateway/api/routes.py."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.llm.proxy import LlmProxy
from gateway.llm.request_body import (
    CANCEL_RESPONSE,
    CHAT,
    COMPLETIONS,
    COUNT_TOKENS,
    DELETE_RESPONSE,
    EMBEDDINGS,
    LIST_INPUT_ITEMS,
    MESSAGES,
    RESPONSES,
    RESPONSES_INPUT_TOKENS,
    RETRIEVE_RESPONSE,
)


def _proxy(request: Request) -> LlmProxy:
    proxy: LlmProxy = request.app.state.llm_proxy
    return proxy


async def chat_completions(request: Request) -> Response:
    return await _proxy(request).handle(request, CHAT)


async def completions(request: Request) -> Response:
    return await _proxy(request).handle(request, COMPLETIONS)


async def embeddings(request: Request) -> Response:
    return await _proxy(request).handle(request, EMBEDDINGS)


async def responses(request: Request) -> Response:
    return await _proxy(request).handle(request, RESPONSES)


async def responses_input_tokens(request: Request) -> Response:
    return await _proxy(request).handle(request, RESPONSES_INPUT_TOKENS)


async def retrieve_response(request: Request) -> Response:
    return await _proxy(request).handle(request, RETRIEVE_RESPONSE)


async def delete_response(request: Request) -> Response:
    return await _proxy(request).handle(request, DELETE_RESPONSE)


async def cancel_response(request: Request) -> Response:
    return await _proxy(request).handle(request, CANCEL_RESPONSE)


async def response_input_items(request: Request) -> Response:
    return await _proxy(request).handle(request, LIST_INPUT_ITEMS)


async def messages(request: Request) -> Response:
    return await _proxy(request).handle(request, MESSAGES)


async def count_tokens(request: Request) -> Response:
    return await _proxy(request).handle(request, COUNT_TOKENS)


async def models(request: Request) -> Response:
    return _proxy(request).list_models(request)
