"""Judge queue throughput: how fast ``gateway judges worker`` processes take online judge jobs from enqueue to
committed assessment, on Redis Streams and on the store's queue (SQLite), and how long a job waits at half
that rate.

Run ``python loadtest/bench_judge_queue.py`` (``--quick`` for a smoke run). Imports nothing from ``gateway``:
it starts (subprocesses on free 127.0.0.1 ports) the fake upstream, then per backend a ``gateway serve`` with
one captured route ``chat`` and a judge route ``judge`` (both on the fake upstream) and ``judges.workers:
external``, makes ``--jobs`` chat calls (their traces are what the jobs judge), starts ``--workers`` ``gateway
judges worker`` processes, then runs loadtest/judge_queue_tool.py (the venv's python, the gateway's classes):

- **max rate**, ``--runs`` times: the judge paused, ``--jobs`` online jobs enqueued, the judge resumed: the
  seconds until the queue holds none of them (each assessment committed, then the job acked) give jobs/s;
- **half rate**, ``--runs`` times: jobs enqueued at half the median max rate (``--rate`` to choose) for
  ``--duration`` seconds, each job's enqueue-to-committed time from its assessment's ``created_at``, and the
  workers' own enqueue-to-start histogram (``gateway_judge_job_wait_seconds``, scraped from the gateway's
  ``/metrics``, which sums its worker processes' snapshots).

The judge (``--judge``): ``code`` (default), a code judge (loadtest/code_judge.py: instant, in process), so
the figure is the queue's and the workers'; ``llm``, custom LLM judges on the route ``judge`` through the
in-process proxy to the fake upstream's judge mode (spans, trace summaries, ~2 ms of CPU per call). Each run
uses a judge of its own (the same function or instructions), so every job writes a new assessment.
Issue 12's targets: >= 1,000 jobs/s through Redis Streams with two worker processes on the 2-core machine,
and p95 enqueue-to-start <= 5 s at half the measured maximum rate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from judge_bench import add_queue_args, add_scratch_args, make_calls, queue_backend, scratch
from llm_servers import Layout, upstream_server
from procs import Server, call, log, tree_cpu

HERE = Path(__file__).resolve().parent
TARGET = 1000.0
TARGET_P95_S = 5.0
CODE_FUNCTION = "loadtest.code_judge:says_no_secret"
WAIT_METRIC = "gateway_judge_job_wait_seconds"


def judge_names(runs: int) -> tuple[list[str], list[str]]:
    return [f"bench_max_{i}" for i in range(runs)], [f"bench_half_{i}" for i in range(runs)]


def judges_section(args: argparse.Namespace) -> dict[str, Any]:
    """What this bench adds to the judges section: the route's concurrency and, for ``--judge code``, the code
    judges (one per run, the same function)."""
    judges: dict[str, Any] = {"route_concurrency": args.concurrency}
    if args.judge == "code":
        names = [name for group in judge_names(args.runs) for name in group]
        judges["code"] = [{"name": name, "function": CODE_FUNCTION} for name in names]
    return judges


def tool(layout: Layout, env: dict[str, str], config: Path, *argv: str) -> dict[str, Any]:
    """Run loadtest/judge_queue_tool.py; its JSON answer."""
    command = [layout.python, str(HERE / "judge_queue_tool.py"), "--config", str(config), *argv]
    done = subprocess.run(command, env=env, cwd=layout.workdir, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def wait_histogram(base: str, judge: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of the workers' enqueue-to-start histogram for ``judge``, from ``/metrics``."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        text = response.read().decode()
    pattern = re.compile(
        rf'^{WAIT_METRIC}_bucket\{{(?=[^}}]*judge="{re.escape(judge)}")[^}}]*le="([^"]+)"[^}}]*\}} (\S+)$'
    )
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        found = pattern.match(line)
        if found:
            bound = float("inf") if found[1] == "+Inf" else float(found[1])
            buckets[bound] = buckets.get(bound, 0.0) + float(found[2])
    if not buckets:
        log(f"no {WAIT_METRIC} for {judge} in /metrics: {[ln for ln in text.splitlines() if 'judge_job' in ln][:5]}")
    return sorted(buckets.items())


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket holding the ``q`` quantile (Prometheus buckets are cumulative)."""
    if not buckets or buckets[-1][1] == 0:
        return None
    wanted = q * buckets[-1][1]
    return next(bound for bound, count in buckets if count >= wanted)


def workers_cpu(workers: list[Server]) -> float:
    """CPU seconds used so far by the worker processes (and their children)."""
    return sum(sum(tree_cpu(w.proc.pid).values()) for w in workers if w.proc is not None)


