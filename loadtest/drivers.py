"""Load drivers: one closed-loop load cell with ``wrk -t1`` or ``loadgen.py``, and the probe request.

``wrk`` is used when installed (``loadtest/wrk_post.lua`` posts the body and prints a
``BENCH_JSON`` summary line); otherwise ``loadtest/loadgen.py``, an asyncio keep-alive generator.
Either runs in its own process, optionally pinned to cpus the server does not use. Both report
the same normalised figures.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from procs import affinity

HERE = Path(__file__).resolve().parent


def uses_wrk(generator: str) -> bool:
    return generator == "wrk" or (generator == "auto" and shutil.which("wrk") is not None)


def run_load(
    *,
    generator: str,
    python: str,
    url: str,
    body_file: Path,
    conns: int,
    duration: float,
    timeout: float,
    cpus: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run one load cell in a child process and return normalised figures.

    Keys: generator, requests, rps, p50_ms, p99_ms, non2xx, socket_errors, errors,
    generator_cpu_frac (the generator's CPU seconds per wall second), raw (its own output).
    Raises RuntimeError when the generator fails or prints no summary.
    """
    env = dict(os.environ)
    wrk = uses_wrk(generator)
    if wrk:
        secs = max(1, round(duration))
        argv = [
            "wrk", "-t1", f"-c{conns}", f"-d{secs}s", f"--timeout={max(1, round(timeout))}s",
            "-s", str(HERE / "wrk_post.lua"), url,
        ]  # fmt: skip
        env["WRK_BODY_FILE"] = str(body_file)
    else:
        argv = [
            python, str(HERE / "loadgen.py"), "--url", url, "--body-file", str(body_file),
            "--conns", str(conns), "--duration", str(duration), "--timeout", str(timeout),
        ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + timeout + 30,
        preexec_fn=affinity(cpus),
        stdin=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    if wrk:
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no summary: {proc.stdout[-500:]}")
        raw = json.loads(line.removeprefix("BENCH_JSON "))
        socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
        elapsed = raw["duration_us"] / 1e6
        return {
            "generator": "wrk",
            "requests": raw["requests"],
            "rps": raw["requests"] / elapsed if elapsed else 0.0,
            "p50_ms": raw["p50"] / 1e3,
            "p99_ms": raw["p99"] / 1e3,
            "non2xx": raw["status"],
            "socket_errors": socket_errors,
            "errors": raw["status"] + socket_errors,
            "generator_cpu_frac": gen_cpu / max(elapsed, 1e-9),
            "raw": raw,
        }
    raw = json.loads(proc.stdout)
    return {
        "generator": "loadgen.py",
        "requests": raw["requests"],
        "rps": raw["rps"],
        "p50_ms": raw["latency_us"]["p50"] / 1e3,
        "p99_ms": raw["latency_us"]["p99"] / 1e3,
        "non2xx": raw["non200"],
        "socket_errors": raw["socket_errors"] + raw["timeouts"],
        "errors": raw["errors"],
        "generator_cpu_frac": raw["generator_cpu_s"] / max(raw["duration_s"], 1e-9),
        "raw": raw,
    }


def probe(url: str, body: bytes, expect_predictions: bool, expect_count: int | None = None) -> str:
    """One request; return '' when the answer is a 200 of the expected shape, else why not."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, text = resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return f"probe failed: {exc}"
    if status != 200:
        return f"probe answered HTTP {status}: {text[:300]}"
    if expect_predictions:
        try:
            predictions = json.loads(text)["predictions"]
        except (ValueError, KeyError, TypeError):
            return f"probe answer has no 'predictions': {text[:300]}"
        if not predictions:
            return f"probe answer has empty predictions: {text[:300]}"
        if expect_count is not None and len(predictions) != expect_count:
            return f"probe answer has {len(predictions)} predictions for {expect_count} rows: {text[:300]}"
    return ""


def get_json(url: str, timeout: float = 10.0) -> Any:
    """GET ``url`` and decode its JSON answer; None when it fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
