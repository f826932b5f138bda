"""The route table (gateway/api/routes.py, prompts/routes.py) is the one place a request enters: the hot
routes are answered without entering Starlette's router, the router and the fast dispatcher agree on the
route, and the OpenAPI document lists exactly the table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.openapi import openapi_document
from gateway.api.routes import app_table
from gateway.api.routing import ApiRoute, HotRoutes, TableRoute, build_routing, route_family
from gateway.app import GatewayApp
from judges.evaluation_routes import EVALUATION_ROUTES
from judges.routes import JUDGE_ROUTES
from prompts.routes import PROMPT_ROUTES
from tests.api.full_gateway import full_gateway
from tests.packages import IRIS_COLUMNS, PackageCache

TABLE = app_table(PROMPT_ROUTES, JUDGE_ROUTES, EVALUATION_ROUTES)
IRIS = orjson.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}})
CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]})
# One request per hot route, by (method, table path): answered 200 by the full gateway.
HOT_REQUESTS: dict[tuple[str, str], tuple[str, bytes]] = {
    ("POST", "/invocations"): ("/invocations", IRIS),
    ("POST", "/models/{ref}/invocations"): ("/models/iris@prod/invocations", IRIS),
    ("POST", "/models/{name}/versions/{version}/invocations"): ("/models/iris/versions/1/invocations", IRIS),
    ("POST", "/v1/chat/completions"): ("/v1/chat/completions", CHAT),
    ("POST", "/v1/completions"): ("/v1/completions", b'{"model": "gpt-4o-mini", "prompt": "Say hello"}'),
    ("POST", "/v1/embeddings"): ("/v1/embeddings", b'{"model": "embed", "input": "hello"}'),
    ("POST", "/v1/responses"): ("/v1/responses", b'{"model": "gpt-4o-mini", "input": "Say hello"}'),
    ("POST", "/v1/messages"): (
        "/v1/messages",
        b'{"model": "claude", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello"}]}',
    ),
    ("GET", "/api/prompts/{name}"): ("/api/prompts/qa@production", b""),
}
# Requests near the hot ones that are not for a hot route: Starlette's router answers them.
ROUTED_REQUESTS = [
    ("GET", "/api/prompts/qa/versions", b""),
    ("GET", "/api/prompts", b""),
    ("POST", "/api/prompts/qa/render", b'{"variables": {"question": "why"}}'),
    ("GET", "/invocations", b""),
    ("POST", "/models/iris@prod/invocations/more", IRIS),
    ("GET", "/v1/models", b""),
]


class RouterEntries:
    """Counts the requests that enter Starlette's router: wraps the router's own middleware stack."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def gateway(packages: PackageCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RouterEntries]]:
    with full_gateway(tmp_path_factory.mktemp("routes"), packages) as (app, base_url):
        entries = RouterEntries(app.router.middleware_stack)
        app.router.middleware_stack = entries
        yield base_url, entries


def test_every_hot_route_has_a_request_here() -> None:
    assert {(m, e.path) for e in TABLE if e.hot for m in e.methods} == set(HOT_REQUESTS)