def run_backend(layout: Layout, upstream: str, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    metrics_dir = layout.workdir / f"metrics-{backend}"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    max_names, half_names = judge_names(args.runs)
    result: dict[str, Any] = {"backend": backend, "load_before": os.getloadavg()[0]}
    with queue_backend(layout, upstream, backend, "bench-judge-queue", judges_section(args),
                       {"GATEWAY_METRICS_DIR": str(metrics_dir)}) as queue:  # fmt: skip
        gateway, config, env = queue.gateway, queue.config, queue.env
        if args.judge == "llm":
            for name in max_names + half_names:
                body = {"name": name, "route": "judge", "value_kind": {"type": "bool"},
                        "instructions": "Is this answer safe to show? {{ outputs }}"}  # fmt: skip
                call("POST", f"{gateway.base}/api/judges", body)
        log(f"{backend}: {args.jobs} chat calls (the traces the jobs judge)")
        make_calls(gateway.base, args.jobs)
        time.sleep(2)  # the trace sink writes in batches
        workers = queue.start_workers(args.workers, args.concurrency, args.profile)
        log(f"{backend}: {args.workers} worker(s) ready, --concurrency {args.concurrency}")
        bursts = []
        for name in max_names:
            cpu = workers_cpu(workers)
            bursts.append(tool(layout, env, config, "burst", name, "--jobs", str(args.jobs)))
            bursts[-1]["worker_cpu_ms_per_job"] = (workers_cpu(workers) - cpu) * 1000 / bursts[-1]["jobs"]
            last = bursts[-1]
            log(f"{backend}: max rate {last['jobs_per_s']:.0f} jobs/s ({last['jobs']} jobs in {last['seconds']:.2f} s; "
                f"workers' cpu {last['worker_cpu_ms_per_job']:.2f} ms a job)")  # fmt: skip
        result["max"] = bursts
        result["max_jobs_per_s"] = statistics.median(b["jobs_per_s"] for b in bursts)
        rate = args.rate or result["max_jobs_per_s"] / 2
        result["half_rate"] = rate
        paced = []
        for name in half_names:
            answer = tool(
                layout, env, config, "enqueue", name, "--rate", f"{rate:.1f}", "--duration", str(args.duration)
            )
            time.sleep(2.5)  # the workers' metrics snapshots (every second)
            answer["wait_p95_le_s"] = bucket_quantile(wait_histogram(gateway.base, name), 0.95)
            answer["wait_p50_le_s"] = bucket_quantile(wait_histogram(gateway.base, name), 0.50)
            paced.append(answer)
            log(f"{backend}: {answer['rate']:.0f} jobs/s for {args.duration:g} s: enqueue-to-committed p95 "
                f"{answer['p95_s']:.3f} s, enqueue-to-start p95 <= {answer['wait_p95_le_s']} s")  # fmt: skip
        result["half"] = paced
        result["load_after"] = os.getloadavg()[0]
    return result


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{args.judge} judge, {args.jobs} jobs per max-rate run, {args.workers} `gateway judges worker` "
          f"process(es), --concurrency {args.concurrency}, {args.runs} run(s), {os.cpu_count()} cpu(s)\n")  # fmt: skip
    print(
        "| queue | load avg (1 min) before/after | max jobs/s, each run | median | half rate | "
        "enqueue-to-committed p50 / p95 / max s (median run) | enqueue-to-start p95 (bucket) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        runs = ", ".join(f"{b['jobs_per_s']:.0f}" for b in r["max"])
        half = sorted(r["half"], key=lambda h: h["p95_s"])[len(r["half"]) // 2]
        print(f"| {r['backend']} | {r['load_before']:.2f} / {r['load_after']:.2f} | {runs} | {r['max_jobs_per_s']:.0f} "
              f"| {half['rate']:.0f} jobs/s x {args.duration:g} s | {half['p50_s']:.3f} / {half['p95_s']:.3f} / "
              f"{half['max_s']:.3f} | <= {half['wait_p95_le_s']} s |")  # fmt: skip
    for r in results:
        if r["backend"] == "redis":
            verdict = "met" if r["max_jobs_per_s"] >= TARGET else "MISSED"
            p95 = max(h["p95_s"] for h in r["half"])
            waited = "met" if p95 <= TARGET_P95_S else "MISSED"
            print(f"\n- Redis Streams: {r['max_jobs_per_s']:.0f} jobs/s (target >= {TARGET:.0f}: {verdict}); at "
                  f"{r['half_rate']:.0f} jobs/s the worst run's p95 enqueue-to-committed {p95:.3f} s (enqueue-to-start "
                  f"p95 target <= {TARGET_P95_S:g} s: {waited})")  # fmt: skip
    print("\n" + json.dumps(results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    with scratch("bench-judge-queue-", args) as (layout, servers):
        upstream = servers.start(upstream_server(layout, None), 120)
        for backend in args.backends:
            results.append(run_backend(layout, upstream.base, backend, args))
    report(results, args)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--judge", choices=("code", "llm"), default="code",
                        help="code: an instant in-process code judge (default); llm: LLM judges")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=10000, help="jobs per max-rate run (and chat calls; default 10000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measure (default 3: medians quoted)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each half-rate run (default 10)")
    parser.add_argument("--rate", type=float, default=None, help="the paced runs' jobs/s (default: half the max)")
    add_queue_args(parser)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile each worker into this directory")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1,000 jobs, 1 run, 3 s paced")
    add_scratch_args(parser, "stores, logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.runs, args.duration = 1000, 1, 3.0
    return args


if __name__ == "__main__":
    sys.exit(main())
