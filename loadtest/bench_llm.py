"""LLM proxy bench: the gateway against the fake upstream direct, a bare passthrough and LiteLLM, in one run.

Run ``python loadtest/bench_llm.py`` (``make bench-llm``) or ``--quick`` (a smoke run of about
20 s); ``--help`` lists every flag. It talks HTTP only and imports nothing from ``gateway``:
every server is a subprocess on a free 127.0.0.1 port (``llm_servers.py``), all on one fake
OpenAI-compatible upstream (``fake_upstream.py``):

- ``direct``: the fake upstream itself, the floor.
- ``bare``: ``bare_llm_proxy.py``, Starlette + one shared httpx client, no validation or spans.
- ``gateway``: ``gateway serve --config`` with one route on the upstream, spans exported over
  OTLP/HTTP to ``otlp_sink.py`` and trace summaries written to a SQLite store.
- ``litellm``: LiteLLM proxy on the same upstream, when ``--litellm-python`` names a python
  that has ``litellm[proxy]`` (never installed here); otherwise the row says why it is missing.

What it measures, same run, ``--conns`` (32) connections, a small non-streaming chat body:

1. ``throughput``: closed loop with ``wrk -t1`` (``wrk_post.lua``; ``llm_client.py`` when wrk is
   absent): req/s, p50, p99; gateway ÷ bare and gateway ÷ LiteLLM.
2. ``latency``: ``llm_client.py`` paced at ``--rate`` req/s, so queueing does not swamp the cost
   being measured: p50/p99 added over direct.
3. ``stream``: paced streaming requests: time to first SSE event added over direct; then
   ``--tool-streams`` streams of a ``--deltas``-delta tool call, events counted direct and through
   the gateway.
3b. ``responses`` and ``responses_stream``: the latency and stream cells again with the request in the
   Responses API's form (``POST /v1/responses``): added p50/p99, and the added time to the first
   ``response.output_text.delta``; events per stream counted direct and through the gateway.
4. accounting: after the load, spans at the sink vs what the gateway says it exported and dropped
   (``gateway_spans_*`` on ``GET /metrics``), and trace summaries in the store vs requests.

Cells are interleaved (repeat, then target) so drift of a noisy machine hits every target alike;
with ``--repeat N`` the table shows medians. With one worker on a machine with two or more cpus,
the proxy under test is pinned to the first cpu and everything else (upstream, sink, load
generator) to the others (``--pin``). Output: one markdown table, one verdict per target
(``llm_report.py``) and every raw figure in a JSON file (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llm_accounting import accounting
from llm_cells import chat_body, measure, probe, responses_body, run_client, run_wrk, tool_stream_body
from llm_report import Cell, Results, render, verdicts
from llm_servers import (
    HttpServer,
    Layout,
    bare_server,
    gateway_server,
    litellm_headers,
    litellm_server,
    litellm_unavailable,
    litellm_version,
    sink_server,
    upstream_server,
)
from procs import Servers, log, terminate_on_sigterm

HERE = Path(__file__).resolve().parent
ALL_TARGETS = ("direct", "bare", "gateway", "litellm")
PROXIES = ("bare", "gateway", "litellm")
DEFAULTS: dict[str, Any] = {
    "duration": 5.0,
    "warmup": 2.0,
    "repeat": 3,
    "rate": "auto",
    "stream_rate": "auto",
    "tool_streams": 5,
}
QUICK: dict[str, Any] = {
    "duration": 1.0,
    "warmup": 0.5,
    "repeat": 1,
    "rate": "auto",
    "stream_rate": "auto",
    "tool_streams": 2,
}
AUTO_RATE_SHARE = 0.5
FIRST_DELTA = "response.output_text.delta"  # the Responses API's first output: its time is the stream's TTFC


# ---------------------------------------------------------------------------------------------
# the run


@dataclasses.dataclass
class Run:
    """The servers of this run and what could not start (by target), plus request counts."""

    servers: dict[str, HttpServer] = dataclasses.field(default_factory=dict)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    gateway_requests: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)

    def url(self, target: str, path: str = "/v1/chat/completions") -> str:
        return self.servers[target].base + path


def headers_for(target: str) -> list[str]:
    return litellm_headers() if target == "litellm" else []


def start_servers(args: argparse.Namespace, layout: Layout, servers: Servers, run: Run) -> None:
    spare = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = args.pin == "auto" and args.workers == 1 and len(spare) >= 2
    proxy_cpus, aux_cpus = (spare[:1], spare[1:]) if pin else (None, None)
    args.aux_cpus = aux_cpus
    if pin:
        run.notes.append(f"proxies pinned to cpu {proxy_cpus}; upstream, sink and load generator to cpus {aux_cpus}")
    sink = servers.start(sink_server(layout, aux_cpus), args.startup_timeout)
    upstream = servers.start(upstream_server(layout, aux_cpus), args.startup_timeout)
    run.servers.update({"sink": sink, "direct": upstream})
    factories = {
        "bare": lambda: bare_server(layout, upstream.base, args.workers, proxy_cpus),
        "gateway": lambda: gateway_server(
            layout, upstream.base, sink.base, args.workers, proxy_cpus, dict(args.gateway_env)
        ),
        "litellm": lambda: litellm_server(layout, upstream.base, args.workers, proxy_cpus),
    }
    for target in (t for t in args.targets if t in PROXIES):
        if target == "litellm" and (why := litellm_unavailable(layout)):
            run.unavailable[target] = why
            continue
        try:
            run.servers[target] = servers.start(factories[target](), args.startup_timeout)
        except RuntimeError as exc:
            run.unavailable[target] = f"did not start: {str(exc)[-400:]}"
    if "litellm" in run.servers:
        run.notes.append(f"LiteLLM {litellm_version(layout)} from {layout.litellm_python}, {args.workers} worker(s)")
    for target in [t for t in args.targets if t in run.servers]:
        if why := probe(run.url(target), headers_for(target)):
            run.unavailable[target] = why
            run.servers.pop(target)
        elif target == "gateway":
            run.gateway_requests += 2


def load_cells(args: argparse.Namespace, run: Run, bodies: dict[str, Path]) -> list[Cell]:
    targets = [t for t in args.targets if t in run.servers]
    cells: list[Cell] = []
    for target in args.targets:
        if target in run.unavailable:
            cells.append(Cell("throughput", target, 0, args.conns, failure=run.unavailable[target]))
    cpus = args.aux_cpus
    for target in targets:  # warm-up: connection pools, caches, JIT-free but lazy imports
        log(f"warm-up {target}")
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            fig = run_wrk(args, run.url(target), bodies["chat"], headers_for(target), args.warmup, cpus)
            run.gateway_requests += fig["requests"] if target == "gateway" else 0
    for rep in range(args.repeat):
        for target in targets:
            log(f"throughput {target} (repeat {rep + 1}/{args.repeat})")
            cell = Cell("throughput", target, rep, args.conns)
            measure(run.servers[target], cell, lambda t=target: run_wrk(
                args, run.url(t), bodies["chat"], headers_for(t), args.duration, cpus))  # fmt: skip
            cells.append(cell)
    resolve_rates(args, Results(cells), run)
    paced = [t for t in targets if t != "litellm"]  # LiteLLM cannot keep up with the others' pace
    for rep in range(args.repeat):
        for phase, rate, body in (("latency", args.rate, "chat"), ("stream", args.stream_rate, "stream")):
            for target in paced:
                log(f"{phase} {target} at {rate:.0f} req/s (repeat {rep + 1}/{args.repeat})")
                cell = Cell(phase, target, rep, args.conns)
                measure(run.servers[target], cell, lambda t=target, r=rate, b=body: run_client(
                    args, run.url(t), bodies[b], headers_for(t), duration=args.duration, rate=r, requests=0,
                    cpus=cpus, ttfc=b == "stream"))  # fmt: skip
                cells.append(cell)
        for phase, rate, body in (
            ("responses", args.rate, "responses"),
            ("responses_stream", args.stream_rate, "responses_stream"),
        ):
            for target in paced:
                log(f"{phase} {target} at {rate:.0f} req/s (repeat {rep + 1}/{args.repeat})")
                cell = Cell(phase, target, rep, args.conns)
                first = FIRST_DELTA if phase == "responses_stream" else None
                measure(run.servers[target], cell, lambda t=target, r=rate, b=body, f=first: run_client(
                    args, run.url(t, "/v1/responses"), bodies[b], headers_for(t), duration=args.duration, rate=r,
                    requests=0, cpus=cpus, ttfc=f is not None, first_event=f))  # fmt: skip
                cells.append(cell)
    run.gateway_requests += sum(c.requests for c in cells if c.target == "gateway")
    return cells


def resolve_rates(args: argparse.Namespace, results: Results, run: Run) -> None:
    """``auto`` paces: half the closed-loop req/s of the slowest of bare and gateway, streams at half that.

    Below capacity, the paced cells measure what a proxy adds to a request, not how long requests
    queue behind each other (the closed-loop p50/p99 show that).
    """
    measured = [results.med("throughput", t, "rps") for t in ("bare", "gateway", "direct")]
    slowest = min((r for r in measured[:2] if r == r), default=measured[2])
    base = max(10.0, round(slowest * AUTO_RATE_SHARE / 10) * 10) if slowest == slowest else 100.0
    if args.rate == "auto":
        args.rate = base
        run.notes.append(
            f"latency cells paced at {base:.0f} req/s: {AUTO_RATE_SHARE:.0%} of the slowest proxy's closed-loop req/s"
        )
    if args.stream_rate == "auto":
        args.stream_rate = max(10.0, round(args.rate * AUTO_RATE_SHARE / 10) * 10)
        run.notes.append(f"stream cells paced at {args.stream_rate:.0f} req/s: half the latency cells' rate")


def tool_streams(args: argparse.Namespace, run: Run, body: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for target in ("direct", "gateway"):
        if target not in run.servers:
            out[target] = {"failure": run.unavailable.get(target, "not started")}
            continue
        log(f"{args.tool_streams} x {args.deltas}-delta tool-call stream via {target}")
        try:
            argv = [args.python, str(HERE / "llm_client.py"), "--url", run.url(target), "--body-file", str(body)]
            argv += ["--conns", "1", "--requests", str(args.tool_streams), "--timeout", str(args.timeout)]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout * args.tool_streams + 60)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip()[-300:])
            raw = json.loads(proc.stdout)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            out[target] = {"failure": str(exc)}
            continue
        out[target] = {**raw, "sent": args.tool_streams}
        if target == "gateway":
            run.gateway_requests += raw["requests"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-llm-"))
    workdir.mkdir(parents=True, exist_ok=True)
    layout = Layout(workdir, args.bin_dir, args.litellm_python)
    bodies = {
        "chat": chat_body(stream=False),
        "stream": chat_body(stream=True),
        "tools": tool_stream_body(args.deltas),
        "responses": responses_body(stream=False),
        "responses_stream": responses_body(stream=True),
    }
    body_files = {}
    for name, body in bodies.items():
        body_files[name] = workdir / f"body-{name}.json"
        body_files[name].write_text(json.dumps(body))
    servers = Servers(args.stop_timeout)
    run = Run()
    cells: list[Cell] = []
    tools: dict[str, dict[str, Any]] = {}
    acc: dict[str, Any] = {}
    try:
        with terminate_on_sigterm():
            start_servers(args, layout, servers, run)
            cells = load_cells(args, run, body_files)
            tools = tool_streams(args, run, body_files["tools"])
            if "gateway" in run.servers:
                log("waiting for the gateway's spans and summaries to settle")
                acc = accounting(
                    run.servers["gateway"],
                    run.servers["sink"],
                    layout.store_db,
                    run.gateway_requests,
                    args.settle_timeout,
                )
    except KeyboardInterrupt:
        log("interrupted; stopping servers")
        return 130
    except RuntimeError as exc:  # the upstream or the sink did not start: nothing can be measured
        log(str(exc))
        return 1
    finally:
        servers.stop_all()
        if not args.keep_workdir and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"scratch dir kept: {workdir}")
    results = Results(cells)
    targets = [t for t in args.targets if t in ALL_TARGETS]
    table = render(results, targets, args.rate, args.stream_rate, run.notes)
    lines = verdicts(results, tools, acc, args.deltas)
    if acc:
        lines.append(
            f"(requests counted by: {acc['requests_source']}; client-side {acc['client_requests']}; sink spans by kind "
            f"{acc['sink_by_kind']}; sink rejected {acc['sink_rejected']} export(s))"
        )
    text = table + "\n\nTargets, this run:\n" + "\n".join(f"- {line}" for line in lines) + "\n"
    print(text)
    out = args.out or HERE / "results" / f"bench-llm-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "started": started.isoformat(),
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "cells": [dataclasses.asdict(c) for c in cells],
        "tool_streams": tools,
        "accounting": acc,
        "unavailable": run.unavailable,
        "notes": run.notes,
        "table": text,
    }
    out.write_text(json.dumps(record, indent=2, default=str))
    log(f"raw figures: {out}")
    if args.markdown:
        args.markdown.write_text(text)
    return 0


def _targets(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if bad := [t for t in items if t not in ALL_TARGETS]:
        raise argparse.ArgumentTypeError(f"unknown target(s) {bad}; choose from {', '.join(ALL_TARGETS)}")
    return items


def _rate(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of req/s or 'auto', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a rate must be positive, got {text!r}")
    return value


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def default_bin_dir() -> Path:
    venv = HERE.parent / ".venv" / "bin"
    return venv if (venv / "python").exists() else Path(sys.executable).parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    d, q = DEFAULTS, QUICK
    parser = argparse.ArgumentParser(
        prog="python loadtest/bench_llm.py",
        description=(
            "Measure the gateway's LLM proxy against the fake upstream direct, a bare starlette+httpx passthrough "
            "and LiteLLM proxy, in one run; print one markdown table and the issue targets."
        ),
        epilog="Example: python loadtest/bench_llm.py --repeat 3 --litellm-python /tmp/litellm-venv/bin/python",
    )

    def flag(name: str, help: str, kind: Callable[[str], Any]) -> None:
        key = name.lstrip("-").replace("-", "_")
        parser.add_argument(name, type=kind, default=None, help=f"{help} (default {d[key]}; --quick: {q[key]})")

    flag("--duration", "seconds of load per cell", float)
    flag("--warmup", "seconds of warm-up load per target", float)
    flag("--repeat", "runs per cell; the table shows medians", int)
    flag("--rate", "paced req/s of the latency cells, or auto (half the slowest proxy's req/s)", _rate)
    flag("--stream-rate", "paced req/s of the streaming (TTFC) cells, or auto (half of --rate)", _rate)
    flag("--tool-streams", "tool-call streams sent direct and through the gateway", int)
    parser.add_argument("--quick", action="store_true", help="smoke run: the --quick defaults above")
    parser.add_argument("--conns", type=int, default=32, help="connections of every cell (default 32)")
    parser.add_argument(
        "--targets", type=_targets, default=list(ALL_TARGETS), help=f"comma-separated, from {', '.join(ALL_TARGETS)}"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes of every proxy (default 1)")
    parser.add_argument("--deltas", type=int, default=500, help="argument deltas of the tool-call stream (default 500)")
    parser.add_argument(
        "--litellm-python",
        default=None,
        help="a python with litellm[proxy] installed (else the LiteLLM row is skipped)",
    )
    parser.add_argument(
        "--gateway-env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the gateway, e.g. OTEL_BSP_MAX_QUEUE_SIZE=8192 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a request is an error (default 10)")
    parser.add_argument("--settle-timeout", type=float, default=30.0, help="max seconds to wait for spans (default 30)")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto", help="closed-loop driver")
    parser.add_argument("--pin", choices=["auto", "off"], default="auto", help="pin proxies and helpers to cpus")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for each server")
    parser.add_argument("--stop-timeout", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every raw figure (default loadtest/results/)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table and verdicts here")
    parser.add_argument("--bin-dir", type=Path, default=default_bin_dir(), help="venv bin with python and gateway")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch dir (default: a temp dir, removed)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the scratch dir (logs, store) after the run")
    args = parser.parse_args(argv)
    for key, value in (q if args.quick else d).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 0 < args.duration <= 600 or not 1 <= args.repeat <= 50 or args.conns < 1 or args.workers < 1:
        parser.error("--duration must be in (0, 600], --repeat in 1..50, --conns and --workers >= 1")
    if args.deltas < 1 or args.tool_streams < 1:
        parser.error("--deltas and --tool-streams must be positive")
    if args.generator == "wrk" and not shutil.which("wrk"):
        parser.error("--generator wrk: wrk is not installed")
    args.python = str(args.bin_dir / "python")
    args.aux_cpus = None
    return args


if __name__ == "__main__":
    raise SystemExit(main())
