"""Limits on every body (issue 13, item 6), table-driven over the route table and the OpenAPI document.

A route that reads a body lists a 413 in the OpenAPI document naming the setting that bounds it
(``http.max_json_body_bytes`` for the admin APIs, ``http.max_evaluation_body_bytes``, ``serving.max_body_bytes``,
``llm.max_body_bytes``); every route x method is sent a body over that limit, declared (refused before it is
read) and chunked (cut off once it passes the limit): a 413 naming the setting and its value exactly where the
document says so, and no route reads a body the document does not bound. A body nested past
``http.max_json_depth`` is a 400 naming it on every route that reads one, /invocations and /v1 included. Then
the same errors with a gateway key and the upstream's key inside the bodies: no answer, log line or span holds
either."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.api.routing import ApiRoute
from gateway.app import GatewayApp
from tests.api.full_gateway import UPSTREAM_KEY, full_gateway
from tests.packages import PackageCache

KEY = "gw-test-body-limits-key"
DEPTH = 16
LIMITS = {
    "http.max_json_body_bytes": 4096,
    "http.max_evaluation_body_bytes": 20_000,
    "serving.max_body_bytes": 8192,
    "llm.max_body_bytes": 12_288,
}
_PATH_VALUES = {"{version}": "1", "{ref}": "iris@prod", "{name}": "iris", "{trace_id}": "0" * 32}
_SETTING = re.compile(r"\b(?:http|serving|llm)\.max_\w+_bytes\b")


def _concrete(path: str) -> str:
    """Path values that exist (the model iris, the prompt qa), so a route gets as far as reading the body."""
    values = {**_PATH_VALUES, "{name}": "qa"} if path.startswith("/api/prompts/") else _PATH_VALUES
    return re.sub(r"\{[^}]+\}", lambda m: values.get(m.group(0), "nosuch"), path)


@dataclass
class Served:
    app: GatewayApp
    base_url: str
    exporter: InMemorySpanExporter

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        return httpx.Client(base_url=self.base_url, timeout=30, headers=headers)

    def requests(self) -> list[tuple[str, str, ApiRoute, str | None]]:
        """Every (method, path, route, the setting bounding its body or None), GETs only when they read a
        body (MLflow's, without a query string)."""
        paths = orjson.loads(self.app.state.openapi_json)["paths"]
        found = []
        for route in self.app.route_table:
            for method in route.methods:
                too_large = paths[route.path][method.lower()]["responses"].get("413", {}).get("description", "")
                setting = _SETTING.search(too_large)
                if method == "GET" and setting is None:
                    continue
                found.append((method, _concrete(route.path), route, setting.group(0) if setting else None))
        return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, packages: PackageCache) -> Iterator[Served]:
    more: dict[str, object] = {
        "http.max_json_body_bytes": LIMITS["http.max_json_body_bytes"],
        "http.max_evaluation_body_bytes": LIMITS["http.max_evaluation_body_bytes"],
        "serving.max_body_bytes": LIMITS["serving.max_body_bytes"],
        "http.max_json_depth": DEPTH,
    }
    auth = {"keys": [hashlib.sha256(KEY.encode()).hexdigest()]}
    llm_more = {"max_body_bytes": LIMITS["llm.max_body_bytes"]}
    root = tmp_path_factory.mktemp("limits")
    with full_gateway(root, packages, auth, more=more, llm_more=llm_more) as (app, base_url):
        provider: TracerProvider = app.state.tracer_provider
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        yield Served(app, base_url, exporter)


def _message(response: httpx.Response, route: ApiRoute) -> str:
    body = response.json()
    message: str = body["error"]["message"] if route.family in ("openai", "anthropic") else body["message"]
    return message


