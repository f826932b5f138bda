"""Prompt registry bench: cached prompt reads vs a bare constant-JSON route, and prompt-linked chat
calls vs the same call with literal messages, in one run.

Run ``python loadtest/bench_prompts.py`` (``make bench-prompts``), ``--quick`` for a smoke run.
Imports nothing from ``gateway``: it registers a prompt with the ``gateway prompts`` CLI into a
scratch SQLite store, then starts (each a subprocess on a free 127.0.0.1 port, see
``llm_servers.py``) the fake OpenAI upstream, an OTLP sink, ``gateway serve`` with one LLM route on
that upstream, and ``bare_app.py`` (whose ``GET /hello`` answers constant JSON).

Cells, interleaved per repeat, ``--conns`` (64) connections:

1. ``GET /api/prompts/qa@production`` on the gateway vs ``GET /hello`` on the bare app: closed loop
   with ``wrk -t1``; req/s ratio (issue 5 target: >= 0.8x).
2. ``POST /v1/chat/completions`` naming the prompt (``"prompt": {"ref": ..., "variables": ...}``)
   vs the same call with the rendered messages written out: closed loop (req/s, p50, p99), and
   paced at ``--rate`` req/s with ``llm_client.py`` so that queueing does not swamp the cost being
   measured (issue 5 target: the prompt-linked call adds <= 0.5 ms p50).

With one worker the gateway is pinned to the first cpu and every helper to the others.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from llm_cells import run_client, run_wrk
from llm_servers import ROUTE, HttpServer, Layout, base_env, gateway_server, sink_server, upstream_server
from procs import Servers, affinity, free_port, log, terminate_on_sigterm

HERE = Path(__file__).resolve().parent
PROMPT = "qa"
ALIAS = "production"
SYSTEM = "You are a terse assistant."
TEMPLATE_USER = "Answer in {{ words }} words: {{ question }}"
VARIABLES = {"words": "five", "question": "what is the capital of France?"}
RENDERED_USER = "Answer in five words: what is the capital of France?"


def register_prompt(layout: Layout) -> None:
    env = base_env(layout)
    env["GATEWAY_STORE_URI"] = f"sqlite:///{layout.store_db}"
    argv = [
        str(layout.bin_dir / "gateway"), "prompts", "create", PROMPT,
        "--message", f"system:{SYSTEM}", "--message", f"user:{TEMPLATE_USER}",
        "--model-config", json.dumps({"max_tokens": 16, "temperature": 0}), "--alias", ALIAS,
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"gateway prompts create failed: {done.stderr[-500:]}")


def bare_hello_server(layout: Layout, cpus: list[int] | None) -> HttpServer:
    port = free_port()
    argv = [
        layout.python, "-m", "uvicorn", "bare_app:app", "--app-dir", str(HERE), "--host", "127.0.0.1",
        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return HttpServer("bare", argv, base_env(layout), layout.workdir, port, layout.log("bare"), cpus)


def wrk_get(url: str, conns: int, duration: float, cpus: list[int] | None) -> dict[str, Any]:
    """A closed-loop GET cell with ``wrk -t1`` (``wrk_post.lua`` without a body file sends GETs)."""
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "-s", str(HERE / "wrk_post.lua"), url]
    env = {k: v for k, v in os.environ.items() if k != "WRK_BODY_FILE"}
    proc = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=duration + 60, preexec_fn=affinity(cpus)
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr[-300:]} {proc.stdout[-300:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    elapsed = raw["duration_us"] / 1e6
    errors = raw["status"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {"rps": raw["requests"] / elapsed, "p50_ms": raw["p50"] / 1e3, "p99_ms": raw["p99"] / 1e3, "errors": errors}


def chat_bodies(workdir: Path) -> dict[str, Path]:
    literal = {
        "model": ROUTE,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": RENDERED_USER}],
        "max_tokens": 16,
        "temperature": 0,
    }
    linked = {"model": ROUTE, "prompt": {"ref": f"prompts:/{PROMPT}@{ALIAS}", "variables": VARIABLES}}
    paths = {}
    for name, body in (("literal", literal), ("linked", linked)):
        paths[name] = workdir / f"chat-{name}.json"
        paths[name].write_text(json.dumps(body))
    return paths


def median(cells: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(cell[key] for cell in cells))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        print("bench_prompts needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-prompts-"))
    layout = Layout(workdir=workdir, bin_dir=args.bin_dir)
    (workdir / "models").mkdir()
    spare = sorted(os.sched_getaffinity(0))
    gateway_cpus, aux_cpus = (spare[:1], spare[1:]) if len(spare) >= 2 else (None, None)
    servers = Servers(grace=15)
    keys = ("prompt", "hello", "literal", "linked", "p_lit", "p_link")
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    try:
        with terminate_on_sigterm():
            register_prompt(layout)
            sink = servers.start(sink_server(layout, aux_cpus), 120)
            upstream = servers.start(upstream_server(layout, aux_cpus), 120)
            gateway = servers.start(gateway_server(layout, upstream.base, sink.base, 1, gateway_cpus, {}), 120)
            bare = servers.start(bare_hello_server(layout, gateway_cpus), 120)
            bodies = chat_bodies(workdir)
            prompt_url = f"{gateway.base}/api/prompts/{PROMPT}@{ALIAS}"
            chat_url = f"{gateway.base}/v1/chat/completions"
            client_args = argparse.Namespace(
                generator="wrk", conns=args.conns, timeout=10.0, python=str(args.bin_dir / "python")
            )
            log("warm-up")
            wrk_get(prompt_url, args.conns, 1, aux_cpus)
            wrk_get(bare.base + "/hello", args.conns, 1, aux_cpus)
            for name in ("literal", "linked"):
                run_wrk(client_args, chat_url, bodies[name], [], 1, aux_cpus)
            for repeat in range(args.repeat):
                log(f"repeat {repeat + 1}/{args.repeat}")
                results["prompt"].append(wrk_get(prompt_url, args.conns, args.duration, aux_cpus))
                results["hello"].append(wrk_get(bare.base + "/hello", args.conns, args.duration, aux_cpus))
                for name in ("literal", "linked"):
                    results[name].append(run_wrk(client_args, chat_url, bodies[name], [], args.duration, aux_cpus))
                for name, key in (("literal", "p_lit"), ("linked", "p_link")):
                    results[key].append(
                        run_client(client_args, chat_url, bodies[name], [], duration=args.duration,
                                   rate=args.rate, requests=0, cpus=aux_cpus)
                    )  # fmt: skip
    finally:
        servers.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, args)
    return 0 if all(cell["errors"] == 0 for cells in results.values() for cell in cells) else 1


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    rows = [
        ("GET /api/prompts/qa@production (gateway)", "prompt"),
        ("GET /hello constant JSON (bare starlette)", "hello"),
        ("chat, literal messages (gateway, closed loop)", "literal"),
        ("chat, prompt-linked (gateway, closed loop)", "linked"),
        (f"chat, literal messages (gateway, paced {args.rate:g} req/s)", "p_lit"),
        (f"chat, prompt-linked (gateway, paced {args.rate:g} req/s)", "p_link"),
    ]
    print(f"\n{args.conns} connections, 1 gateway worker, medians of {args.repeat}\n")
    print("| cell | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for label, key in rows:
        cells = results[key]
        errors = sum(cell["errors"] for cell in cells)
        rps, p50, p99 = (median(cells, k) for k in ("rps", "p50_ms", "p99_ms"))
        print(f"| {label} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors} |")
    ratio = median(results["prompt"], "rps") / median(results["hello"], "rps")
    added_closed = median(results["linked"], "p50_ms") - median(results["literal"], "p50_ms")
    added_paced = median(results["p_link"], "p50_ms") - median(results["p_lit"], "p50_ms")
    print()
    print(f"- cached prompt read vs bare constant JSON: {ratio:.2f}x req/s (target >= 0.8x: "
          f"{'met' if ratio >= 0.8 else 'MISSED'})")  # fmt: skip
    verdict = "met" if added_paced <= 0.5 else "MISSED"
    print(f"- prompt-linked chat adds {added_paced:+.3f} ms p50 paced at {args.rate:g} req/s (target <= 0.5 ms: "
          f"{verdict}); closed loop at {args.conns} conns: {added_closed:+.3f} ms p50")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=64, help="connections of every cell (default 64)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the table shows medians (default 3)")
    parser.add_argument("--rate", type=float, default=500.0, help="paced chat cells: total req/s (default 500)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 s cells, 1 repeat")
    parser.add_argument(
        "--bin-dir", type=Path, default=Path(sys.executable).parent, help="venv bin with python and gateway"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeat = 1.0, 1
    return args


if __name__ == "__main__":
    sys.exit(main())
