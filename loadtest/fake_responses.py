"""The fake upstream's OpenAI Responses API: ``POST /v1/responses`` (plain and streamed), its follow-ups, and
``POST /v1/responses/input_tokens``.

fake_upstream.py routes the requests here; every function takes its ``FakeUpstream`` (``fake``) for the
request recording, the knobs and failures (``fake._begin``), the event stream (``fake._stream``) and the
responses it stored (``fake.stored``, the most recent ``STORED_MAX``). Like fake_upstream.py, this imports
nothing from ``gateway``: it stands in for a provider.

Answers are deterministic but for ids (``resp_<uuid>``: unique across fake instances, as a provider's are):

- the reply is ``"Echo: <last user text>"`` (``input`` as a string, or the last user message item), one
  ``response.output_text.delta`` event per word; token counts are word counts (``instructions`` included);
- with ``tools`` (function tools, and the last input item not a ``function_call_output``), the output is a
  ``function_call`` of the first tool whose arguments arrive in ``tool_call_deltas`` pieces;
- a stream is ``response.created``, ``response.in_progress``, ``response.output_item.added``,
  (``response.content_part.added``, the deltas, ``response.output_text.done``, ``response.content_part.done``
  | the ``response.function_call_arguments.delta`` events and ``.done``), ``response.output_item.done``,
  ``response.completed`` with the whole response and its usage; each event ``event: <type>`` plus ``data:``
  with its ``sequence_number``;
- ``previous_response_id`` must name a response this instance stored, else 404
  ``previous_response_not_found`` (as OpenAI answers): a test sees which upstream instance a follow-up reached;
- ``GET /v1/responses/{id}`` answers the stored response (``?stream=true``: its events again), ``DELETE``
  removes it (``{"id", "object": "response", "deleted": true}``), ``POST .../cancel`` answers it
  ``cancelled``, ``GET .../input_items`` lists its input items; an unknown id is a 404 in OpenAI's shape.

The knobs of fake_upstream.py (``status``, ``fail_first``, ``retry_after``, ``delay``, ``chunk_delay``,
``words``, ``tool_call_deltas``, ``break_after``, ``echo_key``) work here too, in the body's ``fake`` object
or after an ``@`` in the model name.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

STORED_MAX = 10_000
DEFAULT_TOOL_CALL_DELTAS = 3


class Fake(Protocol):
    """What these endpoints use of fake_upstream.py's ``FakeUpstream`` (not imported: it imports this module)."""

    stored: OrderedDict[str, Any]

    async def _begin(
        self, request: Request, error: Callable[..., Response] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], Response | None]: ...

    def _stream(self, request: Request, model: str, events: list[bytes], knobs: dict[str, Any]) -> Response: ...

    def record(self, request: Request, raw: bytes) -> None: ...


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _words(text: str) -> int:
    return len(text.split())


def _error(status: int, message: str, code: str | None = None, param: str | None = None) -> Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return []


def _reply(items: list[dict[str, Any]], knobs: dict[str, Any]) -> str:
    last = items[-1] if items else {}
    if last.get("type") == "function_call_output":
        text = f"Tool said: {last.get('output', '')}"
    else:
        user = next((i for i in reversed(items) if i.get("role") == "user"), None)
        text = f"Echo: {_text(user.get('content')) if user else ''}".strip()
    words = knobs.get("words")
    if words:
        pool = text.split() or ["word"]
        text = " ".join(pool[i % len(pool)] for i in range(int(words)))
    return text


def _arguments(deltas: int) -> list[str]:
    if deltas <= 1:
        return ['{"text": "x"}']
    if deltas == 2:
        return ['{"text": "', 'x"}']
    return ['{"text": "', *("x" * (deltas - 2)), '"}']


def _tool(body: dict[str, Any], items: list[dict[str, Any]]) -> str | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or body.get("tool_choice") == "none":
        return None
    if items and items[-1].get("type") == "function_call_output":
        return None
    first = tools[0] if isinstance(tools[0], dict) else {}
    return str(first.get("name") or (first.get("function") or {}).get("name") or "tool")


