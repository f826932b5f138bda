"""A small OpenAI-compatible server standing in for an LLM provider, for tests and benches.

Run it: ``python loadtest/fake_upstream.py --port 8001`` (``--host``, default 127.0.0.1); import it:
``from loadtest.fake_upstream import Recorder, create_app``. Imports nothing from ``gateway``.

Endpoints: ``POST /v1/chat/completions`` (plain, ``stream`` with ``stream_options.include_usage``,
``n`` choices, tool calls), ``POST /v1/completions`` (plain and streamed), ``POST /v1/embeddings``
(``float`` or ``base64``, ``dimensions``), ``GET /v1/models``, ``POST /fake/reset``; the Responses API
(``POST /v1/responses`` and its follow-ups: loadtest/fake_responses.py) and Anthropic's Messages API
(``POST /v1/messages``, ``/v1/messages/count_tokens``: loadtest/fake_anthropic.py).

Answers are deterministic: a chat reply is ``"Echo: <last user text>"``, one streamed chunk per
word; token counts are word counts. When the body has ``tools`` (and the last message is not a tool
result), the reply is a call of the first tool whose arguments arrive in ``tool_call_deltas`` pieces.

Knobs, given either in the body as ``"fake": {"status": 500, ...}`` (a proxy passes unknown fields
through) or in the model name after an ``@`` as ``"m@status=503,fail_first=2,retry_after=1"`` (handy
when a proxy's targets must behave differently for the same request); the body wins:

- ``status``: answer with this HTTP status and an OpenAI error body (default 500 with ``fail_first``);
- ``fail_first``: only the first N calls with this model name fail, the next ones succeed;
- ``retry_after``: seconds, sent as ``Retry-After`` on the error;
- ``delay``: seconds to wait before answering (given up when the caller disconnects);
- ``chunk_delay``: seconds between streamed events;
- ``tool_call_deltas``: how many argument deltas a (streamed) tool call has (default 3);
- ``words``: reply length in words, repeating the echo (default: the echo as is);
- ``break_after``: streaming only: send this many events, then drop the connection mid-stream;
- ``echo_key``: with ``status``, the error message quotes the ``Authorization`` (or ``x-api-key``) header it received
  (as some providers quote a rejected key), to check that a proxy keeps it from its clients;
- ``judge_format`` (judge requests, below): how the verdict is written: ``json`` (default,
  ``{"rationale": ..., "result": ...}``), ``fenced`` (in a json code fence), ``preamble`` (prose, then
  the JSON), ``yes_word`` (a boolean result as ``"Yes"``/``"No"``), ``digit_string`` (a number as
  ``"4"``), ``wrong_type`` (the result in a list), ``out_of_range`` (an integer or number scale's
  maximum + 1, a label not in the list, ``2`` for a boolean), ``no_json`` (prose only); another
  value is a 400 naming the knob;
- ``judge_format_first``: only the first N judge calls of this model name use ``judge_format``, the
  later ones plain JSON (so a judge's repair request succeeds).

Judge mode: a chat request whose ``response_format.json_schema.name`` starts with ``judge_`` is an
LLM-judge call and is answered with a verdict, not an echo: scripted by a ``[[verdict=<json>]]`` or
``[[verdict.<judge>=<json>]]`` marker in its user message, else a deterministic heuristic for the
built-in judges, else a default per value schema (loadtest/fake_judge.py tells the rules). The
failure knobs above (``status``, ``fail_first``, ``retry_after``, ``delay``) work on judge calls too.

The :class:`Recorder` keeps what arrived (path, headers, body, time) and what happened to each
stream (events sent, completed, cancelled by the caller), so tests can assert what the upstream saw.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:  # mypy reads loadtest/ as top-level modules
    import fake_anthropic
    import fake_judge
    import fake_responses
else:
    try:  # run as a script (python loadtest/fake_upstream.py): loadtest/ is on sys.path
        import fake_anthropic
        import fake_judge
        import fake_responses
    except ModuleNotFoundError:  # imported as loadtest.fake_upstream
        from loadtest import fake_anthropic, fake_judge, fake_responses

MODELS = ("fake-model", "fake-embedding")
DEFAULT_TOOL_CALL_DELTAS = 3
DEFAULT_DIMENSIONS = 8
_INT_KNOBS = ("status", "fail_first", "tool_call_deltas", "words", "break_after", "judge_format_first")
_FLOAT_KNOBS = ("retry_after", "delay", "chunk_delay")


@dataclass
class Received:
    path: str  # with the query string, when there is one
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    method: str = "POST"

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class StreamRecord:
    path: str
    model: str
    events_sent: int = 0
    completed: bool = False
    cancelled: bool = False


@dataclass
class Recorder:
    """What the fake upstream received and did; safe to read from another thread."""

    requests: list[Received] = field(default_factory=list)
    streams: list[StreamRecord] = field(default_factory=list)
    calls_by_model: dict[str, int] = field(default_factory=dict)
    judge_calls_by_model: dict[str, int] = field(default_factory=dict)  # answered judge calls (judge_format_first)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.streams.clear()
            self.calls_by_model.clear()
            self.judge_calls_by_model.clear()

    def count_call(self, model: str, counts: dict[str, int] | None = None) -> int:
        with self.lock:
            counts = self.calls_by_model if counts is None else counts
            counts[model] = number = counts.get(model, 0) + 1
            return number


class _Ids:
    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self, prefix: str) -> str:
        return f"{prefix}-fake-{next(self._counter)}"


def _knobs(body: dict[str, Any]) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str):
        model = ""
    knobs: dict[str, Any] = {}
    if "@" in model:
        for item in model.split("@", 1)[1].split(","):
            key, _, value = item.partition("=")
            if key.strip():
                knobs[key.strip()] = value.strip()
    extra = body.get("fake")
    if isinstance(extra, dict):
        knobs.update(extra)
    for key in _INT_KNOBS:
        if key in knobs:
            knobs[key] = int(knobs[key])
    for key in _FLOAT_KNOBS:
        if key in knobs:
            knobs[key] = float(knobs[key])
    return knobs


def _openai_error(status: int, message: str, retry_after: float | None = None) -> Response:
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
    body = orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "server_error" if status >= 500 else "invalid_request_error",
                "code": None,
            }
        }
    )
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _words(text: str) -> int:
    return len(text.split())


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _reply_text(messages: list[Any], knobs: dict[str, Any]) -> str:
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        text = f"Tool said: {_text_of(last.get('content'))}"
    else:
        text = f"Echo: {_text_of(last_user.get('content')) if last_user else ''}".strip()
    words = knobs.get("words")
    if words:
        pool = text.split() or ["word"]
        text = " ".join(pool[i % len(pool)] for i in range(words))
    return text


def _tool_arguments(deltas: int) -> list[str]:
    """``deltas`` pieces that join into a JSON object."""
    if deltas <= 1:
        return ['{"text": "x"}']
    if deltas == 2:
        return ['{"text": "', 'x"}']
    return ['{"text": "', *("x" * (deltas - 2)), '"}']


class _EventStream(Response):
    """SSE events sent one by one; notices a caller that goes away and records it."""

    def __init__(self, events: list[bytes], record: StreamRecord, knobs: dict[str, Any]) -> None:
        self.status_code = 200
        self.background = None
        self._events = events
        self._record = record
        self._chunk_delay = float(knobs.get("chunk_delay", 0.0))
        self._break_after = knobs.get("break_after")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.create_task(self._send_all(send))
        watcher = asyncio.create_task(self._wait_disconnect(receive))
        done, _ = await asyncio.wait((sender, watcher), return_when=asyncio.FIRST_COMPLETED)
        if sender not in done:
            self._record.cancelled = True
            sender.cancel()
        watcher.cancel()
        await asyncio.gather(sender, watcher, return_exceptions=True)
        if sender.done() and not sender.cancelled() and sender.exception() is not None:
            raise sender.exception()  # type: ignore[misc]

    async def _wait_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _send_all(self, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i, event in enumerate(self._events):
            if self._break_after is not None and i >= self._break_after:
                raise ConnectionAbortedError("fake upstream: break_after reached, dropping the connection")
            if i and self._chunk_delay:
                await asyncio.sleep(self._chunk_delay)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            self._record.events_sent += 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self._record.completed = True


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


class FakeUpstream:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.ids = _Ids()
        self.stored: OrderedDict[str, Any] = OrderedDict()  # the Responses API's stored responses (fake_responses.py)

    def record(self, request: Request, raw: bytes) -> None:
        path = request.scope["path"] + (f"?{request.url.query}" if request.url.query else "")
        self.recorder.requests.append(
            Received(path, {k.lower(): v for k, v in request.headers.items()}, raw, time.monotonic(), request.method)
        )

    async def _begin(
        self, request: Request, error: Callable[..., Response] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], Response | None]:
        """Record the request, read its knobs, apply failures and delays; a Response ends the call early (an
        error in OpenAI's shape, or the one ``error`` makes)."""
        _error = error or _openai_error
        raw = await request.body()
        self.record(request, raw)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}, {}, _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return {}, {}, _error(400, "body must be a JSON object")
        knobs = _knobs(body)
        model = str(body.get("model", ""))
        number = self.recorder.count_call(model)
        delay = knobs.get("delay", 0.0)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return body, knobs, Response(status_code=499)
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        status = knobs.get("status")
        fail_first = knobs.get("fail_first")
        if fail_first is not None and number <= fail_first:
            return (
                body,
                knobs,
                _error(status or 500, f"fake failure {number} of {fail_first}", knobs.get("retry_after")),
            )
        if status is not None and fail_first is None:
            message = f"fake upstream error {status}"
            if knobs.get("echo_key"):
                key = request.headers.get("authorization") or request.headers.get("x-api-key", "")
                message = f"Incorrect API key provided: {key}"
            return body, knobs, _error(status, message, knobs.get("retry_after"))
        return body, knobs, None

    async def chat(self, request: Request) -> Response:
        body, knobs, early = await self._begin(request)
        if early is not None:
            return early
        messages = body.get("messages")
        if not isinstance(messages, list):
            return _openai_error(400, "'messages' must be a list")
        model = str(body["model"])
        n = int(body.get("n") or 1)
        tools = body.get("tools")
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        use_tool = bool(tools) and body.get("tool_choice") != "none" and last.get("role") != "tool"
        tool_name = tools[0]["function"]["name"] if use_tool and isinstance(tools, list) else None
        if fake_judge.judge_name(body) is not None:
            try:
                number = self.recorder.count_call(model, self.recorder.judge_calls_by_model)
                reply = fake_judge.verdict_text(body, knobs, number)
            except (ValueError, TypeError) as exc:  # an unknown judge_format, a schema bound that is no number
                return _openai_error(400, f"fake upstream: {exc}")
        else:
            reply = _reply_text(messages, knobs)
        pieces = _tool_arguments(int(knobs.get("tool_call_deltas", DEFAULT_TOOL_CALL_DELTAS))) if use_tool else None
        prompt_tokens = sum(_words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        completion_tokens = (len(pieces) if pieces else _words(reply)) * n
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        response_id = self.ids.next("chatcmpl")
        created = int(time.time())
        finish = "tool_calls" if use_tool else "stop"
        if not body.get("stream"):
            choices = []
            for index in range(n):
                message: dict[str, Any] = {"role": "assistant", "content": None if use_tool else reply, "refusal": None}
                if use_tool:
                    arguments = "".join(pieces or [])
                    message["tool_calls"] = [
                        {
                            "id": f"call_{index}",
                            "type": "function",
                            "function": {"name": tool_name, "arguments": arguments},
                        }
                    ]
                choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": finish})
            answer = {
                "id": response_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": choices,
                "usage": usage,
            }
            return Response(orjson.dumps(answer), media_type="application/json")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model}
        if include_usage:
            base["usage"] = None
        events = []
        for index in range(n):
            if use_tool:
                for i, piece in enumerate(pieces or []):
                    call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
                    delta: dict[str, Any] = {"tool_calls": [call]}
                    if i == 0:
                        call.update(id=f"call_{index}", type="function")
                        call["function"]["name"] = tool_name
                        delta.update(role="assistant", content=None)
                    events.append(
                        _sse(
                            {
                                **base,
                                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}],
                            }
                        )
                    )
            else:
                events.append(
                    _sse(
                        {
                            **base,
                            "choices": [
                                {
                                    "index": index,
                                    "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None,
                                    "finish_reason": None,
                                }
                            ],
                        }
                    )
                )
                for i, word in enumerate(reply.split()):
                    text = word if i == 0 else " " + word
                    events.append(
                        _sse(
                            {
                                **base,
                                "choices": [
                                    {
                                        "index": index,
                                        "delta": {"content": text},
                                        "logprobs": None,
                                        "finish_reason": None,
                                    }
                                ],
                            }
                        )
                    )
            events.append(
                _sse({**base, "choices": [{"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}]})
            )
        if include_usage:
            events.append(_sse({**base, "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
        return self._stream(request, model, events, knobs)

    async def completions(self, request: Request) -> Response:
        body, knobs, early = await self._begin(request)
        if early is not None:
            return early
        model = str(body["model"])
        prompt = body.get("prompt", "")
        prompt_text = prompt if isinstance(prompt, str) else " ".join(str(p) for p in prompt)
        reply = _reply_text([{"role": "user", "content": prompt_text}], knobs)
        prompt_tokens = _words(prompt_text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": _words(reply),
            "total_tokens": prompt_tokens + _words(reply),
        }
        response_id = self.ids.next("cmpl")
        base = {"id": response_id, "object": "text_completion", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            choice = {"text": reply, "index": 0, "logprobs": None, "finish_reason": "stop"}
            return Response(orjson.dumps({**base, "choices": [choice], "usage": usage}), media_type="application/json")
        events = [
            _sse(
                {
                    **base,
                    "choices": [
                        {"text": (w if i == 0 else " " + w), "index": 0, "logprobs": None, "finish_reason": None}
                    ],
                }
            )
            for i, w in enumerate(reply.split())
        ]
        events.append(_sse({**base, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(_sse({**base, "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
        return self._stream(request, model, events, knobs)

    async def embeddings(self, request: Request) -> Response:
        body, knobs, early = await self._begin(request)
        if early is not None:
            return early
        raw_input = body.get("input")
        inputs = (
            raw_input
            if isinstance(raw_input, list) and raw_input and not isinstance(raw_input[0], int)
            else [raw_input]
        )
        dimensions = int(body.get("dimensions") or DEFAULT_DIMENSIONS)
        data = []
        tokens = 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else orjson.dumps(item).decode()
            tokens += _words(text) if isinstance(item, str) else len(item)
            seed = hashlib.sha256(text.encode()).digest()
            vector = [((seed[i % 32] + i) % 256) / 255.0 - 0.5 for i in range(dimensions)]
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        answer = {
            "object": "list",
            "data": data,
            "model": str(body["model"]),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    async def models(self, request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in MODELS]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    async def reset(self, request: Request) -> Response:
        self.recorder.reset()
        return Response(b"{}", media_type="application/json")

    def _stream(self, request: Request, model: str, events: list[bytes], knobs: dict[str, Any]) -> Response:
        record = StreamRecord(request.scope["path"], model)
        self.recorder.streams.append(record)
        return _EventStream(events, record, knobs)


def create_app(recorder: Recorder | None = None) -> Starlette:
    fake = FakeUpstream(recorder if recorder is not None else Recorder())
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", fake.chat, methods=["POST"]),
            Route("/v1/completions", fake.completions, methods=["POST"]),
            Route("/v1/embeddings", fake.embeddings, methods=["POST"]),
            Route("/v1/models", fake.models, methods=["GET"]),
            *fake_responses.routes(fake),
            *fake_anthropic.routes(fake),
            Route("/fake/reset", fake.reset, methods=["POST"]),
        ]
    )
    app.state.recorder = fake.recorder
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible upstream for tests and benches.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    import uvicorn

    # Remember nothing: a bench sends millions of requests.
    app = create_app(_ForgetfulRecorder())
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


class _ForgetfulRecorder(Recorder):
    """Counts calls per model (for fail_first) but keeps no request bodies (a long bench would fill memory)."""

    def __post_init__(self) -> None:
        self.requests = _Discard()
        self.streams = _Discard()


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        pass


if __name__ == "__main__":
    main()
