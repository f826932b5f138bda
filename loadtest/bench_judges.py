"""Judge throughput: an evaluation run of ``--items`` items (1,000) through a real ``gateway serve``, every judge
call through the real proxy path (route lookup, dispatch, spans, metrics, trace summary, assessment write)
to the fake upstream's judge mode, which answers at once.

Run ``python loadtest/bench_judges.py`` (``make bench-judges``), ``--quick`` for a smoke run. Imports nothing
from ``gateway``: it starts (each a subprocess on a free 127.0.0.1 port, see ``llm_servers.py``) the fake
upstream and ``gateway serve`` with one route on it (``judges.route``), then per repeat posts one evaluation
(``POST /api/evaluations``, items with outputs, ``--judges``) and polls it until it has completed.

The figure: judge calls per second of each run, ``judge_calls / (finished_at - started_at)`` from the run's
own timestamps (the server's clock, queueing included), and the wall time from the POST to the last poll.
Issue 11's target: >= 300 judge calls/s on the 2-core machine. With one worker the gateway is pinned to
the first cpu and the fake upstream to the others.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from judge_bench import add_scratch_args, scratch
from llm_servers import UPSTREAM_KEY, UPSTREAM_KEY_ENV, UPSTREAM_MODEL, HttpServer, Layout, base_env, upstream_server
from procs import call, free_port, log

JUDGE_ROUTE = "judge"
TARGET = 300.0


def gateway_judges_server(
    layout: Layout, upstream: str, workers: int, cpus: list[int] | None, concurrency: int
) -> HttpServer:
    port = free_port()
    config = {
        "llm": {
            "routes": [
                {
                    "name": JUDGE_ROUTE,
                    "timeout_s": 30,
                    "targets": [
                        {"base_url": f"{upstream}/v1", "model": UPSTREAM_MODEL, "api_key_env": UPSTREAM_KEY_ENV}
                    ],
                }
            ]
        },
        "judges": {"route": JUDGE_ROUTE, "concurrency": concurrency, "route_concurrency": concurrency},
    }
    path = layout.workdir / "gateway.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    env = base_env(layout)
    env.update({"GATEWAY_STORE_URI": f"sqlite:///{layout.store_db}",
                "GATEWAY_ARTIFACT_ROOTS": str(layout.workdir / "models"), UPSTREAM_KEY_ENV: UPSTREAM_KEY})  # fmt: skip
    argv = [
        str(layout.bin_dir / "gateway"), "serve", "--config", str(path), "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip
    return HttpServer("gateway", argv, env, layout.workdir, port, layout.log("gateway"), cpus)


def items(count: int) -> list[dict[str, Any]]:
    """Questions with short answers (the fake judge's heuristics say yes to most; the figures do not care)."""
    return [
        {
            "inputs": {"question": f"What is {i} plus {i}?"},
            "outputs": f"{i} plus {i} is {2 * i}.",
            "expectations": {"expected_response": f"{2 * i}"},
        }
        for i in range(count)
    ]


def run_once(base: str, count: int, judges: list[str], poll_s: float) -> dict[str, Any]:
    started = time.monotonic()
    answer = call("POST", f"{base}/api/evaluations", {"judges": judges, "items": items(count)})
    evaluation_id = answer["id"]
    deadline = started + 600
    while True:
        view = call("GET", f"{base}/api/evaluations/{evaluation_id}?items=false")
        if view["status"] in ("completed", "cancelled", "failed"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"evaluation {evaluation_id} did not finish in 600 s: {view['progress']}")
        time.sleep(poll_s)
    wall = time.monotonic() - started
    calls = answer["judge_calls"]
    server_s = (view["finished_at"] - view["started_at"]) / 1000
    errors = sum(aggregate["errors"] for aggregate in view["aggregates"].values())
    return {"id": evaluation_id, "status": view["status"], "judge_calls": calls, "server_s": server_s,
            "wall_s": wall, "calls_per_s": calls / server_s if server_s > 0 else 0.0,
            "wall_calls_per_s": calls / wall, "judge_errors": errors,
            "item_errors": view["progress"]["errors"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spare = sorted(os.sched_getaffinity(0))
    gateway_cpus, aux_cpus = (spare[:1], spare[1:]) if len(spare) >= 2 and args.workers == 1 else (None, None)
    runs: list[dict[str, Any]] = []
    with scratch("bench-judges-", args) as (layout, servers):
        (layout.workdir / "models").mkdir()
        upstream = servers.start(upstream_server(layout, aux_cpus), 120)
        gateway = servers.start(
            gateway_judges_server(layout, upstream.base, args.workers, gateway_cpus, args.concurrency), 120
        )
        log(f"warm-up: {args.warmup} items")
        run_once(gateway.base, args.warmup, args.judges, args.poll)
        for repeat in range(args.repeat):
            log(f"repeat {repeat + 1}/{args.repeat}: {args.items} items x {len(args.judges)} judge(s)")
            runs.append(run_once(gateway.base, args.items, args.judges, args.poll))
            log(f"  {runs[-1]['calls_per_s']:.0f} judge calls/s ({runs[-1]['status']})")
    report(runs, args)
    ok = all(run["status"] == "completed" and run["judge_errors"] == 0 for run in runs)
    return 0 if ok else 1


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{args.items} items x {len(args.judges)} judge(s) ({', '.join(args.judges)}), {args.workers} gateway "
          f"worker(s), judges.concurrency {args.concurrency}, {len(runs)} run(s)\n")  # fmt: skip
    print("| run | judge calls | server s | judge calls/s | wall s | calls/s by wall | errors |")
    print("|---|---|---|---|---|---|---|")
    for number, run in enumerate(runs, start=1):
        print(f"| {number} | {run['judge_calls']} | {run['server_s']:.2f} | {run['calls_per_s']:.0f} | "
              f"{run['wall_s']:.2f} | {run['wall_calls_per_s']:.0f} | {run['judge_errors']} |")  # fmt: skip
    median = statistics.median(run["calls_per_s"] for run in runs)
    verdict = "met" if median >= TARGET else "MISSED"
    print(f"\n- median {median:.0f} judge calls/s (target >= {TARGET:.0f}: {verdict})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="items per evaluation (default 1000)")
    parser.add_argument("--judges", type=lambda text: text.split(","), default=["relevance_to_query"],
                        help="comma-separated built-in judges (default relevance_to_query)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="evaluations measured (default 3)")
    parser.add_argument("--warmup", type=int, default=100, help="items of the warm-up evaluation (default 100)")
    parser.add_argument("--workers", type=int, default=1, help="gateway workers (default 1: runs are per process)")
    parser.add_argument("--concurrency", type=int, default=16, help="judges.concurrency (default 16)")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between polls (default 0.25)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 items, 1 repeat")
    add_scratch_args(parser, "store, logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.repeat, args.warmup = 200, 1, 20
    return args


if __name__ == "__main__":
    sys.exit(main())
