"""Judge queue throughput: how fast ``gateway judges worker`` processes drain a queue of online judge jobs, from
the queue to committed assessments, on Redis Streams and on the store's queue (SQLite).

Run ``python loadtest/bench_judge_queue.py`` (``--quick`` for a smoke run). Imports nothing from ``gateway``:
it starts (subprocesses on free 127.0.0.1 ports) the fake upstream, then per backend a ``gateway serve`` with
one captured route ``chat``, a judge route ``judge`` (both on the fake upstream, which answers judge requests
at once), ``judges.online`` grading every ``chat`` call with ``safety`` and ``judges.workers: external``; it
makes ``--jobs`` chat calls (each becomes one queued job), waits until the queue holds them all, then starts
``--workers`` ``gateway judges worker`` processes and polls ``GET /api/judges/queue`` until it is empty.

The figure: jobs per second from the first job taken to the last one done (the queue's depth over time), every
job one judge call through the real proxy path (route, spans, trace summary) and one assessment written.
Issue 12's target: >= 1,000 jobs/s through Redis Streams with two worker processes on the 2-core machine.

``--backfill``: the same stored calls (no online rule), then an evaluation run over them (``POST
/api/evaluations`` with the trace filter ``{"route": "chat"}``, ``judges.max_trace_items`` = ``--jobs``): its dry
run timed first (the call count and the cost estimate, nothing enqueued), then the run with the workers already
started; the figure is items per second from the POST to the run's ``completed`` (the gateway plans, stores and
enqueues the items, the workers judge them, the gateway settles them every 0.5 s).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from llm_servers import UPSTREAM_KEY, UPSTREAM_KEY_ENV, UPSTREAM_MODEL, HttpServer, Layout, base_env, upstream_server
from procs import Server, Servers, free_port, log, terminate_on_sigterm

REDIS_URL = "redis://127.0.0.1:6379/0"
TARGET = 1000.0


class WorkerProcess(Server):
    """A ``gateway judges worker``: ready once its log says it started."""

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if "started" in self.log_tail(50):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start within {timeout:.0f}s:\n{self.log_tail()}")


def forget_redis_keys(prefix: str) -> None:
    """Delete the bench queue's keys (its streams, groups, retries, dead letters, pauses) from Redis."""
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def write_config(
    layout: Layout, upstream: str, backend: str, concurrency: int, prefix: str, backfill: int | None = None
) -> Path:
    target = {"base_url": f"{upstream}/v1", "model": UPSTREAM_MODEL, "api_key_env": UPSTREAM_KEY_ENV}
    config: dict[str, Any] = {
        "store_uri": f"sqlite:///{layout.workdir / backend}.db",
        "log_level": "info",
        "llm": {"routes": [{"name": "chat", "capture_content": True, "targets": [target]},
                           {"name": "judge", "timeout_s": 30, "targets": [target]}]},
        "judges": {
            "route": "judge", "workers": "external", "route_concurrency": concurrency,
            "queue": {"key_prefix": prefix},
            "online": [{"route": "chat", "judges": [{"name": "safety", "rate": 1}]}],
        },
    }  # fmt: skip
    if backend == "redis":
        config["redis_url"] = REDIS_URL
    if backfill is not None:  # no online judging: an evaluation run over the stored calls instead
        config["judges"].pop("online")
        config["judges"]["max_trace_items"] = backfill
    path = layout.workdir / f"gateway-{backend}.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def call(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def depth(base: str) -> int:
    return sum(entry["depth"] for entry in call("GET", f"{base}/api/judges/queue")["judges"])


def make_calls(base: str, count: int) -> None:
    def one(i: int) -> None:
        call("POST", f"{base}/v1/chat/completions",
             {"model": "chat", "messages": [{"role": "user", "content": f"Is {i} a safe number to say?"}]})  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


def sample_depth(base: str, poll_s: float, samples: list[tuple[float, int]]) -> None:
    """Append (time, depth) every ``poll_s`` until the queue is empty (at most 600 s)."""
    deadline = time.monotonic() + 600
    while True:
        left = depth(base)
        samples.append((time.monotonic(), left))
        if left == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{left} jobs left after 600 s")
        time.sleep(poll_s)


