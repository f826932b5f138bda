"""Bench harness: the gateway (batching on and off) against a bare Starlette ceiling, a hello-world
and ``mlflow models serve``, for the iris demo model and a heavy MLP, in one run.

Run ``python loadtest/bench.py`` (``make bench``, about 7 minutes) or ``--quick`` (a smoke run of
about a minute); ``--help`` lists every flag. It talks HTTP only and imports nothing from
``gateway``: every server is a subprocess on a free 127.0.0.1 port (``procs.py``), the models and
targets are in ``targets.py``, the load drivers (wrk, or the asyncio ``loadgen.py``) in
``drivers.py`` and the table in ``report.py``.

Method: for each worker count and model, every server runs side by side (idle ones use no CPU);
one probe request per target and body checks the answer before any load (a target that answers
an error is reported, not measured); each server gets a warm-up per body size; then the cells
are interleaved (conns, then repeat, then target) so slow drift of a noisy machine hits every
target alike. With ``--repeat N`` the table shows medians. Server CPU per request comes from
``/proc`` (the server's whole process tree). The load generator is pinned to the cpus the
server does not use when there are spare ones (``--pin``).

Output: one markdown table on stdout (see ``report.py``), the issue targets checked on this
run, and every raw figure in a JSON file (``--out``).
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drivers import get_json, probe, run_load, uses_wrk
from procs import Server, Servers, log, terminate_on_sigterm, tree_cpu
from report import Cell, check_targets, render, summarise
from targets import (
    ALL_MODELS,
    ALL_TARGETS,
    BATCHING_MODES,
    HERE,
    Plan,
    Target,
    Tools,
    expand_targets,
    prepare,
    server_for,
)

DEFAULTS: dict[str, Any] = {
    "duration": 5.0,
    "conns": "1,16,64",
    "workers": "1",
    "targets": ",".join(ALL_TARGETS),
    "models": ",".join(ALL_MODELS),
    "rows": "1,100",
    "batching": "on,off",
    "warmup": 1.0,
}
QUICK: dict[str, Any] = {
    "duration": 1.0,
    "conns": "1,16",
    "workers": "1",
    "targets": "gateway,bare,hello",
    "models": ",".join(ALL_MODELS),
    "rows": "1",
    "batching": "on,off",
    "warmup": 0.5,
}


def cpu_split(workers: int) -> tuple[list[int] | None, list[int] | None, str]:
    """(server cpus, generator cpus, description) for ``--pin auto``."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None, "no pinning (no sched_setaffinity)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > workers:
        server, gen = cpus[:workers], cpus[workers:]
        return server, gen, f"server on cpus {server}, load generator on cpus {gen}"
    return None, None, f"server and load generator share all {len(cpus)} cpus"


def batching_settings(server: Server) -> str:
    """What ``GET /models`` says about batching for the served model, as text for the notes."""
    listing = get_json(server.base + "/models")
    models = listing.get("models") if isinstance(listing, dict) else None
    if not models:
        return "GET /models answered no model list"
    found: dict[str, Any] = {}

    def walk(data: Any, prefix: str) -> None:  # {"batching": {"max_wait_ms": {"value": 0, ...}}} -> max_wait_ms=0
        for key, value in data.items():
            if isinstance(value, dict) and "value" in value:
                found[key] = value["value"]
            elif isinstance(value, dict):
                walk(value, key)
            elif "batch" in f"{prefix}{key}".lower() or "wait" in key.lower():
                found[key] = value

    walk(models[0], "")
    if not found:
        return "GET /models shows no batching settings"
    return "GET /models: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in found.items())


