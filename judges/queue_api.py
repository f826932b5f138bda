"""The judge queue over HTTP: ``GET /api/judges/queue`` (per judge: depth, in hand, delayed, the oldest job's
age, dead letters, the pause and why) and ``POST /api/judges/{name}/resume``; ``GET /api/judges/{name}`` shows
the judge's pause too (judges/api.py). On the process's queue (``app.state.judge_queue``), which every worker
and replica shares, so the answer is the same from any of them. A queue that cannot be reached is a 503
naming it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import DependencyError, InvalidParameter
from gateway.http import ORJSONResponse
from judges.queue.base import JobQueue, QueueUnavailable

T = TypeVar("T")


def _queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.judge_queue
    return queue


async def asked(call: Awaitable[T]) -> T:
    """``call`` on the queue; QueueUnavailable as a 503 naming the queue."""
    try:
        return await call
    except QueueUnavailable as exc:
        raise DependencyError(f"The judge queue is unavailable: {exc}") from exc


async def get_queue(request: Request) -> Response:
    """``GET /api/judges/queue``: ``{"backend", "judges": [...]}``, a judge per entry with jobs, dead letters
    or a pause."""
    if request.query_params:
        raise InvalidParameter(f"Unknown query parameter(s) {', '.join(sorted(set(request.query_params)))}.")
    queue = _queue(request)
    stats = await asked(queue.stats())
    return ORJSONResponse({"backend": queue.kind, "judges": [s.to_dict() for s in stats]})


async def resume_judge(request: Request) -> Response:
    """``POST /api/judges/{name}/resume``: the judge's jobs are handed out again. Idempotent: 200 with what the
    pause was (``was_paused``: its reason, or null when the judge was not paused)."""
    name = request.path_params["name"]
    queue = _queue(request)
    paused = await asked(queue.paused())
    if name in paused:
        await asked(queue.resume(name))
    return ORJSONResponse({"name": name, "was_paused": paused.get(name)})


async def pause_of(request: Request, name: str) -> str | None:
    """Why ``name`` is paused (None: it is not)."""
    paused = await asked(_queue(request).paused())
    return paused.get(name)
