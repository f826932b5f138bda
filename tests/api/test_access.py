"""Keys and scopes on every route of the table (issue 13, items 2 and 7): with ``auth.keys`` set, every route
but /ping, /health and /version needs a valid key (401 in the route family's shape without one), /metrics
follows ``auth.public_metrics``, and ``auth.open_routes`` leaves a scope open on purpose. Table-driven: a route
added to the table is checked here without a line of its own, and one added without a scope fails."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest

from gateway.api.routing import ApiRoute
from gateway.llm.routes_config import SCOPES
from tests.api.full_gateway import full_gateway
from tests.packages import PackageCache

KEY = "gw-test-access-key"
OPEN_TO_ALL = {("GET", "/ping"), ("GET", "/health"), ("GET", "/version")}
_PATH_VALUES = {"{version}": "1", "{trace_id}": "0" * 32, "{index}": "0", "{id}": "0" * 32, "{ref}": "iris@prod"}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: _PATH_VALUES.get(m.group(0), "qa"), path)


def _requests(table: list[ApiRoute]) -> list[tuple[str, str, ApiRoute]]:
    return [(method, _concrete(route.path), route) for route in table for method in route.methods]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, packages: PackageCache) -> Iterator[tuple[list[ApiRoute], str]]:
    auth = {"keys": [hashlib.sha256(KEY.encode()).hexdigest()], "public_metrics": False}
    with full_gateway(tmp_path_factory.mktemp("access"), packages, auth) as (app, base_url):
        yield list(app.route_table), base_url


def test_every_route_declares_a_known_scope_or_is_open_to_all(gateway: tuple[list[ApiRoute], str]) -> None:
    table, _ = gateway
    for route in table:
        for method in route.methods:
            if (method, route.path) in OPEN_TO_ALL:
                assert route.scope is None, (method, route.path)
            else:
                assert route.scope in SCOPES, f"{method} {route.path} has no (known) scope: {route.scope!r}"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [(None, "missing_api_key"), ("Bearer wrong-key", "invalid_api_key"), ("Basic abc", "invalid_api_key")],
)
def test_without_a_valid_key_every_scoped_route_is_a_401_in_its_family_shape(
    gateway: tuple[list[ApiRoute], str], authorization: str | None, code: str
) -> None:
    table, base_url = gateway
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
        for method, path, route in _requests(table):
            response = client.request(method, path, json={} if method in ("POST", "PUT") else None)
            if route.scope is None:
                assert response.status_code not in (401, 403), (method, path, response.text)
                continue
            assert response.status_code == 401, (method, path, response.text)
            body = response.json()
            if route.family == "openai":
                assert body["error"]["type"] == "authentication_error" and body["error"]["code"] == code
            elif route.family == "anthropic":
                assert body["type"] == "error" and body["error"]["type"] == "authentication_error", (path, body)
            else:
                assert body["error_code"] == "UNAUTHENTICATED", (method, path, body)


def test_with_the_key_no_route_answers_401_or_403(gateway: tuple[list[ApiRoute], str]) -> None:
    table, base_url = gateway
    with httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for method, path, _ in _requests(table):
            response = client.request(method, path, json={} if method in ("POST", "PUT") else None)
            assert response.status_code not in (401, 403), (method, path, response.text)


def test_anonymous_writes_change_nothing(gateway: tuple[list[ApiRoute], str]) -> None:
    """Once, an anonymous DELETE of the alias serving /invocations answered 200 and took scoring down."""
    _, base_url = gateway
    authed = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.delete("/api/registry/models/iris/aliases/prod").status_code == 401
        assert client.post("/api/prompts/qa/versions", json={"template": "pwned"}).status_code == 401
        assert client.get("/api/traces", params={"limit": 1}).status_code == 401
        assert client.post("/invocations", headers=authed, json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
        assert client.get("/api/prompts/qa@production", headers=authed).json()["template"] == "Answer {{ question }}"
        assert client.get("/health").status_code == 200


def test_open_routes_and_public_metrics(tmp_path_factory: pytest.TempPathFactory, packages: PackageCache) -> None:
    auth = {"keys": [hashlib.sha256(KEY.encode()).hexdigest()], "open_routes": ["invoke"]}  # public_metrics: default
    with (
        full_gateway(tmp_path_factory.mktemp("open"), packages, auth) as (_, base_url),
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        assert client.post("/invocations", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
        assert client.post("/models/iris@prod/invocations", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.get("/api/registry/models").status_code == 401
        assert client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}).status_code == 401
