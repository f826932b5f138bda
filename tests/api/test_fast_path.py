"""``POST /invocations``, proxied LLM calls (``POST /v1/...``) and cached prompt reads skip Starlette's
router and middleware layers (``GatewayApp`` in gateway/app.py): every answer must be what the usual path
gives, byte for byte, errors included.

Two real gateways over one store: the app as built, and the same app with a pass-through middleware,
which makes every request take Starlette's usual path. Each request goes to both; status, body and the
headers a client reads must match.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app import create_app
from gateway.config import Settings, load_settings
from prompts.store import PromptStore
from tests.api.batching_gateway import register, sample
from tests.packages import IRIS_COLUMNS, PackageCache
from tests.servers import run_app_in_thread

MAX_BODY_BYTES = 4096
HEADERS_COMPARED = (
    "content-type", "content-length", "x-model-name", "x-model-version", "retry-after", "allow", "etag",
)  # fmt: skip


def build_unserializable_pyfunc_package(dest: Path) -> Path:
    """A pyfunc whose answer is a Python ``set``, which no JSON writer takes: the gateway's 500 path."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    class SetModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
            return {float(v) for v in model_input["x"]}

    frame = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(
        str(dest),
        python_model=SetModel(),
        signature=infer_signature(frame, pd.DataFrame({"y": [1.0]})),
        input_example=frame,
        pip_requirements=["mlflow", "pandas"],
    )
    return dest


