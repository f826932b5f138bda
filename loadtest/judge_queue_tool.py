"""The judge queue benchmark's helper (loadtest/bench_judge_queue.py runs it with the venv's python): what the
benchmark does on the queue and the store directly, with the gateway's own classes and its settings file.

- ``burst JUDGE --jobs N``: the judge paused, N online jobs of JUDGE enqueued on the stored calls of route
  ``chat``, then resumed: print JSON with the seconds from the resume until the queue holds none of them (every
  assessment committed: a job is acked only after) and the jobs per second that makes;
- ``enqueue JUDGE --rate R --duration S``: enqueue online jobs of JUDGE on the stored calls of route ``chat``
  at R jobs/s (batches every 10 ms) for S seconds, wait until the workers have committed them all, then print
  JSON: jobs, the achieved rate, and enqueue-to-committed seconds per job (each assessment's ``created_at``
  against its job's ``enqueued_at``): p50, p95, p99, max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.config import load_settings
from gateway.store.engine import begin_read, open_engine
from gateway.store.schema import assessments, trace_summaries
from judges.queue.choice import open_judge_queue
from judges.queue.jobs import JudgeJob

TICK_S = 0.01


def targets(store_uri: str) -> list[tuple[str, str]]:
    engine = open_engine(store_uri)
    try:
        query = sa.select(trace_summaries.c.trace_id, trace_summaries.c.span_id).where(
            trace_summaries.c.route == "chat"
        )
        with begin_read(engine) as conn:
            return [(row.trace_id, row.span_id) for row in conn.execute(query.order_by(trace_summaries.c.started_at))]
    finally:
        engine.dispose()


def committed(store_uri: str, judge: str) -> dict[str, int]:
    """trace id -> created_at (ms) of the judge's assessments."""
    engine = open_engine(store_uri)
    try:
        query = sa.select(assessments.c.trace_id, assessments.c.created_at).where(assessments.c.name == judge)
        with begin_read(engine) as conn:
            return {row.trace_id: row.created_at for row in conn.execute(query)}
    finally:
        engine.dispose()


async def depth(queue: Any, judge: str) -> int:
    return sum(s.depth for s in await queue.stats() if s.judge == judge)


async def burst(config: Path, judge: str, count: int) -> dict[str, Any]:
    settings = load_settings(config_file=config)
    calls = targets(settings.store_uri)[:count]
    queue = open_judge_queue(settings)
    try:
        await queue.pause(judge, "paused by the benchmark while it enqueues")
        now = time.time()
        for start in range(0, len(calls), 1000):
            await queue.enqueue([JudgeJob(kind="online", judge=judge, enqueued_at=now, trace_id=t, span_id=s)
                                 for t, s in calls[start : start + 1000]])  # fmt: skip
        resumed = time.monotonic()
        await queue.resume(judge)
        deadline = resumed + 600
        while await depth(queue, judge) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("jobs left after 600 s")
            await asyncio.sleep(0.01)
        seconds = time.monotonic() - resumed
    finally:
        await queue.close()
    done = committed(settings.store_uri, judge)
    return {"jobs": len(calls), "committed": len(done), "seconds": seconds, "jobs_per_s": len(calls) / seconds}


async def enqueue(config: Path, judge: str, rate: float, duration_s: float) -> dict[str, Any]:
    settings = load_settings(config_file=config)
    calls = targets(settings.store_uri)
    wanted = min(len(calls), int(rate * duration_s))
    queue = open_judge_queue(settings)
    enqueued_at: dict[str, float] = {}
    try:
        started = time.monotonic()
        sent = 0
        while sent < wanted:
            due = min(wanted, int((time.monotonic() - started) * rate) + 1)
            if due > sent:
                now = time.time()
                jobs = [JudgeJob(kind="online", judge=judge, enqueued_at=now, trace_id=t, span_id=s)
                        for t, s in calls[sent:due]]  # fmt: skip
                await queue.enqueue(jobs)
                enqueued_at.update((job.trace_id or "", now) for job in jobs)
                sent = due
            await asyncio.sleep(TICK_S)
        took = time.monotonic() - started
        deadline = time.monotonic() + 300
        while await depth(queue, judge) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("jobs left after 300 s")
            await asyncio.sleep(0.1)
    finally:
        await queue.close()
    done = committed(settings.store_uri, judge)
    latencies = sorted(max(0.0, done[t] / 1000 - at) for t, at in enqueued_at.items() if t in done)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"jobs": sent, "committed": len(latencies), "rate": sent / took if took else 0.0, "p50_s": cuts[49],
            "p95_s": cuts[94], "p99_s": cuts[98], "max_s": latencies[-1] if latencies else 0.0}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    burst_parser = sub.add_parser("burst")
    burst_parser.add_argument("judge")
    burst_parser.add_argument("--jobs", type=int, required=True)
    paced = sub.add_parser("enqueue")
    paced.add_argument("judge")
    paced.add_argument("--rate", type=float, required=True)
    paced.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)
    if args.command == "burst":
        print(json.dumps(asyncio.run(burst(args.config, args.judge, args.jobs))))
        return 0
    print(json.dumps(asyncio.run(enqueue(args.config, args.judge, args.rate, args.duration))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
