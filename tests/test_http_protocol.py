"""gateway/http_protocol.py: uvicorn's httptools protocol with each loop iteration's writes joined.

Real uvicorn on loopback (tests/servers.py runs every in-thread server with this protocol) and a raw
socket or httpx as the client: answers arrive whole and in order on kept-alive and pipelined
connections, a body larger than what is held back arrives whole, a malformed request still gets
uvicorn's 400 before the connection closes, and a stream's event reaches the client before the app
produces the next one (nothing waits for a later write).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from gateway.http_protocol import FLUSH_AT, HeadLimits, configure
from tests.servers import run_app_in_thread

BIG = bytes(range(256)) * (3 * FLUSH_AT // 256 + 7)  # a body of several times FLUSH_AT
first_event_seen = threading.Event()  # set by the streaming test once the client holds the first event


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/echo":
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/big":  # in chunks, each sent without yielding to the loop in between
        length = [(b"content-length", str(len(BIG)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        for start in range(0, len(BIG), 10_000):
            await send({"type": "http.response.body", "body": BIG[start : start + 10_000], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/events":  # the second event only once the client has the first
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await asyncio.get_running_loop().run_in_executor(None, first_event_seen.wait, 30)
        await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": False})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_app_in_thread(app) as url:
        yield url


def _connect(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)  # a hang fails the test, never a pass
    return sock


def _read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}; got {data!r}"
        data += chunk
    return data


def test_kept_alive_connection_answers_every_request_whole(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for i in range(50):
            payload = f"request {i} ".encode() * (i + 1)
            answer = client.post("/echo", content=payload)
            assert answer.status_code == 200
            assert answer.content == payload
            assert answer.headers["content-length"] == str(len(payload))


def test_pipelined_requests_get_their_answers_in_order(base_url: str) -> None:
    requests = b"".join(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        for body in (b"first", b"second", b"third")
    )
    with _connect(base_url) as sock:
        sock.sendall(requests)
        data = _read_until(sock, b"third")
    answers = data.split(b"HTTP/1.1 200 OK\r\n")
    assert len(answers) == 4 and answers[0] == b""
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers[1:]] == [b"first", b"second", b"third"]


def test_body_larger_than_what_is_held_back_arrives_whole(base_url: str) -> None:
    answer = httpx.get(base_url + "/big", timeout=30)
    assert answer.status_code == 200
    assert answer.content == BIG


def test_malformed_request_gets_uvicorns_400_then_the_connection_closes(base_url: str) -> None:
    with _connect(base_url) as sock:
        sock.sendall(b"NOT A REQUEST\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert data.endswith(b"Invalid HTTP request received.")


def test_stream_event_reaches_the_client_before_the_next_is_produced(base_url: str) -> None:
    first_event_seen.clear()
    with _connect(base_url) as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_until(sock, b"data: one\n\n")  # the app holds "two" back until this returns
        assert b"data: two" not in data
        first_event_seen.set()
        data = _read_until(sock, b"data: two\n\n", data)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")


def _transport_methods_uvicorn_calls() -> set[str]:
    """Every ``[x.]transport.<method>(...)`` or ``[x.]_transport.<method>(...)`` call in the uvicorn
    modules that drive an HTTP connection, read from the installed uvicorn's source."""
    import ast
    import importlib
    import inspect

    called: set[str] = set()
    for module_name in (
        "uvicorn.protocols.http.httptools_impl",
        "uvicorn.protocols.http.flow_control",
        "uvicorn.protocols.utils",
    ):
        tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if owner_name in ("transport", "_transport"):
                called.add(node.func.attr)
    return called


def test_coalescing_transport_implements_every_method_uvicorn_calls() -> None:
    """A transport method uvicorn starts calling (``writelines``, say) must be one the wrapper defines
    itself: through a pass-through it would bypass what is held back and reorder the bytes."""
    from gateway.http_protocol import CoalescingTransport

    called = _transport_methods_uvicorn_calls()
    assert {"write", "close", "is_closing"} <= called  # the scan sees uvicorn's calls at all
    defined = {name for name in vars(CoalescingTransport) if not name.startswith("_")}
    missing = sorted(called - defined)
    assert not missing, f"uvicorn calls transport methods CoalescingTransport does not define: {missing}"
    assert not hasattr(CoalescingTransport, "__getattr__")


def test_gateway_serve_selects_the_coalescing_protocol() -> None:
    from gateway.http_protocol import PROTOCOL_PATH, select_http_protocol

    assert select_http_protocol() == PROTOCOL_PATH


def test_without_httptools_gateway_serve_falls_back_to_uvicorns_protocol_with_a_warning() -> None:
    """A fresh interpreter in which importing httptools fails, as on a machine without it."""
    import subprocess
    import sys

    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'httptools' or name.startswith('httptools.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n"
        "import logging; logging.basicConfig(level='WARNING', format='%(message)s')\n"
        "from gateway.http_protocol import select_http_protocol\n"
        "print(select_http_protocol())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "auto"
    assert "serving with uvicorn's own HTTP protocol" in done.stderr


# --- bounds on the request head (issue 13 item 7) -------------------------------------------------------------

LIMITS = HeadLimits(timeout_s=1.0, max_headers=20, max_bytes=4096)


@pytest.fixture
def bounded(base_url: str) -> Iterator[str]:
    """The module's server with small head limits for new connections (restored after the test)."""
    configure(LIMITS)
    try:
        yield base_url
    finally:
        configure(HeadLimits())


def _answer_then_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):  # until the server closes (the socket's 30 s timeout fails a hang)
        data += chunk
    return data


def _refusal(data: bytes, status: bytes, words: str) -> None:
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status), data[:200]
    assert b"connection: close" in head.lower()
    assert words in orjson.loads(body)["message"], body


def test_a_head_that_trickles_in_is_a_408_and_the_connection_closes(bounded: str) -> None:
    with _connect(bounded) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # and then nothing more: a slowloris client
        _refusal(_answer_then_close(sock), b"408", "did not arrive within 1 s")


def test_a_connection_that_never_sends_a_byte_is_closed(bounded: str) -> None:
    with _connect(bounded) as sock:
        _refusal(_answer_then_close(sock), b"408", "did not arrive within 1 s")


def test_the_next_request_on_a_kept_alive_connection_has_its_own_deadline(bounded: str) -> None:
    with _connect(bounded) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        assert _read_until(sock, b"\r\n\r\nok")
        sock.sendall(b"POST /echo HTTP/1.1\r\n")
        _refusal(_answer_then_close(sock), b"408", "did not arrive within 1 s")


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (b"GET /echo HTTP/1.1\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n", "exceed 4096 bytes"),
        (b"GET /echo HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)) + b"\r\n", "more than 20"),
        (b"GET /echo HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(21)) + b"\r\n", "more than 20"),
    ],
    ids=["a 1 MB header", "10,000 headers", "21 headers"],
)
def test_a_head_over_its_limits_is_a_431(bounded: str, head: bytes, words: str) -> None:
    with _connect(bounded) as sock:
        sock.sendall(head)  # the server reads and drops what follows a refused head (a lingering close)
        _refusal(_answer_then_close(sock), b"431", words)


def test_a_head_within_its_limits_and_a_body_beyond_them_are_taken(bounded: str) -> None:
    body = b"x" * 100_000  # the body is not part of the head
    headers = {f"X-H{i}": "v" for i in range(12)}  # with the 6 httpx adds: 18 of the 20
    with httpx.Client(base_url=bounded, timeout=30) as client:
        answer = client.post("/echo", content=body, headers=headers)
    assert answer.status_code == 200 and answer.content == body