@pytest.mark.parametrize("hot", sorted(HOT_REQUESTS), ids=" ".join)
def test_hot_routes_are_answered_without_entering_the_router(
    gateway: tuple[str, RouterEntries], hot: tuple[str, str]
) -> None:
    base_url, entries = gateway
    path, body = HOT_REQUESTS[hot]
    entries.paths.clear()
    answer = httpx.request(hot[0], base_url + path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert entries.paths == []


@pytest.mark.parametrize("request_", ROUTED_REQUESTS, ids=lambda r: f"{r[0]} {r[1]}")
def test_other_requests_enter_the_router(gateway: tuple[str, RouterEntries], request_: tuple[str, str, bytes]) -> None:
    base_url, entries = gateway
    method, path, body = request_
    entries.paths.clear()
    answer = httpx.request(method, base_url + path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code < 500, answer.text
    assert entries.paths == [path]


def _family(path: str) -> str:
    """Anthropic's error shape under /v1/messages (its SDKs), OpenAI's under the rest of /v1, else MLflow's."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    return "openai" if path.startswith("/v1/") else "mlflow"


def _router_match(routes: list[BaseRoute], scope: dict[str, Any]) -> TableRoute | None:
    """The route Starlette's router hands ``scope`` to: its first full match (inside a Mount, likewise)."""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            if isinstance(route, Mount):
                return _router_match(route.routes, {**scope, **child})
            assert isinstance(route, TableRoute)
            return route
    return None


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_the_fast_dispatcher_and_the_router_pick_the_same_route() -> None:
    routes, hot_routes = build_routing(TABLE)
    for (method, _), (path, _) in HOT_REQUESTS.items():
        scope = _scope(method, path)
        hot = hot_routes.match(scope)
        assert hot is not None, path
        routed = _router_match(routes, _scope(method, path))
        assert routed is hot.route and scope["route"] is routed and scope["endpoint"] is routed.endpoint
        assert route_family(scope) == _family(path)
    for method, path, _ in ROUTED_REQUESTS:
        assert hot_routes.match(_scope(method, path)) is None, path


def test_path_parameters_are_what_the_router_gives() -> None:
    routes, hot_routes = build_routing(TABLE)
    for method, path, params in [
        ("POST", "/models/iris@prod/invocations", {"ref": "iris@prod"}),
        ("POST", "/models/iris/versions/7/invocations", {"name": "iris", "version": "7"}),
        ("GET", "/api/prompts/qa@production", {"name": "qa@production"}),
        ("POST", "/invocations", {}),
    ]:
        scope = _scope(method, path)
        assert hot_routes.match(scope) is not None
        assert scope["path_params"] == params


def test_a_route_left_out_of_the_hot_set_is_not_matched() -> None:
    routes, _ = build_routing(TABLE)
    cold = HotRoutes([])
    assert cold.match(_scope("POST", "/invocations")) is None
    assert _router_match(routes, _scope("POST", "/invocations")) is not None


def test_routes_are_declared_once_with_scope_and_family() -> None:
    seen = set()
    scopes = {"invoke", "llm", "prompts:read", "prompts:write", "registry:read", "registry:write", "traces:read",
              "evaluations", "admin", "metrics", None}  # fmt: skip
    for entry in TABLE:
        for method in entry.methods:
            assert (method, entry.path) not in seen, (method, entry.path)
            seen.add((method, entry.path))
        assert entry.scope in scopes, entry
        assert entry.family == _family(entry.path), entry.path
    assert {e.path for e in TABLE if e.scope is None} == {"/ping", "/health", "/version"}


# -- OpenAPI ----------------------------------------------------------------------------------------------


def _operations(table: tuple[ApiRoute, ...]) -> set[tuple[str, str]]:
    return {(m.lower(), e.path) for e in table for m in e.methods}


def test_openapi_lists_exactly_the_table_and_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import OpenAPIV31SpecValidator

    document = openapi_document(TABLE)
    listed = {(method, path) for path, item in document["paths"].items() for method in item}
    assert listed == _operations(TABLE)
    for must in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/openapi.json",
                 "/v1/responses", "/v1/responses/{response_id}", "/v1/messages", "/v1/messages/count_tokens",
                 "/api/registry/models", "/api/prompts/{name}", "/api/traces", "/metrics"]:  # fmt: skip
        assert must in document["paths"], must
    OpenAPIV31SpecValidator(document).validate()


def test_openapi_error_bodies_follow_the_route_family() -> None:
    document = openapi_document(TABLE)
    for entry in TABLE:
        for method in entry.methods:
            responses = document["paths"][entry.path][method.lower()]["responses"]
            errors = {int(code): r for code, r in responses.items() if int(code) >= 400}
            assert errors, (method, entry.path)
            name = {"openai": "OpenAIError", "anthropic": "AnthropicError"}.get(entry.family, "MlflowError")
            for code, response in errors.items():
                schema = response["content"]["application/json"]["schema"]
                if code in entry.error_bodies:  # a body of its own: /health's 503 is a health report
                    assert schema == dict(entry.error_bodies[code]["application/json"]["schema"])
                else:
                    assert schema == {"$ref": f"#/components/schemas/{name}"}, (method, entry.path, code)
    health = document["paths"]["/health"]["get"]["responses"]
    assert health["503"]["content"] == health["200"]["content"]
    schemas = document["components"]["schemas"]
    assert schemas["MlflowError"]["required"] == ["error_code", "message"]
    assert schemas["OpenAIError"]["properties"]["error"]["required"] == ["message", "type", "code"]
    assert schemas["AnthropicError"]["properties"]["error"]["required"] == ["type", "message"]


def test_the_app_serves_the_generated_document(gateway: tuple[str, RouterEntries]) -> None:
    base_url, _ = gateway
    assert httpx.get(base_url + "/openapi.json").json() == orjson.loads(orjson.dumps(openapi_document(TABLE)))


def test_gateway_app_takes_a_table() -> None:
    app = GatewayApp(TABLE[:1], lifespan=None)  # type: ignore[arg-type]
    assert [r.path for r in app.routes] == ["/invocations"] and app.hot_routes.paths() == [("POST", "/invocations")]
