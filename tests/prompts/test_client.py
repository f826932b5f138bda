"""prompts.client against a real gateway process: TTL, stale-while-revalidate with one refresh,
the last good copy while the gateway is down, and eviction on 404."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import DependencyError, GatewayError, InvalidParameter, NotFound
from prompts.client import PromptClient, load_prompt
from tests.servers import free_port, gateway_env, run_gateway_process

DEADLINE_S = 15.0  # a guard for eventual conditions, not a timing assertion
REF = "prompts:/qa@prod"


def _eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {DEADLINE_S} s: {what}")


@contextlib.contextmanager
def _gateway(tmp_path: Path) -> Iterator[tuple[str, httpx.Client, subprocess.Popen[bytes]]]:
    """``gateway serve`` as a process, with prompt qa versions 1 and 2 and ``prod`` on 1."""
    env = gateway_env(f"sqlite:///{tmp_path}/store.db", tmp_path, GATEWAY_WORKERS="1")
    with (
        run_gateway_process([], env, log_path=tmp_path / "gateway.log") as (base_url, process),
        httpx.Client(base_url=base_url, timeout=30) as admin,
    ):
        for text in ("one {{ x }}", "two {{ x }}"):
            body = {"template": text, "model_config": {"model_name": "m", "temperature": 0.5}}
            assert admin.post("/api/prompts/qa/versions", json=body).status_code == 201
        assert admin.put("/api/prompts/qa/aliases/prod", json={"version": 1}).status_code == 200
        yield base_url, admin, process


class HeldProxy:
    """A real HTTP server in front of the gateway that holds each request until ``release`` is set,
    so a test can see how many requests the client sends while a refresh is in flight."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.release = threading.Event()
        self.release.set()
        self.received = 0

    async def forward(self, request: Request) -> Response:
        self.received += 1
        await asyncio.to_thread(self.release.wait, DEADLINE_S)
        headers = {k: v for k, v in request.headers.items() if k.lower() == "if-none-match"}
        async with httpx.AsyncClient(base_url=self.upstream) as client:
            answer = await client.get(request.url.path, headers=headers)
        keep = {k: v for k, v in answer.headers.items() if k.lower() in {"etag", "content-type"}}
        return Response(answer.content, status_code=answer.status_code, headers=keep)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        app = Starlette(routes=[Route("/{path:path}", self.forward)])
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            _eventually(lambda: server.started, "the proxy started")
            yield f"http://127.0.0.1:{port}"
        finally:
            self.release.set()
            server.should_exit = True
            thread.join(timeout=30)


def test_load_prompt_returns_a_usable_prompt(tmp_path: Path) -> None:
    with _gateway(tmp_path) as (base_url, _, _):
        prompt = load_prompt(REF, base_url=base_url, ttl_s=60)
        assert (prompt.name, prompt.version, prompt.template) == ("qa", 1, "one {{ x }}")
        assert prompt.model_config == {"model_name": "m", "temperature": 0.5}
        assert prompt.format(x="!") == "one !"
        with pytest.raises(InvalidParameter, match="Missing variables: 'x'"):
            prompt.format()
        assert load_prompt("prompts:/qa/2", base_url=base_url).format(x=1) == "two 1"
        assert load_prompt("qa@latest", base_url=base_url).version == 2
        with pytest.raises(NotFound, match="Prompt 'qa' has no alias 'nope'."):
            load_prompt("prompts:/qa@nope", base_url=base_url)
        with pytest.raises(GatewayError, match="Not a proper prompt reference"):
            load_prompt("prompts:/qa/latest", base_url=base_url)


def test_ttl_and_stale_while_revalidate_with_one_refresh(tmp_path: Path) -> None:
    with _gateway(tmp_path) as (base_url, admin, _):
        proxy = HeldProxy(base_url)
        with proxy.serve() as proxy_url, PromptClient(proxy_url, ttl_s=3600) as client:
            first = client.load(REF)
            assert client.load(REF) is first and proxy.received == 1  # fresh: no request

            admin.put("/api/prompts/qa/aliases/prod", json={"version": 2})
            proxy.release.clear()  # the next request to reach the proxy waits
            # Expired (ttl 0.000001 s): served at once, stale, while one background refresh runs.
            answers = [client.load(REF, ttl_s=1e-6) for _ in range(200)]
            assert {a.version for a in answers} == {1}
            _eventually(lambda: proxy.received == 2, "the background refresh reached the gateway")
            assert [client.load(REF, ttl_s=1e-6).version for _ in range(50)] == [1] * 50
            assert proxy.received == 2  # one refresh in flight, however many loads
            proxy.release.set()
            _eventually(lambda: client.load(REF).version == 2, "the refresh replaced the entry")
            assert client.load(REF).format(x="?") == "two ?"

            # An unchanged prompt revalidates with a 304 and keeps the same object.
            current = client.load(REF)
            assert client.load(REF, ttl_s=0) is current
            assert proxy.received == 3


def test_last_good_copy_while_the_gateway_process_is_stopped(tmp_path: Path) -> None:
    with _gateway(tmp_path) as (base_url, _, process):
        client = PromptClient(base_url, ttl_s=0.05, timeout_s=2)
        assert client.load(REF).version == 1
        process.terminate()
        process.wait(timeout=30)
    time.sleep(0.1)  # past the TTL
    sent = client.requests_sent
    assert client.load(REF).version == 1  # stale, served at once; the refresh fails in the background
    _eventually(lambda: client.requests_sent > sent, "a refresh was attempted")
    assert client.load(REF, ttl_s=0).format(x="!") == "one !"  # synchronous revalidation falls back too
    assert client.cached(REF) is not None
    with pytest.raises(DependencyError, match=f"The prompt gateway at {base_url} is unavailable"):
        PromptClient(base_url, timeout_s=2).load(REF)  # nothing cached: nothing to fall back to
    client.close()


def test_a_404_evicts_the_entry(tmp_path: Path) -> None:
    with _gateway(tmp_path) as (base_url, admin, _), PromptClient(base_url, ttl_s=0.05) as client:
        assert client.load(REF).version == 1
        assert admin.delete("/api/prompts/qa/aliases/prod").status_code == 204
        time.sleep(0.1)  # past the TTL
        assert client.load(REF).version == 1  # the last copy, while the refresh runs
        _eventually(lambda: client.cached(REF) is None, "the 404 evicted the entry")
        with pytest.raises(NotFound, match="Prompt 'qa' has no alias 'prod'."):
            client.load(REF)
        # A synchronous revalidation (ttl 0) evicts too.
        admin.put("/api/prompts/qa/aliases/prod", json={"version": 2})
        assert client.load(REF).version == 2
        admin.delete("/api/prompts/qa/aliases/prod")
        with pytest.raises(NotFound):
            client.load(REF, ttl_s=0)
        assert client.cached(REF) is None