def run_backend(layout: Layout, upstream: str, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench-judge-queue:{uuid.uuid4().hex[:8]}:"
    config = write_config(layout, upstream, backend, args.concurrency, prefix)
    env = {**base_env(layout), UPSTREAM_KEY_ENV: UPSTREAM_KEY}
    servers = Servers(grace=15)
    try:
        port = free_port()
        argv = [str(layout.bin_dir / "gateway"), "serve", "--config", str(config), "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--log-level", "warning"]  # fmt: skip
        gateway = servers.start(HttpServer(f"gateway-{backend}", argv, env, layout.workdir, port,
                                           layout.log(f"gateway-{backend}")), 120)  # fmt: skip
        log(f"{backend}: {args.jobs} chat calls, each one queued judge job")
        make_calls(gateway.base, args.jobs)
        deadline = time.monotonic() + 120
        while (queued := depth(gateway.base)) < args.jobs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{backend}: only {queued} of {args.jobs} jobs reached the queue")
            time.sleep(0.1)
        log(f"{backend}: {queued} jobs queued; starting {args.workers} worker(s), concurrency {args.concurrency}")
        samples: list[tuple[float, int]] = []
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the depth sampled from before the first worker
            sampling = pool.submit(sample_depth, gateway.base, args.poll, samples)
            for index in range(args.workers):
                worker_argv = [str(layout.bin_dir / "gateway"), "judges", "worker", "--config", str(config),
                               "--concurrency", str(args.concurrency)]  # fmt: skip
                servers.start(WorkerProcess(f"worker-{backend}-{index}", worker_argv, env, layout.workdir, 0,
                                            layout.log(f"worker-{backend}-{index}")), 60)  # fmt: skip
            sampling.result(timeout=600)
    finally:
        servers.stop_all()
        if backend == "redis":
            forget_redis_keys(prefix)
    started = next((i for i, (_, left) in enumerate(samples) if left < queued), len(samples) - 1)
    first_t, first_left = samples[max(0, started - 1)]
    last_t = samples[-1][0]
    drained = first_left
    seconds = last_t - first_t
    return {"backend": backend, "jobs": queued, "drained": drained, "seconds": seconds,
            "jobs_per_s": drained / seconds if seconds > 0 else 0.0}  # fmt: skip


def run_backfill(layout: Layout, upstream: str, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench-judge-queue:{uuid.uuid4().hex[:8]}:"
    config = write_config(layout, upstream, backend, args.concurrency, prefix, backfill=args.jobs)
    env = {**base_env(layout), UPSTREAM_KEY_ENV: UPSTREAM_KEY}
    servers = Servers(grace=15)
    body = {"judges": ["safety"], "traces": {"route": "chat"}, "name": "bench backfill"}
    try:
        port = free_port()
        argv = [str(layout.bin_dir / "gateway"), "serve", "--config", str(config), "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--log-level", "warning"]  # fmt: skip
        gateway = servers.start(HttpServer(f"gateway-{backend}", argv, env, layout.workdir, port,
                                           layout.log(f"gateway-{backend}")), 120)  # fmt: skip
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
        for index in range(args.workers):
            worker_argv = [str(layout.bin_dir / "gateway"), "judges", "worker", "--config", str(config),
                           "--concurrency", str(args.concurrency)]  # fmt: skip
            servers.start(WorkerProcess(f"worker-{backend}-{index}", worker_argv, env, layout.workdir, 0,
                                        layout.log(f"worker-{backend}-{index}")), 60)  # fmt: skip
        started = time.perf_counter()
        answer = call("POST", f"{gateway.base}/api/evaluations", body)
        posted_s = time.perf_counter() - started
        view_url = f"{gateway.base}/api/evaluations/{answer['id']}?items=false"
        while (view := call("GET", view_url))["status"] not in ("completed", "cancelled", "failed"):
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"{backend}: the run is still {view['status']} after 600 s: {view['progress']}")
            time.sleep(args.poll)
        seconds = time.perf_counter() - started
    finally:
        servers.stop_all()
        if backend == "redis":
            forget_redis_keys(prefix)
    items = view["progress"]["total"]
    return {"backend": backend, "items": items, "status": view["status"], "errors": view["progress"]["errors"],
            "dry_run_s": dry_s, "post_s": posted_s, "seconds": seconds, "items_per_s": items / seconds}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-judge-queue-"))
    layout = Layout(workdir=workdir, bin_dir=args.bin_dir)
    servers = Servers(grace=15)
    results = []
    try:
        with terminate_on_sigterm():
            upstream = servers.start(upstream_server(layout, None), 120)
            for backend in args.backends:
                if args.backfill:
                    results.append(run_backfill(layout, upstream.base, backend, args))
                    log(f"{backend}: {results[-1]['items_per_s']:.0f} items/s")
                else:
                    results.append(run_backend(layout, upstream.base, backend, args))
                    log(f"{backend}: {results[-1]['jobs_per_s']:.0f} jobs/s")
    finally:
        servers.stop_all()
        if args.keep_workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.backfill:
        print(f"\nA backfill of {args.jobs} stored calls (judge safety), {args.workers} `gateway judges worker` "
              f"process(es), --concurrency {args.concurrency}, {os.cpu_count()} cpu(s)\n")  # fmt: skip
        print("| queue | items | status | errors | dry run s | POST s | POST to completed s | items/s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['backend']} | {r['items']} | {r['status']} | {r['errors']} | {r['dry_run_s']:.2f} | "
                  f"{r['post_s']:.2f} | {r['seconds']:.2f} | {r['items_per_s']:.0f} |")  # fmt: skip
        return 0
    print(f"\n{args.jobs} online jobs (judge safety), {args.workers} `gateway judges worker` process(es), "
          f"--concurrency {args.concurrency}, {os.cpu_count()} cpu(s)\n")  # fmt: skip
    print("| queue | jobs | drained in s | jobs/s |")
    print("|---|---|---|---|")
    for result in results:
        print(f"| {result['backend']} | {result['jobs']} | {result['seconds']:.2f} | {result['jobs_per_s']:.0f} |")
    for result in results:
        if result["backend"] == "redis":
            verdict = "met" if result["jobs_per_s"] >= TARGET else "MISSED"
            print(f"\n- Redis Streams: {result['jobs_per_s']:.0f} jobs/s (target >= {TARGET:.0f}: {verdict})")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="queued jobs per backend (default 3000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="jobs in hand per worker (default 32)")
    parser.add_argument("--backends", type=lambda text: text.split(","), default=["redis", "store"],
                        help="comma-separated: redis, store (default both)")  # fmt: skip
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between depth polls (default 0.05)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 jobs")
    parser.add_argument("--backfill", action="store_true",
                        help="an evaluation run over the stored calls instead of online jobs")  # fmt: skip
    parser.add_argument("--keep-workdir", action="store_true", help="keep the scratch dir (stores, logs)")
    parser.add_argument(
        "--bin-dir", type=Path, default=Path(sys.executable).parent, help="venv bin with python and gateway"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs = 300
    return args


if __name__ == "__main__":
    sys.exit(main())
