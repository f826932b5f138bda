"""The fake upstream's Anthropic Messages API: ``POST /v1/messages`` (plain and streamed) and
``POST /v1/messages/count_tokens``.

fake_upstream.py routes the requests here; every function takes its ``FakeUpstream`` (``fake``) for the
request recording and the knobs and failures (``fake._begin``, with errors in Anthropic's shape,
``{"type": "error", "error": {"type", "message"}}``) and the event stream (``fake._stream``). Imports
nothing from ``gateway``.

A request must carry ``anthropic-version`` (else 400, as Anthropic answers) and a ``max_tokens``; the
``x-api-key`` it carried is in the recorder, for tests to check. Answers are deterministic but for ids:

- the reply is ``"Echo: <last user text>"`` (one ``text_delta`` per word in a stream), stop reason
  ``end_turn``; with ``tools`` (and the last user content not a ``tool_result``) a ``tool_use`` block of the
  first tool, its input arriving in ``tool_call_deltas`` ``input_json_delta`` pieces, stop reason ``tool_use``;
- usage: input tokens are the words of ``system`` and the messages, output tokens the reply's words (or the
  argument pieces); knobs ``cache_read`` and ``cache_write`` report that many cache tokens besides;
- a stream: ``message_start`` (usage: input side, output 1), ``content_block_start``, a ``ping``, the
  deltas, ``content_block_stop``, ``message_delta`` (stop reason, output tokens), ``message_stop``.

The knobs of fake_upstream.py work here too (``status``, ``fail_first``, ``retry_after``, ``delay``,
``chunk_delay``, ``words``, ``tool_call_deltas``, ``break_after``, ``echo_key``).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DEFAULT_TOOL_CALL_DELTAS = 3
_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error",
}  # fmt: skip


class Fake(Protocol):
    """What these endpoints use of fake_upstream.py's ``FakeUpstream`` (not imported: it imports this module)."""

    stored: OrderedDict[str, Any]

    async def _begin(
        self, request: Request, error: Callable[..., Response] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], Response | None]: ...

    def _stream(self, request: Request, model: str, events: list[bytes], knobs: dict[str, Any]) -> Response: ...

    def record(self, request: Request, raw: bytes) -> None: ...


def error(status: int, message: str, retry_after: float | None = None) -> Response:
    """An error in Anthropic's shape."""
    kind = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{uuid.uuid4().hex}"}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _words(text: str) -> int:
    return len(text.split())


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _arguments(deltas: int) -> list[str]:
    if deltas <= 1:
        return ['{"text": "x"}']
    if deltas == 2:
        return ['{"text": "', 'x"}']
    return ['{"text": "', *("x" * (deltas - 2)), '"}']


def _input_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    count = _words(_text(body.get("system")))
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict):
            count += _words(_text(message.get("content")))
    return count


def _checked(request: Request, body: dict[str, Any]) -> Response | None:
    if not request.headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    if not isinstance(body.get("messages"), list):
        return error(400, "messages: Field required")
    return None


def _event(kind: str, **fields: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"


async def create(fake: Fake, request: Request) -> Response:
    body, knobs, early = await fake._begin(request, error)
    if early is not None:
        return early
    refused = _checked(request, body)
    if refused is not None:
        return refused
    if not isinstance(body.get("max_tokens"), int):
        return error(400, "max_tokens: Field required")
    messages = [m for m in body["messages"] if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    last_content = last.get("content")
    after_tool = isinstance(last_content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last_content
    )
    tools = body.get("tools")
    tool = tools[0].get("name") if isinstance(tools, list) and tools and isinstance(tools[0], dict) else None
    use_tool = tool is not None and not after_tool and (body.get("tool_choice") or {}).get("type") != "none"
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    if after_tool and isinstance(last_content, list):
        reply = f"Tool said: {_text(last_content[0].get('content'))}"
    else:
        reply = f"Echo: {_text(user.get('content'))}".strip()
    if knobs.get("words"):
        pool = reply.split() or ["word"]
        reply = " ".join(pool[i % len(pool)] for i in range(int(knobs["words"])))
    pieces = _arguments(int(knobs.get("tool_call_deltas", DEFAULT_TOOL_CALL_DELTAS))) if use_tool else []
    usage = {
        "input_tokens": _input_tokens(body),
        "cache_creation_input_tokens": int(knobs.get("cache_write", 0)),
        "cache_read_input_tokens": int(knobs.get("cache_read", 0)),
        "output_tokens": len(pieces) if use_tool else _words(reply),
    }
    message_id, model = f"msg_{uuid.uuid4().hex}", str(body.get("model", ""))
    if use_tool:
        block = {
            "type": "tool_use",
            "id": f"toolu_{uuid.uuid4().hex}",
            "name": tool,
            "input": orjson.loads("".join(pieces)),
        }
    else:
        block = {"type": "text", "text": reply}
    stop = "tool_use" if use_tool else "end_turn"
    message = {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": [block],
               "stop_reason": stop, "stop_sequence": None, "usage": usage}  # fmt: skip
    if not body.get("stream"):
        return Response(orjson.dumps(message), media_type="application/json")
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [_event("message_start", message=start)]
    if use_tool:
        events.append(_event("content_block_start", index=0, content_block={**block, "input": {}}))
        events.append(_event("ping"))
        events += [_event("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": p})
                   for p in pieces]  # fmt: skip
    else:
        events.append(_event("content_block_start", index=0, content_block={"type": "text", "text": ""}))
        events.append(_event("ping"))
        words = [w if i == 0 else " " + w for i, w in enumerate(reply.split())]
        events += [_event("content_block_delta", index=0, delta={"type": "text_delta", "text": w}) for w in words]
    events.append(_event("content_block_stop", index=0))
    events.append(_event("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
                         usage={"output_tokens": usage["output_tokens"]}))  # fmt: skip
    events.append(_event("message_stop"))
    return fake._stream(request, model, events, knobs)


async def count_tokens(fake: Fake, request: Request) -> Response:
    body, _, early = await fake._begin(request, error)
    if early is not None:
        return early
    refused = _checked(request, body)
    if refused is not None:
        return refused
    return Response(orjson.dumps({"input_tokens": _input_tokens(body)}), media_type="application/json")


def routes(fake: Fake) -> list[Route]:
    return [
        Route("/v1/messages", partial(create, fake), methods=["POST"]),
        Route("/v1/messages/count_tokens", partial(count_tokens, fake), methods=["POST"]),
    ]
