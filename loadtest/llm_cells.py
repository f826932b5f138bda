"""The LLM bench's requests: the bodies, one load cell (wrk or llm_client.py), and the probe.

Every target gets the same small chat body (``chat_body``), its streamed variant, a tool-call
stream body for the fake upstream, and the same request in the Responses API's form
(``responses_body``, sent to ``/v1/responses``). ``run_wrk`` drives a closed loop with ``wrk -t1`` and
``wrk_post.lua`` (``-H`` for LiteLLM's key), or ``llm_client.py`` when wrk is absent;
``run_client`` runs ``llm_client.py`` paced. Both run in a child process, optionally pinned, and
return the same normalised figures. Imports nothing from ``gateway``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from llm_report import Cell
from llm_servers import ROUTE, HttpServer
from procs import affinity, tree_cpu

HERE = Path(__file__).resolve().parent


def chat_body(stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": ROUTE,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello in five words."},
        ],
        "max_tokens": 16,
        "temperature": 0,
    }
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def responses_body(stream: bool) -> dict[str, Any]:
    """``chat_body`` as a Responses API request (``instructions`` and ``input``)."""
    body: dict[str, Any] = {
        "model": ROUTE,
        "instructions": "You are a terse assistant.",
        "input": "Say hello in five words.",
        "max_output_tokens": 16,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return body


def tool_stream_body(deltas: int) -> dict[str, Any]:
    """A streamed tool call the fake upstream answers with ``deltas`` argument deltas (its knob)."""
    body = chat_body(stream=True)
    body["tools"] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    body["fake"] = {"tool_call_deltas": deltas}
    return body


def run_wrk(
    args: argparse.Namespace, url: str, body: Path, headers: list[str], duration: float, cpus: Any
) -> dict[str, Any]:
    """One closed-loop cell with ``wrk -t1`` (or llm_client.py); normalised figures."""
    if not (args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk"))):
        return run_client(args, url, body, headers, duration=duration, rate=0.0, requests=0, cpus=cpus)
    argv = [
        "wrk",
        "-t1",
        f"-c{args.conns}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(args.timeout))}s",
    ]
    for header in headers:
        argv += ["-H", header]
    argv += ["-s", str(HERE / "wrk_post.lua"), url]
    env = {**os.environ, "WRK_BODY_FILE": str(body)}
    proc = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=duration + args.timeout + 30,
        preexec_fn=affinity(cpus), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {proc.stdout[-300:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    elapsed = raw["duration_us"] / 1e6
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "generator": "wrk",
        "requests": raw["requests"],
        "rps": raw["requests"] / elapsed if elapsed else 0.0,
        "p50_ms": raw["p50"] / 1e3,
        "p99_ms": raw["p99"] / 1e3,
        "errors": raw["status"] + socket_errors,
        "first_error": f"{raw['status']} non-2xx, {socket_errors} socket errors"
        if raw["status"] + socket_errors
        else "",
        "late": 0,
        "generator_cpu_frac": float("nan"),
        "events_min": 0,
        "events_max": 0,
        "raw": raw,
    }


def run_client(
    args: argparse.Namespace,
    url: str,
    body: Path,
    headers: list[str],
    *,
    duration: float,
    rate: float,
    requests: int,
    cpus: Any,
    ttfc: bool = False,
    first_event: str | None = None,
) -> dict[str, Any]:
    """One cell with llm_client.py (paced when ``rate`` > 0); p50/p99 are TTFC when ``ttfc`` (to the first
    event of type ``first_event``, when given)."""
    argv = [args.python, str(HERE / "llm_client.py"), "--url", url, "--body-file", str(body)]
    if first_event:
        argv += ["--first-event", first_event]
    argv += ["--conns", str(args.conns), "--duration", str(duration), "--timeout", str(args.timeout)]
    argv += ["--rate", str(rate)] if rate > 0 else (["--requests", str(requests)] if requests else [])
    for header in headers:
        argv += ["--header", header]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + args.timeout + 60,
        preexec_fn=affinity(cpus), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"llm_client.py failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    raw = json.loads(proc.stdout)
    pct = raw["ttfc_us"] if ttfc else raw["latency_us"]
    return {
        "generator": "llm_client.py",
        "requests": raw["requests"],
        "rps": raw["rps"],
        "p50_ms": pct["p50"] / 1e3,
        "p99_ms": pct["p99"] / 1e3,
        "errors": raw["errors"],
        "first_error": raw["first_error"],
        "late": raw["late"],
        "generator_cpu_frac": raw["generator_cpu_s"] / max(raw["duration_s"], 1e-9),
        "events_min": raw["events_min"],
        "events_max": raw["events_max"],
        "raw": raw,
    }


def measure(server: HttpServer, cell: Cell, run: Any) -> None:
    """Run one cell against ``server``; fill ``cell`` with its figures and the server's CPU per request."""
    assert server.proc is not None
    before = sum(tree_cpu(server.proc.pid).values())
    try:
        fig = run()
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        cell.failure = str(exc)
        return
    cpu = sum(tree_cpu(server.proc.pid).values()) - before
    for key in (
        "rps",
        "p50_ms",
        "p99_ms",
        "requests",
        "errors",
        "late",
        "generator",
        "generator_cpu_frac",
        "first_error",
        "events_min",
        "events_max",
    ):
        setattr(cell, key, fig[key])
    cell.server_cpu_us_per_req = cpu / fig["requests"] * 1e6 if fig["requests"] else float("nan")


def post_json(url: str, body: dict[str, Any], headers: list[str], timeout: float = 30.0) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    for header in headers:
        name, _, value = header.partition(":")
        request.add_header(name.strip(), value.strip())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, f"request failed: {exc}"


def probe(url: str, headers: list[str]) -> str:
    """'' when a chat and a streamed chat both answer 200 of the right shape, else why not."""
    status, text = post_json(url, chat_body(stream=False), headers)
    if status != 200:
        return f"probe answered HTTP {status}: {text[:300]}"
    try:
        if not json.loads(text)["choices"]:
            return f"probe answer has no choices: {text[:300]}"
    except (ValueError, KeyError, TypeError):
        return f"probe answer is not a chat completion: {text[:300]}"
    status, text = post_json(url, chat_body(stream=True), headers)
    if status != 200 or "data:" not in text:
        return f"streaming probe answered HTTP {status}: {text[:300]}"
    return ""
