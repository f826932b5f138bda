"""The judge worker a gateway runs in process (``judges.workers: embedded``, the default): one JudgeWorker per
gateway worker process, over the app's own judge runner, catalog and stores, on the process's judge queue
(judges/queue/choice.py: Redis Streams with ``redis_url``, else the store's table), started and stopped by
the app's lifespan (gateway/app.py). With ``judges.workers: external`` the gateway runs none: ``gateway judges
worker`` processes do the work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass

from gateway.judge_queue_settings import EMBEDDED
from gateway.judge_settings import JudgesSettings
from gateway.store.evaluations import EvaluationStore
from gateway.store.traces import TraceStore
from judges.api import JudgesState
from judges.queue.base import JobQueue
from judges.worker.items import JobReader
from judges.worker.loop import JudgeWorker

logger = logging.getLogger("judges.worker")

EMBEDDED_GRACE_S = 5.0  # a stopping gateway gives its jobs in hand this long, then leaves them to be reclaimed


@dataclass(eq=False)
class EmbeddedWorker:
    """A running in-process worker: ``close()`` to stop it."""

    queue: JobQueue
    task: asyncio.Task[None]
    stop: asyncio.Event

    async def close(self) -> None:
        self.stop.set()
        try:
            await self.task
        except Exception:
            logger.exception("The embedded judge worker ended with an error")


def start_embedded_worker(
    settings: JudgesSettings, queue: JobQueue, judges: JudgesState, traces: TraceStore
) -> EmbeddedWorker | None:
    """The in-process worker on ``queue`` (the app's, closed by the app) when ``judges.workers`` is embedded;
    else None."""
    if settings.workers != EMBEDDED:
        return None
    reader = JobReader(judges.catalog, traces, EvaluationStore(judges.assessments.engine))
    consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    worker = JudgeWorker(
        queue,
        judges.runner,
        reader,
        settings.queue,
        consumer=consumer,
        concurrency=settings.concurrency,
        grace_s=EMBEDDED_GRACE_S,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="judge-worker")
    return EmbeddedWorker(queue, task, stop)
