"""A backfill through the judge queue: an evaluation run over stored LLM calls, judged by ``gateway judges worker``
processes, on Redis Streams and on the store's queue (SQLite).

Run ``python loadtest/bench_backfill.py`` (``--quick`` for a smoke run). Imports nothing from ``gateway``: it
starts (subprocesses on free 127.0.0.1 ports) the fake upstream, then per backend a ``gateway serve`` with one
captured route ``chat`` and a judge route ``judge`` (both on the fake upstream) and ``judges.workers:
external``, makes ``--jobs`` chat calls (stored with their content), then an evaluation run over them (``POST
/api/evaluations`` with the trace filter ``{"route": "chat"}`` and the built-in ``safety`` judge,
``judges.max_trace_items`` = ``--jobs``): its dry run timed first (the call count and the cost estimate, nothing
enqueued), then the run with ``--workers`` workers already started. The figure is items per second from the
POST to the run's ``completed`` (the gateway plans, stores and enqueues the items, the workers judge them
through the in-process proxy to the fake upstream's judge mode, the gateway settles them every 0.5 s).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
from typing import Any

from judge_bench import add_queue_args, add_scratch_args, make_calls, queue_backend, scratch
from llm_servers import Layout, upstream_server
from procs import call, log


def depth(base: str) -> int:
    return sum(entry["depth"] for entry in call("GET", f"{base}/api/judges/queue")["judges"])


def run_backfill(layout: Layout, upstream: str, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    body = {"judges": ["safety"], "traces": {"route": "chat"}, "name": "bench backfill"}
    judges = {"route_concurrency": args.concurrency, "max_trace_items": args.jobs}
    with queue_backend(layout, upstream, backend, "bench-backfill", judges) as queue:
        gateway = queue.gateway
        log(f"{backend}: {args.jobs} chat calls, stored with their content")
        make_calls(gateway.base, args.jobs)
        deadline = time.monotonic() + 120
        while True:  # the trace sink writes in batches: until the dry run sees every call
            started = time.perf_counter()
            try:
                dry = call("POST", f"{gateway.base}/api/evaluations", {**body, "dry_run": True})
            except urllib.error.HTTPError as exc:  # 400: no stored call matches yet
                if exc.code != 400 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            dry_s = time.perf_counter() - started
            if dry["items"] >= args.jobs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert depth(gateway.base) == 0, "a dry run enqueued jobs"
        log(f"{backend}: dry run {dry['items']} items, {dry['judge_calls']} judge calls, "
            f"cost {dry['estimate']['cost_usd']}, in {dry_s:.2f} s; nothing queued")  # fmt: skip
        queue.start_workers(args.workers, args.concurrency)
        started = time.perf_counter()
        answer = call("POST", f"{gateway.base}/api/evaluations", body)
        posted_s = time.perf_counter() - started
        view_url = f"{gateway.base}/api/evaluations/{answer['id']}?items=false"
        while (view := call("GET", view_url))["status"] not in ("completed", "cancelled", "failed"):
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"{backend}: the run is still {view['status']} after 600 s: {view['progress']}")
            time.sleep(args.poll)
        seconds = time.perf_counter() - started
    items = view["progress"]["total"]
    return {"backend": backend, "items": items, "status": view["status"], "errors": view["progress"]["errors"],
            "dry_run_s": dry_s, "post_s": posted_s, "seconds": seconds, "items_per_s": items / seconds}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    with scratch("bench-backfill-", args) as (layout, servers):
        upstream = servers.start(upstream_server(layout, None), 120)
        for backend in args.backends:
            results.append(run_backfill(layout, upstream.base, backend, args))
            log(f"{backend}: {results[-1]['items_per_s']:.0f} items/s")
    print(f"\nA backfill of {args.jobs} stored calls (judge safety), {args.workers} `gateway judges worker` "
          f"process(es), --concurrency {args.concurrency}, {os.cpu_count()} cpu(s)\n")  # fmt: skip
    print("| queue | items | status | errors | dry run s | POST s | POST to completed s | items/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['items']} | {r['status']} | {r['errors']} | {r['dry_run_s']:.2f} | "
              f"{r['post_s']:.2f} | {r['seconds']:.2f} | {r['items_per_s']:.0f} |")  # fmt: skip
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10000, help="stored calls, the run's items (default 10000)")
    add_queue_args(parser)
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between polls of the run (default 0.2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 calls")
    add_scratch_args(parser, "stores, logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs = 300
    return args


if __name__ == "__main__":
    sys.exit(main())