def _padded(size: int, filler: str = "x") -> bytes:
    """A JSON object of more than ``size`` bytes."""
    return orjson.dumps({"padding": filler * (size // len(filler) + 1)})


def _deep(levels: int, secret: str = "") -> bytes:
    """A JSON object nesting ``levels`` arrays and objects (itself included)."""
    return b'{"a": ' + b"[" * (levels - 1) + orjson.dumps(secret) + b"]" * (levels - 1) + b"}"


def _chunks(body: bytes, size: int = 1024) -> Iterator[bytes]:
    """The body as an iterator: httpx sends it chunked, without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_the_document_bounds_every_body_the_gateway_reads(served: Served) -> None:
    """The routes that read a body, by family: the admin APIs, evaluations, scoring and the LLM proxy."""
    bounded = {(method, route.path): setting for method, _, route, setting in served.requests() if setting}
    assert bounded[("POST", "/api/evaluations")] == "http.max_evaluation_body_bytes"
    assert bounded[("POST", "/invocations")] == "serving.max_body_bytes"
    assert bounded[("POST", "/v1/chat/completions")] == bounded[("POST", "/v1/messages")] == "llm.max_body_bytes"
    for method, path in [
        ("POST", "/api/registry/models"), ("PUT", "/api/registry/models/{name}/aliases/{alias}"),
        ("POST", "/api/prompts"), ("POST", "/api/prompts/{name}/versions"),
        ("POST", "/api/2.0/mlflow/registered-models/create"), ("DELETE", "/api/2.0/mlflow/registered-models/delete"),
        ("POST", "/api/judges"), ("POST", "/api/keys"), ("POST", "/api/keys/{key}/revoke"),
        ("POST", "/api/traces/{trace_id}/assessments"),
        ("POST", "/api/evaluations/{evaluation_id}/items/{item_index}/assessments"),
    ]:  # fmt: skip
        assert bounded[(method, path)] == "http.max_json_body_bytes", (method, path)


@pytest.mark.parametrize("how", ["declared", "chunked"])
def test_a_body_over_its_limit_is_a_413_naming_the_setting(served: Served, how: str) -> None:
    """Declared: refused from its Content-Length; chunked: cut off once it passes the limit. A route the
    document does not bound must not answer 413 (it does not read the body)."""
    wrong = []
    with served.client() as client:
        for method, path, route, setting in served.requests():
            limit = LIMITS[setting] if setting else LIMITS["http.max_json_body_bytes"]
            body = _padded(2 * limit)
            response = client.request(method, path, content=_chunks(body) if how == "chunked" else body)
            if setting is None:
                if response.status_code == 413 or response.status_code >= 500:
                    wrong.append((method, path, response.status_code, response.text[:200]))
                continue
            message = _message(response, route) if response.status_code == 413 else response.text[:200]
            if response.status_code != 413 or setting not in message or f"({limit} bytes)" not in message:
                wrong.append((method, path, response.status_code, message))
            if how == "chunked" and response.status_code == 413:
                assert "Request body exceeds" in message  # no Content-Length: refused as it arrived
    assert not wrong, wrong


def test_a_body_within_the_limit_passes_it(served: Served) -> None:
    """Just under http.max_json_body_bytes, a write goes through (the limit is the body's, not less)."""
    description = "d" * (LIMITS["http.max_json_body_bytes"] - 100)
    with served.client() as client:
        created = client.post("/api/registry/models", json={"name": "roomy", "description": description})
    assert created.status_code == 201, created.text


def test_a_body_nested_too_deep_is_a_400_naming_the_limit(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """On every route that reads a body: no 500, no RecursionError, the message names http.max_json_depth."""
    caplog.set_level(logging.ERROR)
    wrong = []
    with served.client() as client:
        for method, path, route, setting in served.requests():
            if setting is None:
                continue
            response = client.request(method, path, content=_deep(DEPTH + 1))
            message = _message(response, route) if response.status_code == 400 else response.text[:200]
            if response.status_code != 400 or f"http.max_json_depth ({DEPTH} levels)" not in message:
                wrong.append((method, path, response.status_code, message))
            if route.family == "openai":
                assert response.json()["error"]["code"] == "json_too_deep", (path, response.text)
            allowed = client.request(method, path, content=_deep(DEPTH))  # at the limit: not refused for depth
            assert "max_json_depth" not in allowed.text and allowed.status_code < 500, (method, path, allowed.text)
    assert not wrong, wrong
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_far_deeper_bodies_are_400s_not_500s(served: Served) -> None:
    """Past orjson's own limit (1,024) and Python's recursion limit: the same 400, on the hot paths too."""
    with served.client() as client:
        for path in ("/invocations", "/v1/chat/completions", "/api/prompts"):
            body = b"[" * 100_000 + b"]" * 100_000
            response = client.post(path, content=body[: LIMITS["http.max_json_body_bytes"] - 2] + b"]]")
            assert response.status_code == 400, (path, response.text)
            assert "http.max_json_depth" in response.text, (path, response.text)


def test_a_json_tag_nested_too_deep_is_refused(served: Served) -> None:
    """MLflow's prompt versions carry a chat template as JSON text in a tag: it meets the same limit."""
    template = "[" * (DEPTH + 1) + "]" * (DEPTH + 1)
    with served.client() as client:
        client.post("/api/2.0/mlflow/registered-models/create", json={
            "name": "deep-tags", "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}],
        })  # fmt: skip
        tags = {"mlflow.prompt.is_prompt": "true", "_mlflow_prompt_type": "chat", "mlflow.prompt.text": template}
        response = client.post(
            "/api/2.0/mlflow/model-versions/create",
            json={
                "name": "deep-tags",
                "source": "dummy-source",
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            },
        )
    assert response.status_code == 400, response.text
    assert "http.max_json_depth" in response.json()["message"]


def test_no_error_echoes_a_key_or_the_provider_secret(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """A run of errors on every body route (over the size limit, too deep, not JSON, a wrong key carrying the
    upstream's key), with the gateway key and the upstream's key inside the bodies: neither appears in an
    answer (body or headers), a log line (DEBUG) or an exported span, nor in the stored traces."""
    caplog.set_level(logging.DEBUG)
    served.exporter.clear()
    seen: list[str] = []
    secrets_body = {"api_key": KEY, "upstream": UPSTREAM_KEY}
    with served.client() as client:
        for method, path, _, setting in served.requests():
            limit = LIMITS[setting] if setting else LIMITS["http.max_json_body_bytes"]
            bodies: list[Any] = [
                _padded(2 * limit, f"{KEY} {UPSTREAM_KEY} "),
                _deep(DEPTH + 1, f"{KEY} {UPSTREAM_KEY}"),
                orjson.dumps(secrets_body)[:-1],  # not JSON
                orjson.dumps(secrets_body),  # JSON, missing every field a route needs
            ]
            for body in bodies:
                answer = client.request(method, path, content=body)
                seen.append(f"{answer.status_code} {answer.headers} {answer.text}")
            answer = client.request(
                method, path, content=b"{}", headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}
            )  # a provider key sent as a gateway key
            seen.append(f"{answer.status_code} {answer.headers} {answer.text}")
        seen.append(client.get("/api/traces", params={"limit": 1000}).text)
    spans = served.exporter.get_finished_spans()
    exported = orjson.dumps(
        [[s.name, dict(s.attributes or {}), [dict(e.attributes or {}) for e in s.events], s.status.description]
         for s in spans]
    ).decode()  # fmt: skip
    logs = caplog.text + "\n".join(str(record.args) for record in caplog.records)
    assert len(seen) > 100
    for secret in (KEY, UPSTREAM_KEY):
        assert not [text for text in seen if secret in text], secret
        assert secret not in logs
        assert secret not in exported
