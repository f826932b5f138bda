"""``gateway judges worker [--concurrency N]``: a process that runs queued judge jobs.

It builds what the gateway's lifespan builds for judges, with the same functions (gateway/app.py's
``open_prompts`` and ``open_llm_proxy``, judges/api.py's ``start_judges``): the store, the telemetry (the
judge calls' spans and trace summaries), the prompt cache (refreshed every ``serving.refresh_interval_s``),
the LLM proxy and the judge catalog and runner; then a JudgeWorker (judges/worker/loop.py) over the judge
queue (judges/queue/choice.py): Redis Streams at ``redis_url``, else the store's own queue table (one SQLite
file on one machine, or a PostgreSQL every replica shares). Any number of these processes share the queue.

SIGTERM or SIGINT: no more claims; the jobs in hand get ``--grace-s`` to finish (else they stay pending
in the queue, reclaimed by another worker after ``judges.queue.min_idle_s``); exit 0. The last log line
sums what the worker did per outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import uuid

from gateway import metrics as gateway_metrics
from gateway.app import configure_logging, open_llm_proxy, open_prompts
from gateway.config import Settings
from gateway.keys import GatewayKeys
from gateway.store.assessments import AssessmentStore
from gateway.store.evaluations import EvaluationStore
from gateway.store.registry import RegistryStore
from gateway.telemetry.setup import build_telemetry
from judges.api import JudgesState, start_judges
from judges.queue.choice import open_judge_queue
from judges.worker import metrics
from judges.worker.items import JobReader
from judges.worker.loop import JudgeWorker
from prompts.linking import make_renderer

logger = logging.getLogger("judges.worker")

DEFAULT_GRACE_S = 10.0


def run_worker(settings: Settings, *, concurrency: int, grace_s: float = DEFAULT_GRACE_S) -> int:
    """The command's body: its exit status."""
    configure_logging(settings.log_level)
    asyncio.run(_serve(settings, concurrency, grace_s))
    return 0


async def _serve(settings: Settings, concurrency: int, grace_s: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    store = await asyncio.to_thread(RegistryStore.open, settings.store_uri)
    telemetry = build_telemetry(settings.telemetry, store.engine)
    prompt_cache, prompts = await open_prompts(store)
    proxy = await open_llm_proxy(settings, GatewayKeys(settings.auth), telemetry, make_renderer(prompt_cache))
    queue_settings = settings.judges.queue
    queue = open_judge_queue(settings, store.engine)
    tasks = [asyncio.create_task(prompt_cache.run_refresher(settings.serving.refresh_interval_s))]
    directory = gateway_metrics.metrics_dir()
    if directory is not None:  # beside a gateway's workers: its /metrics counts this process too
        tasks.append(asyncio.create_task(gateway_metrics.run_snapshot_writer(directory)))
    consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    judges: JudgesState | None = None
    try:
        judges = await start_judges(
            settings.judges, prompts, proxy, AssessmentStore(store.engine), telemetry.events, settings.llm.routes
        )
        reader = JobReader(judges.catalog, telemetry.traces, EvaluationStore(store.engine))
        worker = JudgeWorker(
            queue, judges.runner, reader, queue_settings, consumer=consumer, concurrency=concurrency, grace_s=grace_s
        )
        logger.info("Judge worker %s started (concurrency %d, queue in %s)", consumer, concurrency, queue.kind)
        await worker.run(stop)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if judges is not None:  # what is queued for MLflow (judges.export.mlflow), within the telemetry bound
            await judges.close(settings.telemetry.shutdown_timeout_s)
        await queue.close()
        await proxy.close()
        await asyncio.to_thread(telemetry.shutdown)
        await asyncio.to_thread(store.close)
    logger.info("Judge worker %s stopped; jobs by outcome: %s", consumer, json.dumps(outcomes()))


def outcomes() -> dict[str, int]:
    """The jobs this process finished, by outcome (summed over judges), and its retries and dead letters."""
    totals: dict[str, int] = {}
    for labels, value in metrics.JOBS.samples():
        totals[labels[1]] = totals.get(labels[1], 0) + int(value)
    for labels, value in metrics.RETRIED.samples():
        key = f"retried_{labels[1]}"
        totals[key] = totals.get(key, 0) + int(value)
    for labels, value in metrics.DUPLICATE_CALLS.samples():
        key = f"duplicate_calls_{labels[1]}"
        totals[key] = totals.get(key, 0) + int(value)
    totals["dead_letters"] = int(sum(value for _, value in metrics.DEAD_LETTERS.samples()))
    return totals