def _response(body: dict[str, Any], response_id: str, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": bool(body.get("background")),
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body.get("model", "")),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "prompt": body.get("prompt"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _event(kind: str, sequence: int, **fields: Any) -> bytes:
    data = {"type": kind, "sequence_number": sequence, **fields}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _events(body: dict[str, Any], final: dict[str, Any], pieces: list[str]) -> list[bytes]:
    """The stream of ``final`` (the completed response): what OpenAI sends, event by event."""
    start = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[bytes] = []

    def add(kind: str, **fields: Any) -> None:
        events.append(_event(kind, len(events), **fields))

    add("response.created", response=start)
    add("response.in_progress", response=start)
    for index, item in enumerate(final["output"]):
        if item["type"] == "function_call":
            add(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for piece in pieces:
                add("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=piece)
            add("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                arguments=item["arguments"], name=item["name"])  # fmt: skip
        else:
            text = item["content"][0]["text"]
            add("response.output_item.added", output_index=index, item={**item, "content": [], "status": "in_progress"})
            part = {"type": "output_text", "text": "", "annotations": []}
            add("response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part)
            for i, word in enumerate(text.split()):
                add("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0,
                    delta=word if i == 0 else " " + word, logprobs=[])  # fmt: skip
            add("response.output_text.done", item_id=item["id"], output_index=index, content_index=0, text=text,
                logprobs=[])  # fmt: skip
            add("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                part={**part, "text": text})  # fmt: skip
        add("response.output_item.done", output_index=index, item=item)
    add("response.completed", response=final)
    return events


def _store(fake: Fake, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
    stored: OrderedDict[str, Any] = fake.stored
    stored[response["id"]] = {"response": response, "input": items}
    while len(stored) > STORED_MAX:
        stored.popitem(last=False)


async def create(fake: Fake, request: Request) -> Response:
    body, knobs, early = await fake._begin(request)
    if early is not None:
        return early
    previous = body.get("previous_response_id")
    if previous is not None and previous not in fake.stored:
        return _error(404, f"Previous response with id '{previous}' not found.", "previous_response_not_found",
                      "previous_response_id")  # fmt: skip
    items = _input_items(body)
    tool = _tool(body, items)
    pieces = _arguments(int(knobs.get("tool_call_deltas", DEFAULT_TOOL_CALL_DELTAS))) if tool else []
    output: list[dict[str, Any]]
    if tool:
        output = [{"type": "function_call", "id": _id("fc"), "call_id": _id("call"), "name": tool,
                   "arguments": "".join(pieces), "status": "completed"}]  # fmt: skip
        output_tokens = len(pieces)
    else:
        reply = _reply(items, knobs)
        content: list[dict[str, Any]] = [{"type": "output_text", "text": reply, "annotations": [], "logprobs": []}]
        output = [{"type": "message", "id": _id("msg"), "status": "completed", "role": "assistant", "content": content}]
        output_tokens = _words(reply)
    input_tokens = sum(_words(_text(i.get("content"))) for i in items) + _words(str(body.get("instructions") or ""))
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": int(knobs.get("cached_tokens", 0))},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
    status = "queued" if body.get("background") else "completed"
    response = _response(body, _id("resp"), status, output, usage)
    _store(fake, response, items)
    if not body.get("stream"):
        return Response(orjson.dumps(response), media_type="application/json")
    return fake._stream(request, str(body.get("model", "")), _events(body, response, pieces), knobs)


async def input_tokens(fake: Fake, request: Request) -> Response:
    body, _, early = await fake._begin(request)
    if early is not None:
        return early
    items = _input_items(body)
    count = sum(_words(_text(i.get("content"))) for i in items) + _words(str(body.get("instructions") or ""))
    return Response(
        orjson.dumps({"object": "response.input_tokens", "input_tokens": count}), media_type="application/json"
    )


def _stored(fake: Fake, request: Request) -> tuple[str, dict[str, Any] | None]:
    fake.record(request, b"")
    response_id = request.path_params["response_id"]
    return response_id, fake.stored.get(response_id)


def _not_found(response_id: str) -> Response:
    return _error(404, f"Response with id '{response_id}' not found.", "response_not_found")


async def retrieve(fake: Fake, request: Request) -> Response:
    response_id, stored = _stored(fake, request)
    if stored is None:
        return _not_found(response_id)
    response = stored["response"]
    if request.query_params.get("stream") == "true":
        return fake._stream(request, response["model"], _events({}, response, []), {})
    return Response(orjson.dumps(response), media_type="application/json")


async def delete(fake: Fake, request: Request) -> Response:
    response_id, stored = _stored(fake, request)
    if stored is None:
        return _not_found(response_id)
    del fake.stored[response_id]
    return Response(
        orjson.dumps({"id": response_id, "object": "response", "deleted": True}), media_type="application/json"
    )


async def cancel(fake: Fake, request: Request) -> Response:
    response_id, stored = _stored(fake, request)
    if stored is None:
        return _not_found(response_id)
    response = stored["response"] = {**stored["response"], "status": "cancelled"}
    return Response(orjson.dumps(response), media_type="application/json")


async def input_items(fake: Fake, request: Request) -> Response:
    response_id, stored = _stored(fake, request)
    if stored is None:
        return _not_found(response_id)
    items = [{"id": _id("msg"), "status": "completed", **item} for item in stored["input"]]
    if request.query_params.get("order", "desc") == "desc":
        items.reverse()
    page = {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }
    return Response(orjson.dumps(page), media_type="application/json")


def routes(fake: Fake) -> list[Route]:
    return [
        Route("/v1/responses", partial(create, fake), methods=["POST"]),
        Route("/v1/responses/input_tokens", partial(input_tokens, fake), methods=["POST"]),
        Route("/v1/responses/{response_id}", partial(retrieve, fake), methods=["GET"]),
        Route("/v1/responses/{response_id}", partial(delete, fake), methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", partial(cancel, fake), methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", partial(input_items, fake), methods=["GET"]),
    ]