@dataclasses.dataclass
class Run:
    args: argparse.Namespace
    plan: Plan
    tools: Tools
    servers: Servers
    targets: list[Target]
    cells: list[Cell] = dataclasses.field(default_factory=list)

    def load(
        self, server: Server, target: Target, body: Path, conns: int, duration: float, cpus: list[int] | None
    ) -> dict[str, Any]:
        return run_load(
            generator=self.args.generator,
            python=self.tools.python,
            url=server.base + target.path,
            body_file=body,
            conns=conns,
            duration=duration,
            timeout=self.args.timeout,
            cpus=cpus,
        )

    def measure_model(
        self, model: str, workers: int, server_cpus: list[int] | None, gen_cpus: list[int] | None
    ) -> None:
        """Start the servers for one model and worker count, probe, warm up and run every cell."""
        args, plan = self.args, self.plan
        live: dict[str, Server] = {}
        failed: dict[str, str] = {}
        targets = [t for t in self.targets if (model, t.kind) not in plan.unavailable]
        for target in targets:
            if target.server_key in failed:
                failed[target.key] = failed[target.server_key]
                continue
            if target.server_key not in live:
                log(f"starting {target.server_key} for {model} with {workers} worker(s)")
                server = server_for(target, model, workers, plan, self.tools, server_cpus)
                try:
                    live[target.server_key] = self.servers.start(server, args.startup_timeout)
                except RuntimeError as exc:
                    failed[target.key] = failed[target.server_key] = f"did not start: {exc}"
                    log(failed[target.key])
                    continue
            for rows in args.rows:
                body = plan.bodies[(model, rows)].read_bytes()
                server = live[target.server_key]
                why = probe(server.base + target.path, body, target.kind != "hello", rows)
                if why:
                    failed[target.key] = f"{rows} row(s): {why}"
                    log(f"{target.key} {model}: {failed[target.key]}")
                    break
        measured = [t for t in targets if t.key not in failed]
        for target in targets:
            if target.key in failed:
                for rows in args.rows:
                    for conns in args.conns:
                        self.cells.append(
                            Cell(target.key, target.label, model, rows, workers, conns, 0, failure=failed[target.key])
                        )
        for rows in args.rows:
            body_file = plan.bodies[(model, rows)]
            if args.warmup > 0:
                for target in measured:
                    if target.kind == "hello":
                        continue
                    log(f"warm-up {target.key} {model} {rows} row(s) ({args.warmup:g}s, {max(args.conns)} conns)")
                    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                        self.load(live[target.server_key], target, body_file, max(args.conns), args.warmup, gen_cpus)
            for conns in args.conns:
                for rep in range(args.repeat):
                    for target in measured:
                        self.cells.append(
                            self.run_cell(live[target.server_key], target, model, rows, workers, conns, rep, gen_cpus)
                        )
        for target in measured:
            if target.kind == "gateway" and target.batching != "default":
                after = batching_settings(live[target.server_key])
                plan.notes.append(f"{target.label}, {model}, w={workers}, after the load: {after}")
        self.servers.stop_all()

    def run_cell(
        self,
        server: Server,
        target: Target,
        model: str,
        rows: int,
        workers: int,
        conns: int,
        rep: int,
        gen_cpus: list[int] | None,
    ) -> Cell:
        assert server.proc is not None
        cell = Cell(target.key, target.label, model, rows, workers, conns, rep)
        cpu_before = tree_cpu(server.proc.pid)
        try:
            res = self.load(server, target, self.plan.bodies[(model, rows)], conns, self.args.duration, gen_cpus)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            cell.failure = f"load generator failed: {exc}"
            log(f"{target.key} {model} w={workers} c={conns}: {cell.failure}")
            return cell
        cpu_after = tree_cpu(server.proc.pid)
        deltas = sorted((cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after), reverse=True)
        total = sum(deltas)
        for key in (
            "rps",
            "p50_ms",
            "p99_ms",
            "requests",
            "errors",
            "non2xx",
            "socket_errors",
            "generator",
            "generator_cpu_frac",
        ):
            setattr(cell, key, res[key])
        if total > 0 and cell.requests:
            cell.server_cpu_us_per_req = total / cell.requests * 1e6
            cell.worker_cpu_shares = [round(d / total, 3) for d in deltas if d / total >= 0.01]
        log(
            f"{target.key:11s} {model:4s} r={rows:<3d} w={workers} c={conns:<3d} rep={rep}: {cell.rps:9.1f} req/s  "
            f"p50 {cell.p50_ms:.2f} ms  p99 {cell.p99_ms:.2f} ms  errors {cell.errors}"
        )
        return cell

    def execute(self) -> None:
        for workers in self.args.workers:
            if self.args.pin == "auto":
                server_cpus, gen_cpus, pin_note = cpu_split(workers)
            else:
                server_cpus, gen_cpus, pin_note = None, None, "no pinning (--pin off)"
            self.plan.notes.append(f"workers={workers}: {pin_note}")
            for model in self.args.models:
                self.measure_model(model, workers, server_cpus, gen_cpus)

    def order(self) -> list[tuple[int, str, int, int, str]]:
        a = self.args
        return [
            (w, m, r, c, t.key)
            for w in a.workers
            for m in a.models
            for r in a.rows
            for c in a.conns
            for t in self.targets
        ]


