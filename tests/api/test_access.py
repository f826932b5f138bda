"""Keys and scopes on every route of the table (issue 13, items 1, 2 and 7): with ``auth.keys`` set, every route
but /ping, /health and /version needs a valid key (401 in the route family's shape without one), /metrics
follows ``auth.public_metrics``, and ``auth.open_routes`` leaves a scope open on purpose. Table-driven: a route
added to the table is checked here without a line of its own, and one added without a scope fails.

Every route x (no key, a key without its scope, a key holding it, a revoked key, an expired key), with keys
made through /api/keys (the expired one written to the store directly: the API refuses a past expiry); no
answer, log line or stored trace ever holds one of the keys."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from gateway.api.routing import ApiRoute
from gateway.app import GatewayApp
from gateway.llm.routes_config import SCOPES
from tests.api.full_gateway import full_gateway
from tests.packages import PackageCache

KEY = "gw-test-access-key"
OPEN_TO_ALL = {("GET", "/ping"), ("GET", "/health"), ("GET", "/version")}
_PATH_VALUES = {
    "{version}": "1", "{trace_id}": "0" * 32, "{index}": "0", "{id}": "0" * 32, "{ref}": "iris@prod", "{key}": "nokey",
}  # fmt: skip


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: _PATH_VALUES.get(m.group(0), "qa"), path)


def _requests(table: list[ApiRoute]) -> list[tuple[str, str, ApiRoute]]:
    return [(method, _concrete(route.path), route) for route in table for method in route.methods]


@pytest.fixture(scope="module")
def served_app(tmp_path_factory: pytest.TempPathFactory, packages: PackageCache) -> Iterator[tuple[GatewayApp, str]]:
    auth = {"keys": [hashlib.sha256(KEY.encode()).hexdigest()], "public_metrics": False}
    with full_gateway(tmp_path_factory.mktemp("access"), packages, auth) as (app, base_url):
        yield app, base_url


@pytest.fixture(scope="module")
def gateway(served_app: tuple[GatewayApp, str]) -> tuple[list[ApiRoute], str]:
    app, base_url = served_app
    return list(app.route_table), base_url


@dataclass
class StoredKeys:
    """Keys made for the table test: per scope, one holding only it and one holding every other scope."""

    only: dict[str, str]
    all_but: dict[str, str]
    revoked: str
    expired: str

    def secrets(self) -> list[str]:
        return [KEY, *self.only.values(), *self.all_but.values(), self.revoked, self.expired]


@pytest.fixture(scope="module")
def stored_keys(served_app: tuple[GatewayApp, str]) -> StoredKeys:
    from gateway.key_admin import new_secret

    app, base_url = served_app
    with httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as client:

        def create(name: str, scopes: list[str]) -> str:
            answer = client.post("/api/keys", json={"name": name, "scopes": scopes})
            assert answer.status_code == 201, answer.text
            secret: str = answer.json()["key"]
            return secret

        # As a key made with an expiry looks once it passed; the gateway reads it with the next key write below.
        expired, digest, prefix = new_secret()
        app.state.key_store.create("00000000e0e0", "expired", digest, prefix, list(SCOPES), expires_at=1_000)
        only = {scope: create(f"only-{scope}", [scope]) for scope in SCOPES}
        all_but = {scope: create(f"all-but-{scope}", [s for s in SCOPES if s != scope]) for scope in SCOPES}
        revoked = create("revoked", list(SCOPES))
        assert client.post("/api/keys/revoked/revoke").json()["state"] == "revoked"
        assert client.get("/api/keys/expired").json()["state"] == "expired"
    return StoredKeys(only, all_but, revoked, expired)


def _call(client: httpx.Client, method: str, path: str, secret: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return client.request(method, path, headers=headers, json={} if method in ("POST", "PUT") else None)


def _refused(response: httpx.Response, route: ApiRoute, status: int, *words: str) -> None:
    """``response`` is ``status`` in the route family's shape, its message naming ``words``."""
    assert response.status_code == status, (route.path, response.text)
    body = response.json()
    message = body["error"]["message"] if route.family in ("openai", "anthropic") else body["message"]
    if route.family in ("openai", "anthropic"):  # the two share these error types
        expected = "authentication_error" if status == 401 else "permission_error"
        assert body["error"]["type"] == expected, body
    else:
        assert body["error_code"] == ("UNAUTHENTICATED" if status == 401 else "PERMISSION_DENIED"), body
    for word in words:
        assert word in message, (route.path, message)


def test_every_route_by_stored_key_state(
    gateway: tuple[list[ApiRoute], str], stored_keys: StoredKeys, caplog: pytest.LogCaptureFixture
) -> None:
    """The table x (no key, wrong scope, right scope, revoked, expired)."""
    table, base_url = gateway
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for method, path, route in _requests(table):
            scope = route.scope
            cases = {
                "none": None,
                "wrong": stored_keys.all_but[scope] if scope else stored_keys.only["invoke"],
                "right": stored_keys.only[scope] if scope else stored_keys.only["invoke"],
                "revoked": stored_keys.revoked,
                "expired": stored_keys.expired,
            }
            got = {case: _call(client, method, path, secret) for case, secret in cases.items()}
            answers.extend(f"{r.headers}\n{r.text}" for r in got.values())
            if scope is None:
                for case, response in got.items():
                    assert response.status_code not in (401, 403), (case, method, path, response.text)
                continue
            _refused(got["none"], route, 401)
            _refused(got["wrong"], route, 403, repr(scope), "all-but-")
            assert got["right"].status_code not in (401, 403), (method, path, got["right"].text)
            _refused(got["revoked"], route, 401, "revoked")
            _refused(got["expired"], route, 401, "expired")
        traces = client.get("/api/traces", params={"limit": 1000}, headers={"Authorization": f"Bearer {KEY}"}).text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in stored_keys.secrets():
        assert not any(secret in answer for answer in answers), "a key was echoed in an answer"
        assert secret not in logged and secret not in traces, "a key was logged or stored"


def test_a_key_limited_to_models_and_routes(served_app: tuple[GatewayApp, str]) -> None:
    _, base_url = served_app
    with httpx.Client(base_url=base_url, timeout=30) as client:
        admin = {"Authorization": f"Bearer {KEY}"}
        made = client.post(
            "/api/keys", headers=admin,
            json={"name": "chat-only", "scopes": ["llm"], "models": ["gpt-4o-mini"],
                  "routes": ["/v1/chat/completions", "/v1/models"]},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        headers = {"Authorization": f"Bearer {made.json()['key']}"}
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        assert (
            client.post("/v1/chat/completions", headers=headers, json={"model": "gpt-4o-mini", **chat}).status_code
            == 200
        )
        other = client.post("/v1/chat/completions", headers=headers, json={"model": "embed", **chat})
        assert other.status_code == 403 and "'embed'" in other.json()["error"]["message"], other.text
        path = client.post("/v1/embeddings", headers=headers, json={"model": "gpt-4o-mini", "input": "x"})
        assert path.status_code == 403 and "/v1/embeddings" in path.json()["error"]["message"], path.text
        assert [m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]] == ["gpt-4o-mini"]
        unknown_route = client.post(
            "/api/keys", headers=admin, json={"name": "x", "scopes": ["llm"], "routes": ["/nope"]}
        )
        assert unknown_route.status_code == 400 and "'/nope'" in unknown_route.json()["message"]


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
