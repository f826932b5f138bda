"""RSS soak: drive N requests at a gateway and report each worker's memory after warm-up and at the end.

    python loadtest/soak.py                        # 1,000,000 iris requests, 2 workers, 64 conns
    python loadtest/soak.py --requests 200000 --model mlp --rows 100
    python loadtest/soak.py --url http://127.0.0.1:8080/invocations --pid 12345   # a running gateway

Without ``--url`` it builds the model package, registers it in a scratch store and starts
``gateway serve --workers W`` on a free 127.0.0.1 port (batching per ``--batching``), like the
bench. Load comes from ``wrk -t1`` (or ``loadgen.py``) in chunks of at most ``--chunk-seconds``;
between chunks it reads ``VmRSS`` from ``/proc/<pid>/status`` of every uvicorn worker process
(the children started through multiprocessing's spawn, or the server itself with one worker).
First ``--warmup-requests`` requests, then the RSS baseline, then ``--requests`` more; the report
gives each worker's RSS after warm-up, its peak and its RSS at the end, and the % change.
Imports nothing from ``gateway``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from drivers import probe, run_load, uses_wrk
from procs import Servers, log, rss_kib, terminate_on_sigterm, uvicorn_workers
from targets import ALL_MODELS, BATCHING_MODES, HERE, Plan, Target, Tools, prepare, server_for


class Soak:
    """Load in chunks until a request count is reached, sampling worker RSS after every chunk."""

    def __init__(self, args: argparse.Namespace, url: str, body: Path, root_pid: int) -> None:
        self.args, self.url, self.body, self.root_pid = args, url, body, root_pid
        self.requests = self.errors = 0
        self.samples: list[dict[str, Any]] = []
        self.baseline: dict[str, Any] = {}
        self.load_seconds = 0.0

    def sample(self, phase: str) -> dict[int, int]:
        rss = {pid: kib for pid in uvicorn_workers(self.root_pid) if (kib := rss_kib(pid)) is not None}
        self.samples.append({"phase": phase, "requests": self.requests, "t": time.time(), "rss_kib": rss})
        return rss

    def drive(self, count: int, phase: str) -> None:
        """Send at least ``count`` more requests (the last chunk is sized from the measured rate)."""
        target = self.requests + count
        rate = 0.0
        while self.requests < target:
            left = target - self.requests
            # the first chunk is short: it measures the rate that sizes the others
            seconds = min(self.args.chunk_seconds, 1.0 if rate <= 0 else max(1.0, left / rate))
            res = run_load(
                generator=self.args.generator, python=str(self.args.bin_dir / "python"), url=self.url,
                body_file=self.body, conns=self.args.conns, duration=seconds, timeout=self.args.timeout,
            )  # fmt: skip
            self.requests += res["requests"]
            self.errors += res["errors"]
            self.load_seconds += res["requests"] / res["rps"] if res["rps"] else seconds
            rate = res["rps"]
            rss = self.sample(phase)
            log(
                f"{phase}: {self.requests:,} requests, {res['rps']:,.0f} req/s, errors {self.errors}, "
                f"RSS MiB {', '.join(f'{pid}: {kib / 1024:.1f}' for pid, kib in sorted(rss.items()))}"
            )


def summarise(soak: Soak, warm_requests: int) -> dict[str, Any]:
    baseline = soak.baseline
    end = soak.samples[-1]
    workers = []
    for pid, start_kib in sorted(baseline["rss_kib"].items()):
        series = [s["rss_kib"][pid] for s in soak.samples if s["phase"] == "soak" and pid in s["rss_kib"]]
        end_kib = end["rss_kib"].get(pid)
        workers.append(
            {
                "pid": pid,
                "rss_after_warmup_mib": round(start_kib / 1024, 1),
                "rss_peak_mib": round(max(series, default=start_kib) / 1024, 1),
                "rss_end_mib": round(end_kib / 1024, 1) if end_kib is not None else None,
                "change_pct": round((end_kib - start_kib) / start_kib * 100, 2) if end_kib is not None else None,
            }
        )
    return {
        "requests_after_warmup": soak.requests - warm_requests,
        "requests_total": soak.requests,
        "errors": soak.errors,
        "mean_rps": round(soak.requests / soak.load_seconds, 1) if soak.load_seconds else None,
        "workers": workers,
    }


def render(summary: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"<!-- python loadtest/soak.py {' '.join(sys.argv[1:])} | {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} "
        f"UTC | {'wrk -t1' if uses_wrk(args.generator) else 'loadgen.py'}, {args.conns} conns -->",
        f"{summary['requests_after_warmup']:,} requests after a warm-up of "
        f"{summary['requests_total'] - summary['requests_after_warmup']:,} "
        f"({summary['requests_total']:,} in all, {summary['errors']} errors, {summary['mean_rps']:,} req/s mean)",
        "",
        "| worker pid | RSS after warm-up MiB | peak MiB | RSS at end MiB | change |",
        "|---|---|---|---|---|",
    ]
    for w in summary["workers"]:
        change = "–" if w["change_pct"] is None else f"{w['change_pct']:+.1f}%"
        lines.append(
            f"| {w['pid']} | {w['rss_after_warmup_mib']} | {w['rss_peak_mib']} | {w['rss_end_mib']} | {change} |"
        )
    worst = max((abs(w["change_pct"]) for w in summary["workers"] if w["change_pct"] is not None), default=None)
    if worst is not None:
        verdict = "met" if worst <= 10 else "MISSED"
        lines += ["", f"Largest change {worst:.1f}% (target: within 10% of RSS after warm-up: {verdict})"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python loadtest/soak.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests after warm-up (default 1000000)")
    parser.add_argument("--warmup-requests", type=int, default=50_000, help="requests before the baseline")
    parser.add_argument("--conns", type=int, default=64, help="keep-alive connections (default 64)")
    parser.add_argument("--chunk-seconds", type=float, default=10.0, help="seconds of load between RSS samples")
    parser.add_argument("--model", choices=ALL_MODELS, default="iris", help="model to serve (default iris)")
    parser.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    parser.add_argument("--batching", choices=BATCHING_MODES, default="on", help="gateway batching (default on)")
    parser.add_argument("--url", help="soak a running server at this /invocations URL instead (needs --pid)")
    parser.add_argument("--pid", type=int, help="pid of the running server's uvicorn (its workers are its children)")
    parser.add_argument("--body-file", type=Path, help="request body for --url (default: the model's example)")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a request is an error")
    parser.add_argument("--bin-dir", type=Path, default=HERE.parent / ".venv" / "bin", help="venv bin dir")
    parser.add_argument(
        "--out", type=Path, help="JSON file with every sample (default loadtest/results/soak-<UTC>.json)"
    )
    parser.add_argument("--workdir", type=Path, help="scratch dir (kept; default: a temp dir, removed)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup_requests < 0 or args.conns < 1 or args.chunk_seconds <= 0:
        parser.error("--requests and --conns must be >= 1, --warmup-requests >= 0, --chunk-seconds > 0")
    if (args.url is None) != (args.pid is None):
        parser.error("--url and --pid go together")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="gateway-soak-"))).absolute()
    servers = Servers(15.0)
    result: dict[str, Any] = {"command": " ".join(["python", "loadtest/soak.py", *(argv or sys.argv[1:])])}
    try:
        with terminate_on_sigterm():
            if args.url:
                url, root_pid = args.url, args.pid
                body = args.body_file or _write_example(args, workdir)
            else:
                plan, tools = Plan(workdir), Tools(bin_dir=args.bin_dir)
                prepare(plan, tools, [args.model], ["gateway"], [args.rows])
                if (args.model, "gateway") in plan.unavailable:
                    raise SystemExit(f"cannot start the gateway: {plan.unavailable[(args.model, 'gateway')]}")
                target = Target("gateway", args.batching)
                server = servers.start(server_for(target, args.model, args.workers, plan, tools, None), 120)
                assert server.proc is not None
                url, root_pid, body = (
                    server.base + "/invocations",
                    server.proc.pid,
                    plan.bodies[(args.model, args.rows)],
                )
            why = probe(url, body.read_bytes(), expect_predictions=True)
            if why:
                raise SystemExit(f"{url}: {why}")
            soak = Soak(args, url, body, root_pid)
            soak.sample("start")
            if args.warmup_requests:
                soak.drive(args.warmup_requests, "warm-up")
            soak.baseline = soak.samples[-1]
            warm = soak.requests
            soak.drive(args.requests, "soak")
            summary = summarise(soak, warm)
    finally:
        servers.stop_all()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    text = render(summary, args)
    print(text)
    result.update(summary=summary, samples=soak.samples, table=text)
    out = args.out or HERE / "results" / f"soak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    log(f"samples in {out}")
    return 0


def _write_example(args: argparse.Namespace, workdir: Path) -> Path:
    body = workdir / "body.json"
    body.parent.mkdir(parents=True, exist_ok=True)
    row = [5.1, 3.5, 1.4, 0.2]
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    body.write_text(json.dumps({"dataframe_split": {"columns": columns, "data": [row] * args.rows}}))
    return body


if __name__ == "__main__":
    raise SystemExit(main())