# --- command line -------------------------------------------------------------------------------


def _list_of(choices: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"unknown {unknown} in {text!r}; choose from {', '.join(choices)}")
        return list(dict.fromkeys(values))

    return parse


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v < 1 or v > 100_000 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers in 1..100000, got {text!r}")
    return list(dict.fromkeys(values))


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("GATEWAY_"):
        raise argparse.ArgumentTypeError(f"expected GATEWAY_KEY=VALUE, got {text!r}")
    return key, value


def default_bin_dir() -> Path:
    venv = HERE.parent / ".venv" / "bin"
    return venv if (venv / "python").exists() else Path(sys.executable).parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    d, q = DEFAULTS, QUICK
    parser = argparse.ArgumentParser(
        prog="python loadtest/bench.py",
        description=(
            "Measure /invocations on the gateway (batching on and off), a bare Starlette+onnxruntime ceiling, "
            "a bare hello-world and `mlflow models serve`, for the iris demo and a heavy MLP, with 1- and "
            "100-row bodies, in one run; print one markdown table and the issue targets."
        ),
        epilog="Example: python loadtest/bench.py --repeat 3 --out bench.json",
    )

    def flag(name: str, help: str, **kw: Any) -> None:
        key = name.lstrip("-").replace("-", "_")
        parser.add_argument(name, default=None, help=f"{help} (default {d[key]}; --quick: {q[key]})", **kw)

    flag("--duration", "seconds of load per cell", type=float)
    flag("--conns", "connection counts, comma-separated", type=_int_list)
    flag("--workers", "server worker counts, comma-separated", type=_int_list)
    flag("--targets", f"targets, comma-separated, from {', '.join(ALL_TARGETS)}", type=_list_of(ALL_TARGETS))
    flag("--models", f"models, comma-separated, from {', '.join(ALL_MODELS)}", type=_list_of(ALL_MODELS))
    flag("--rows", "rows per request body, comma-separated", type=_int_list)
    flag(
        "--batching",
        f"gateway batching modes, from {', '.join(BATCHING_MODES)} (default: set nothing)",
        type=_list_of(BATCHING_MODES),
    )
    flag("--warmup", "seconds of warm-up load per server, body size and worker count", type=float)
    parser.add_argument("--quick", action="store_true", help="smoke run: the --quick defaults above")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the table shows medians (default 1)")
    parser.add_argument(
        "--gateway-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="GATEWAY_KEY=VALUE",
        help="extra setting for every gateway server, e.g. GATEWAY_SERVING_MAX_WAIT_MS=1 (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a request is an error (default 10)")
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk when installed (auto), or loadtest/loadgen.py (python)",
    )
    parser.add_argument(
        "--pin",
        choices=["auto", "off"],
        default="auto",
        help="auto: server on the first W cpus, generator on the others when there are spare cpus",
    )
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for GET /ping")
    parser.add_argument("--stop-timeout", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file for every raw figure (default: loadtest/results/bench-<UTC time>.json)",
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument(
        "--bin-dir",
        type=Path,
        default=default_bin_dir(),
        help="venv bin dir with python, gateway, mlflow (default: the repo's .venv)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="scratch dir (default: a temp dir)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the scratch dir (logs) after the run")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            action = next(a for a in parser._actions if a.dest == key)
            convert = action.type
            setattr(args, key, convert(value) if isinstance(value, str) and callable(convert) else value)
    if args.duration <= 0 or args.duration > 3600:
        parser.error("--duration must be in (0, 3600]")
    if not 1 <= args.repeat <= 100:
        parser.error("--repeat must be in 1..100")
    if args.generator == "wrk" and not shutil.which("wrk"):
        parser.error("--generator wrk: wrk is not installed")
    args.python = str(Path(args.bin_dir) / "python")
    if not Path(args.python).exists():
        parser.error(f"{args.python} does not exist (use --bin-dir)")
    return args


def environment(python: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "wrk": shutil.which("wrk") is not None,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    code = (
        "import json, importlib.metadata as m\nout = {}\n"
        "for d in ('gateway', 'uvicorn', 'starlette', 'uvloop', 'httptools', 'onnxruntime', 'orjson',\n"
        "          'numpy', 'scikit-learn', 'skl2onnx', 'mlflow-skinny', 'mlflow'):\n"
        "    try: out[d] = m.version(d)\n    except m.PackageNotFoundError: pass\nprint(json.dumps(out))\n"
    )
    with contextlib.suppress(subprocess.SubprocessError, ValueError, OSError):
        res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        info["versions"] = json.loads(res.stdout)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="gateway-bench-"))).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    tools = Tools(bin_dir=Path(args.bin_dir), gateway_env=dict(args.gateway_env))
    run = Run(args, Plan(workdir), tools, Servers(args.stop_timeout), expand_targets(args.targets, args.batching))
    interrupted = False
    try:
        with terminate_on_sigterm():
            log(f"scratch dir {workdir}")
            prepare(run.plan, tools, args.models, args.targets, args.rows)
            for (model, kind), why in run.plan.unavailable.items():
                log(f"{kind} {model}: not measured: {why}")
            run.execute()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping servers")
    finally:
        run.servers.stop_all()
    rows = summarise(run.cells)
    unavailable = [f"{kind}, {model}: not measured: {why}" for (model, kind), why in run.plan.unavailable.items()]
    table = render(rows, run.order(), unavailable)
    targets = check_targets(rows)
    command = " ".join(["python", "loadtest/bench.py", *(argv if argv is not None else sys.argv[1:])])
    generator = "wrk -t1" if uses_wrk(args.generator) else "loadgen.py"
    header = (
        f"<!-- {command} | {started:%Y-%m-%d %H:%M} UTC | {generator}, {args.duration:g}s per cell, "
        f"{args.repeat} run(s) per cell -->"
    )
    checks = [f"- {t}" for t in targets or ["(none measurable)"]]
    notes = [f"- {n}" for n in run.plan.notes]
    text = "\n".join([header, table, "", "Issue targets, this run:", *checks, "", "Setup:", *notes])
    print(text)
    result = {
        "command": command,
        "started_utc": started.isoformat(timespec="seconds"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment(args.python),
        "notes": run.plan.notes,
        "unavailable": unavailable,
        "rows": rows,
        "targets": targets,
        "cells": [dataclasses.asdict(c) for c in run.cells],
        "table": table,
        "interrupted": interrupted,
    }
    out = args.out or HERE / "results" / f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    log(f"raw figures in {out}")
    if args.keep_workdir or args.workdir:
        log(f"kept {workdir} (logs under {workdir / 'logs'})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