class SeenPaths:
    """A pass-through middleware that notes each HTTP path (proof that the usual path was taken)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen_paths.append(scope["path"])
        await self.app(scope, receive, send)


seen_paths: list[str] = []


@dataclass
class Pair:
    fast: httpx.Client
    usual: httpx.Client
    fast_url: str


@contextlib.contextmanager
def _fast_and_usual(settings: Settings) -> Iterator[tuple[httpx.Client, httpx.Client, str]]:
    """Two real gateways on ``settings``: the app as built, and one whose pass-through middleware sends
    every request Starlette's usual way; a client for each and the first one's URL."""
    usual_app = create_app(settings)
    usual_app.add_middleware(SeenPaths)
    with (
        run_app_in_thread(create_app(settings)) as fast_url,
        run_app_in_thread(usual_app) as usual_url,
        httpx.Client(base_url=fast_url, timeout=60) as fast,
        httpx.Client(base_url=usual_url, timeout=60) as usual,
    ):
        yield fast, usual, fast_url


@pytest.fixture(scope="module")
def pair(packages: PackageCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("fastpath")
    roots = [packages.root, root]
    store_uri = f"sqlite:///{root}/store.db"
    register(store_uri, "iris", packages.get("onnx_classifier"), roots)
    register(store_uri, "sets", build_unserializable_pyfunc_package(root / "sets"), roots)
    prompts = PromptStore.open(store_uri)
    prompts.create_version("qa", "Answer {{ question }}")
    prompts.create_version("qa", [{"role": "user", "content": "Answer {{ question }} briefly"}])
    prompts.set_alias("qa", "production", 1)
    prompts.close()
    settings = load_settings(
        {
            "store_uri": store_uri,
            "artifact_roots": [str(r) for r in roots],
            "workers": 1,
            "serving.default_model": "models:/iris@prod",
            "serving.preload": ["models:/iris@prod", "models:/sets@prod"],
            "serving.max_body_bytes": MAX_BODY_BYTES,
        },
        environ={},
    )
    with _fast_and_usual(settings) as (fast, usual, fast_url):
        for client in (fast, usual):
            deadline = time.monotonic() + 60
            while client.get("/health").status_code != 200:
                assert time.monotonic() < deadline, client.get("/health").text
                time.sleep(0.05)
        CASES["prompt not modified"][3]["If-None-Match"] = fast.get("/api/prompts/qa@production").headers["etag"]
        yield Pair(fast, usual, fast_url)


# Filled in by the fixture once the store holds the prompt (ETags are content hashes).
PROMPT_V1_ETAG = "filled-in-by-the-pair-fixture"
GOOD = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}
JSON = {"Content-Type": "application/json"}
CASES: dict[str, tuple[str, str, bytes, dict[str, str]]] = {
    "default model": ("POST", "/invocations", orjson.dumps(GOOD), JSON),
    "by alias": ("POST", "/models/iris@prod/invocations", orjson.dumps(GOOD), JSON),
    "by version": ("POST", "/models/iris/versions/1/invocations", orjson.dumps({"inputs": [[1.0, 2, 3, 4]]}), JSON),
    "no content type": ("POST", "/invocations", orjson.dumps(GOOD), {}),
    "split with index": (
        "POST", "/invocations", orjson.dumps({"dataframe_split": {**GOOD["dataframe_split"], "index": [7, 8]}}), JSON,
    ),
    "records": ("POST", "/invocations", orjson.dumps({"dataframe_records": [dict.fromkeys(IRIS_COLUMNS, 1.5)]}), JSON),
    "deadline header": ("POST", "/invocations", orjson.dumps(GOOD), {**JSON, "X-Request-Timeout-Ms": "5000"}),
    "bad deadline header": ("POST", "/invocations", orjson.dumps(GOOD), {**JSON, "X-Request-Timeout-Ms": "soon"}),
    "not json": ("POST", "/invocations", b"{not json", JSON),
    "wrong content type": ("POST", "/invocations", orjson.dumps(GOOD), {"Content-Type": "application/xml"}),
    "too large": ("POST", "/invocations", b" " * (MAX_BODY_BYTES + 1) + orjson.dumps(GOOD), JSON),
    "missing column": (
        "POST", "/invocations", orjson.dumps({"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}), JSON,
    ),
    "unknown model": ("POST", "/models/nosuch@prod/invocations", orjson.dumps(GOOD), JSON),
    "unknown alias": ("POST", "/models/iris@nosuch/invocations", orjson.dumps(GOOD), JSON),
    "bad version": ("POST", "/models/iris/versions/x/invocations", orjson.dumps(GOOD), JSON),
    "no alias": ("POST", "/models/iris/invocations", orjson.dumps(GOOD), JSON),
    "other path": ("POST", "/models/iris@prod/invocations/more", orjson.dumps(GOOD), JSON),
    "GET": ("GET", "/invocations", b"", {}),
    "unserializable answer": (
        "POST", "/models/sets@prod/invocations", orjson.dumps({"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}),
        JSON,
    ),
    "prompt by alias": ("GET", "/api/prompts/qa@production", b"", {}),
    "prompt latest": ("GET", "/api/prompts/qa@latest", b"", {}),
    "prompt by name": ("GET", "/api/prompts/qa", b"", {}),
    "prompt not modified": ("GET", "/api/prompts/qa@production", b"", {"If-None-Match": PROMPT_V1_ETAG}),
    "prompt unknown": ("GET", "/api/prompts/nosuch@production", b"", {}),
    "prompt unknown alias": ("GET", "/api/prompts/qa@nosuch", b"", {}),
    "prompt bad name": ("GET", "/api/prompts/bad name@production", b"", {}),
    "prompt versions": ("GET", "/api/prompts/qa/versions", b"", {}),
}  # fmt: skip
STATUSES = {"default model": 200, "by alias": 200, "by version": 200, "no content type": 200, "deadline header": 200,
            "bad deadline header": 400, "not json": 400, "wrong content type": 415, "too large": 413,
            "missing column": 400, "unknown model": 404, "unknown alias": 404, "bad version": 400, "no alias": 404,
            "other path": 404, "GET": 405, "unserializable answer": 500, "prompt by alias": 200,
            "prompt latest": 200, "prompt by name": 200, "prompt not modified": 304, "prompt unknown": 404,
            "prompt unknown alias": 404, "prompt bad name": 400, "prompt versions": 200,
            "split with index": 200, "records": 200}  # fmt: skip
RESOLVED = {"default model", "by alias", "by version", "no content type", "deadline header", "bad deadline header",
            "not json", "wrong content type", "too large", "missing column", "split with index", "records"}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_path_answers_as_the_usual_path(pair: Pair, case: str) -> None:
    method, path, body, headers = CASES[case]
    seen_paths.clear()
    fast = pair.fast.request(method, path, content=body, headers=headers)
    usual = pair.usual.request(method, path, content=body, headers=headers)
    assert seen_paths == [path]  # the usual path went through the middleware; the fast one has none
    assert fast.status_code == usual.status_code == STATUSES[case], (fast.text, usual.text)
    assert fast.content == usual.content
    for name in HEADERS_COMPARED:
        assert fast.headers.get(name) == usual.headers.get(name), name
    if case == "prompt not modified":
        assert fast.content == b"" and fast.headers["etag"]
    if fast.status_code >= 400:
        error = fast.json()
        assert error["error_code"] and error["message"], error  # MLflow's error body, saying what was wrong
    if case in RESOLVED:  # the model was found: the answer says which version answered, errors included
        assert fast.headers["x-model-name"] == "iris" and fast.headers["x-model-version"] == "1"


def test_a_client_that_leaves_mid_body_is_counted_499(pair: Pair) -> None:
    def count() -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = pair.fast.get("/metrics").text
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return sample(samples, "gateway_requests_total", model="iris", version="1", status="499")

    before = count()
    host, port = pair.fast_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"inputs": [[1.0,'
        )
        time.sleep(0.2)  # let the server start reading the body before the connection goes
    deadline = time.monotonic() + 10
    while count() != before + 1:
        assert time.monotonic() < deadline, "the abandoned request was never counted as 499"
        time.sleep(0.05)
    assert pair.fast.post("/invocations", json=GOOD).status_code == 200  # and the server is fine


# -- the LLM proxy's calls (POST /v1/chat/completions, /v1/completions, /v1/embeddings) ------------------

LLM_KEY = "gw-fast-path-key"
LLM_MAX_BODY_BYTES = 2048
UPSTREAM_KEY_ENV = "FAST_PATH_UPSTREAM_KEY"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}
AUTHED = {**JSON, "Authorization": f"Bearer {LLM_KEY}"}
LLM_CASES: dict[str, tuple[str, str, bytes, dict[str, str], int]] = {
    "chat": ("POST", "/v1/chat/completions", orjson.dumps(CHAT), AUTHED, 200),
    "chat streamed": ("POST", "/v1/chat/completions", orjson.dumps({**CHAT, "stream": True}), AUTHED, 200),
    "completion": ("POST", "/v1/completions", orjson.dumps({"model": "chat", "prompt": "Say hello"}), AUTHED, 200),
    "embedding": ("POST", "/v1/embeddings", orjson.dumps({"model": "embed", "input": "hello"}), AUTHED, 200),
    "no key": ("POST", "/v1/chat/completions", orjson.dumps(CHAT), JSON, 401),
    "wrong key": ("POST", "/v1/chat/completions", orjson.dumps(CHAT), {**JSON, "Authorization": "Bearer nope"}, 401),
    "unknown model": ("POST", "/v1/chat/completions", orjson.dumps({**CHAT, "model": "nosuch"}), AUTHED, 404),
    "not json": ("POST", "/v1/chat/completions", b"{not json", AUTHED, 400),
    "no messages": ("POST", "/v1/chat/completions", orjson.dumps({"model": "chat"}), AUTHED, 400),
    "too large": ("POST", "/v1/chat/completions", b" " * LLM_MAX_BODY_BYTES + orjson.dumps(CHAT), AUTHED, 413),
    "upstream refuses": ("POST", "/v1/chat/completions", orjson.dumps({**CHAT, "model": "refused"}), AUTHED, 400),
    "upstream fails": ("POST", "/v1/chat/completions", orjson.dumps({**CHAT, "model": "broken"}), AUTHED, 502),
    "GET": ("GET", "/v1/chat/completions", b"", AUTHED, 405),
    "other path": ("POST", "/v1/chat/completions/more", orjson.dumps(CHAT), AUTHED, 404),
}  # fmt: skip


@pytest.fixture(scope="module")
def llm_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    import hashlib

    from loadtest.fake_upstream import create_app as create_fake_upstream

    root = tmp_path_factory.mktemp("fastpath-llm")
    with run_app_in_thread(create_fake_upstream()) as upstream_url, pytest.MonkeyPatch.context() as env:
        env.setenv(UPSTREAM_KEY_ENV, "sk-upstream-fast-path")

        def target(model: str) -> dict[str, Any]:
            return {"base_url": upstream_url + "/v1", "model": model, "api_key_env": UPSTREAM_KEY_ENV}

        settings = load_settings(
            {
                "store_uri": f"sqlite:///{root}/store.db",
                "workers": 1,
                "llm": {
                    "max_body_bytes": LLM_MAX_BODY_BYTES,
                    "routes": [
                        {"name": "chat", "targets": [target("fake-model")]},
                        {"name": "embed", "targets": [target("fake-embedding")]},
                        {"name": "refused", "targets": [target("fake-model@status=400")]},
                        {"name": "broken", "targets": [target("fake-model@status=500")]},
                    ],
                },
                "auth": {"keys": [hashlib.sha256(LLM_KEY.encode()).hexdigest()]},
            },
            environ={},
        )
        with _fast_and_usual(settings) as (fast, usual, fast_url):
            yield Pair(fast, usual, fast_url)


def _per_call_fields_masked(body: bytes) -> bytes:
    """The body with the values the fake upstream makes up per call (a counter, the clock) blanked out."""
    import re

    return re.sub(rb'("id"|"created"):\s*("[^"]*"|\d+)', rb"\1:_", body)


@pytest.mark.parametrize("case", sorted(LLM_CASES))
def test_llm_fast_path_answers_as_the_usual_path(llm_pair: Pair, case: str) -> None:
    method, path, body, headers, status = LLM_CASES[case]
    seen_paths.clear()
    fast = llm_pair.fast.request(method, path, content=body, headers=headers)
    usual = llm_pair.usual.request(method, path, content=body, headers=headers)
    assert seen_paths == [path]  # the usual path went through the middleware; the fast one has none
    assert fast.status_code == usual.status_code == status, (fast.text, usual.text)
    assert _per_call_fields_masked(fast.content) == _per_call_fields_masked(usual.content)
    for name in (*HEADERS_COMPARED, "cache-control", "x-accel-buffering", "www-authenticate"):
        assert fast.headers.get(name) == usual.headers.get(name), name
    if status == 200:
        assert b'"model"' in fast.content  # a real answer from the upstream
    if case == "chat streamed":
        assert fast.headers["content-type"].startswith("text/event-stream")
        assert fast.content.rstrip().endswith(b"data: [DONE]")
    elif fast.status_code >= 400 and method == "POST" and case != "other path":
        assert fast.json()["error"]["message"], fast.text  # the OpenAI error body, saying what was wrong
