"""The OpenAI-compatible endpoints: thin handlers over ``LlmProxy`` (gateway/llm/proxy.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

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


_POST_ROUTES = {
    "/v1/chat/completions": Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    "/v1/completions": Route("/v1/completions", completions, methods=["POST"]),
    "/v1/embeddings": Route("/v1/embeddings", embeddings, methods=["POST"]),
}

routes = [*_POST_ROUTES.values(), Route("/v1/models", models, methods=["GET"])]


def match_post(scope: Scope) -> Route | None:
    """The route a POST to ``scope``'s path takes when it is a proxied call (``route``, ``endpoint`` and
    ``path_params`` set in ``scope`` as Starlette's router sets them); None for any other path.

    Lets ``gateway.app`` send these calls to their endpoint without the router and middleware layers:
    no other route of the app matches a POST to these paths, so the router would pick the same one.
    """
    route = _POST_ROUTES.get(scope["path"])
    if route is not None:
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
    return route
