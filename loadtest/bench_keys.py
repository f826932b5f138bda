"""Gateway keys bench (issue 13's targets): what the key check and the limits cost.

Run ``python loadtest/bench_keys.py`` (``make bench-keys``), ``--quick`` for a smoke run. Like
``profile_invocations.py`` it imports ``gateway`` (part 1 calls the key check and the limiter in process); parts 2
and 3 run ``gateway serve`` and the fake upstream as subprocesses on free 127.0.0.1 ports, with a scratch SQLite
store, and need Redis on 127.0.0.1:6379 for the Redis figures (skipped, and said so, without it).

1. In process, CPU per request (``time.process_time``, medians of ``--repeat`` passes of ``--requests`` calls):
   the key check alone (``GatewayKeys.authorize_key``: sha256 of the key, the dict lookup, the comparison, scope
   and expiry) and the key check plus the local limit check (``KeyLimiter.admit`` with rpm, tpm and a budget, and
   the call's ``settle``). Target: <= 20 us per request together. Then ``admit`` against Redis at one connection:
   p50 and p99 of its round trip (the one Lua script), and the CPU of a check and its settlement.
2. A proxied chat completion at one connection (one keep-alive connection, calls one after another), through
   ``gateway serve`` on Redis with an unlimited key and with a key holding rpm, tpm and a budget, interleaved:
   p50 of each and the difference, and the server's CPU per call (/proc). Target: the Redis-backed check adds
   <= 0.3 ms p50. ``--block N`` alternates the two keys every N calls instead of every pass. ``--baseline DIR``
   (another checkout, e.g. ``git worktree add /tmp/before main``) runs that code's server beside this one's in
   the same run, all cells interleaved: a before/after on one machine.
3. ``POST /invocations`` of the iris demo, 1-row body (``make bench``'s iris cell) with ``wrk -t1`` (a second
   process) at 1 and 64 connections: auth off vs auth on (a stored key sent on every request), both servers up
   for the whole run and their cells alternated (off-on, then on-off), medians of ``--repeat`` passes and the
   ratio per pass. Target: within 5%.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gateway.keys import GatewayKey, GatewayKeys  # noqa: E402
from gateway.limit_settings import LimitsSettings  # noqa: E402
from gateway.limits.limiter import KeyLimiter  # noqa: E402
from gateway.llm.routes_config import SCOPES, AuthSettings  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN = "gw-bench-admin-key"
IRIS_BODY = {
    "dataframe_split": {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "data": [[5.1, 3.5, 1.4, 0.2]],
    }
}
CHAT = {"model": "bench", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


# -- 1. in process ---------------------------------------------------------------------------------------------------


def _keys_and_key() -> tuple[GatewayKeys, GatewayKey, str]:
    secret = "gw_bench-" + "x" * 40
    keys = GatewayKeys(AuthSettings(key_hashes=frozenset({hashlib.sha256(ADMIN.encode()).hexdigest()})))
    key = GatewayKey(
        id="0123456789ab", name="bench", digest=hashlib.sha256(secret.encode()).hexdigest(), scopes=frozenset(SCOPES),
        rpm=10**9, tpm=10**12, budget_usd=10.0**9,
    )  # fmt: skip
    keys.update([key])
    return keys, key, f"Bearer {secret}"


class _Usage:
    input_tokens = 5
    output_tokens = 7


def in_process(requests: int, repeat: int) -> dict[str, Any]:
    keys, _, header = _keys_and_key()
    body = {"model": "bench", "max_tokens": 16}

    def check_only() -> float:
        start = time.process_time()
        for _ in range(requests):
            keys.authorize_key("llm", header, "/v1/chat/completions")
        return (time.process_time() - start) / requests * 1e6

    async def check_and_limit(limiter: KeyLimiter) -> float:
        start = time.process_time()
        for _ in range(requests):
            key = keys.authorize_key("llm", header, "/v1/chat/completions")
            assert key is not None
            admission = await limiter.admit(key, None, body)
            admission.settle(_Usage(), 0.0)
        return (time.process_time() - start) / requests * 1e6

    result: dict[str, Any] = {
        "key_check_us": statistics.median(check_only() for _ in range(repeat)),
        "key_and_local_limit_us": statistics.median(
            asyncio.run(check_and_limit(KeyLimiter(LimitsSettings()))) for _ in range(repeat)
        ),
    }
    if _redis_up():

        async def redis_round_trips() -> tuple[list[float], float]:
            limiter = KeyLimiter(LimitsSettings(), REDIS_URL)
            _, key, _ = _keys_and_key()
            times = []
            count = min(requests, 5000)
            used = time.process_time()
            for _ in range(count):
                start = time.perf_counter()
                admission = await limiter.admit(key, None, body)
                times.append(time.perf_counter() - start)
                admission.settle(_Usage(), 0.0001)
                await asyncio.sleep(0)  # the settlement's answer is read before the next check, as between calls
            cpu_us = (time.process_time() - used) / count * 1e6
            await limiter.close()
            return sorted(times), cpu_us

        times, cpu_us = asyncio.run(redis_round_trips())
        result["redis_admit_p50_ms"] = times[len(times) // 2] * 1e3
        result["redis_admit_p99_ms"] = times[int(len(times) * 0.99)] * 1e3
        result["redis_admit_and_settle_cpu_us"] = cpu_us
    return result


# -- 2. and 3. gateway serve ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(argv: list[str], env: dict[str, str], ready: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:3]} exited with {proc.returncode}: {log.read_text()[-800:]}")
            try:
                if httpx.get(ready, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready} not ready: {log.read_text()[-800:]}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)


def _env(work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}
    env.update({"GATEWAY_STORE_URI": f"sqlite:///{work}/store.db", "GATEWAY_ARTIFACT_ROOTS": str(work), **extra})
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _make_key(bin_dir: Path, env: dict[str, str], name: str, *limits: str) -> str:
    made = subprocess.run(
        [str(bin_dir / "gateway"), "keys", "create", "--name", name, "--scope", "llm", "--scope", "invoke",
         *limits, "--json"], env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    secret: str = json.loads(made.stdout)["key"]
    return secret


def _cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proxied_calls(
    bin_dir: Path, work: Path, calls: int, repeat: int, baseline: Path | None = None, block: int = 0
) -> dict[str, Any]:
    """Part 2: p50 of a proxied call with an unlimited and a limited key, interleaved: ``calls`` of one key, then
    of the other, per pass; with ``block``, alternating every ``block`` calls instead (less drift between the two
    keys' figures, on a host whose speed wanders). With ``baseline`` (another checkout of the gateway), its
    ``gateway serve`` runs beside this one's and its cells are interleaved too."""
    if not _redis_up():
        return {"skipped": "Redis is not reachable at 127.0.0.1:6379"}
    upstream_port = _free_port()
    config = work / "llm.json"
    config.write_text(json.dumps({"routes": [{"name": "bench", "targets": [
        {"base_url": f"http://127.0.0.1:{upstream_port}/v1", "model": "fake-model",
         "input_price_per_mtok": 0.15, "output_price_per_mtok": 0.6}]}]}))  # fmt: skip
    env = _env(
        work, GATEWAY_REDIS_URL=REDIS_URL, GATEWAY_LLM=config.read_text(),
        GATEWAY_AUTH=json.dumps({"keys": [hashlib.sha256(ADMIN.encode()).hexdigest()]}),
    )  # fmt: skip
    plain = _make_key(bin_dir, env, f"plain-{upstream_port}")
    limited = _make_key(bin_dir, env, f"limited-{upstream_port}", "--rpm", "100000000", "--tpm", "1000000000",
                        "--budget-usd", "1000000")  # fmt: skip
    python = str(bin_dir / "python")
    upstream = [python, str(HERE / "fake_upstream.py"), "--port", str(upstream_port)]
    builds = {"current": env}
    if baseline is not None:
        builds = {"baseline": {**env, "PYTHONPATH": str(baseline) + os.pathsep + os.environ.get("PYTHONPATH", "")},
                  **builds}  # fmt: skip
    p50: dict[str, dict[str, list[float]]] = {build: {"plain": [], "limited": []} for build in builds}
    cpu: dict[str, dict[str, list[float]]] = {build: {"plain": [], "limited": []} for build in builds}
    with contextlib.ExitStack() as stack:
        stack.enter_context(_process(upstream, env, f"http://127.0.0.1:{upstream_port}/v1/models", work / "up.log"))
        servers: dict[str, tuple[str, int]] = {}
        for build, build_env in builds.items():
            port = _free_port()
            gateway = [str(bin_dir / "gateway"), "serve", "--port", str(port), "--workers", "1"]
            proc = stack.enter_context(
                _process(gateway, build_env, f"http://127.0.0.1:{port}/ping", work / f"gateway-{build}.log")
            )
            servers[build] = (f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid)
        for _ in range(repeat):
            for build, (url, pid) in servers.items():
                with contextlib.ExitStack() as open_clients:
                    clients = {
                        name: open_clients.enter_context(
                            httpx.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=30)
                        )
                        for name, secret in (("plain", plain), ("limited", limited))
                    }
                    for client in clients.values():
                        for _ in range(min(200, calls)):  # warm-up
                            client.post(url, json=CHAT)
                    times: dict[str, list[float]] = {name: [] for name in clients}
                    used = dict.fromkeys(clients, 0.0)
                    size = block or calls
                    for _ in range(max(1, calls // size)):  # the keys' calls in blocks of ``size``, alternating
                        for name, client in clients.items():
                            before = _cpu_s(pid)
                            for _ in range(size):
                                start = time.perf_counter()
                                answer = client.post(url, json=CHAT)
                                times[name].append(time.perf_counter() - start)
                                assert answer.status_code == 200, answer.text
                            used[name] += _cpu_s(pid) - before
                for name in clients:
                    cpu[build][name].append(used[name] / len(times[name]) * 1e6)
                    p50[build][name].append(statistics.median(times[name]) * 1e3)
    result: dict[str, Any] = {}
    for build in builds:
        plain_ms, limited_ms = statistics.median(p50[build]["plain"]), statistics.median(p50[build]["limited"])
        added = [lim - pl for pl, lim in zip(p50[build]["plain"], p50[build]["limited"], strict=True)]
        result[build] = {
            "plain_p50_ms": plain_ms,
            "limited_p50_ms": limited_ms,
            "added_p50_ms": limited_ms - plain_ms,
            "added_p50_ms_per_pass": added,
            "gateway_cpu_us_per_call": {name: statistics.median(values) for name, values in cpu[build].items()},
            "runs": p50[build],
        }
    return result if baseline is not None else result["current"]


def _wrk(url: str, body: Path, conns: int, duration: float, headers: list[str]) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--timeout=10s"]
    for header in headers:
        argv += ["-H", header]
    argv += ["-s", str(HERE / "wrk_post.lua"), url]
    proc = subprocess.run(argv, env={**os.environ, "WRK_BODY_FILE": str(body)}, capture_output=True, text=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    if raw["status"]:
        raise RuntimeError(f"{raw['status']} answers were not 2xx ({url}, {headers})")
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50"] / 1e3,
        "requests": raw["requests"],
    }


def invocations(bin_dir: Path, work: Path, duration: float, repeat: int, conns: list[int]) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    python, gateway = str(bin_dir / "python"), str(bin_dir / "gateway")
    package = work / "iris"
    env = _env(work)
    subprocess.run([python, "-m", "gateway.demo", "--out", str(package)], env=env, check=True, capture_output=True)
    subprocess.run([gateway, "models", "register", "iris", str(package), "--alias", "champion"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    secret = _make_key(bin_dir, env, "scoring")
    body = work / "iris.json"
    body.write_text(json.dumps(IRIS_BODY))
    modes = {
        "off": (env, []),
        "on": ({**env, "GATEWAY_AUTH": json.dumps({"keys": [hashlib.sha256(ADMIN.encode()).hexdigest()]})},
               [f"Authorization: Bearer {secret}"]),
    }  # fmt: skip
    runs: dict[str, dict[int, list[dict[str, float]]]] = {mode: {c: [] for c in conns} for mode in modes}
    with contextlib.ExitStack() as stack:
        servers: dict[str, tuple[str, int]] = {}
        for mode, (mode_env, _) in modes.items():  # both servers up for the whole run: cells side by side in time
            port = _free_port()
            argv = [gateway, "serve", "--port", str(port), "--workers", "1", "--model", "models:/iris@champion"]
            log = work / f"gateway-{mode}.log"
            proc = stack.enter_context(_process(argv, mode_env, f"http://127.0.0.1:{port}/health", log))
            servers[mode] = (f"http://127.0.0.1:{port}/invocations", proc.pid)
            _wrk(servers[mode][0], body, 16, 1.0, modes[mode][1])  # warm-up
        for index in range(repeat):
            order = list(modes) if index % 2 == 0 else list(reversed(modes))  # off-on, then on-off: no drift bias
            for count in conns:
                for mode in order:
                    url, pid = servers[mode]
                    used = _cpu_s(pid)
                    cell = _wrk(url, body, count, duration, modes[mode][1])
                    cell["server_cpu_us"] = (_cpu_s(pid) - used) / cell["requests"] * 1e6
                    runs[mode][count].append(cell)
    result: dict[str, Any] = {}
    for count in conns:
        off = [r["rps"] for r in runs["off"][count]]
        on = [r["rps"] for r in runs["on"][count]]
        result[f"{count}_conns"] = {
            "off_rps": statistics.median(off),
            "on_rps": statistics.median(on),
            "on_vs_off": statistics.median(on) / statistics.median(off),
            "on_vs_off_per_pass": [b / a for a, b in zip(off, on, strict=True)],
            "off_p50_ms": statistics.median(r["p50_ms"] for r in runs["off"][count]),
            "on_p50_ms": statistics.median(r["p50_ms"] for r in runs["on"][count]),
            # the server's CPU per request (/proc): what auth adds, less shaken by other load than req/s
            "off_server_cpu_us": statistics.median(r["server_cpu_us"] for r in runs["off"][count]),
            "on_server_cpu_us": statistics.median(r["server_cpu_us"] for r in runs["on"][count]),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer requests, 1 repeat, 1 s cells")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--requests", type=int, default=50_000, help="in-process calls per pass")
    parser.add_argument("--calls", type=int, default=2000, help="proxied calls per pass (part 2)")
    parser.add_argument(
        "--block", type=int, default=0, help="part 2: alternate the two keys every BLOCK calls (default: whole passes)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk cell (part 3)")
    parser.add_argument("--conns", default="1,64")
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent)
    parser.add_argument("--only", choices=["1", "2", "3"], action="append", help="run only these parts")
    parser.add_argument(
        "--baseline", type=Path, help="part 2: another checkout of the gateway (e.g. git worktree of main) to measure "
        "in the same run, its server beside this one's, cells interleaved",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.requests, args.calls, args.duration = 1, 5000, 300, 1.0
    parts = set(args.only or ["1", "2", "3"])
    report: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    if "1" in parts:
        report["in_process"] = in_process(args.requests, args.repeat)
        print(json.dumps({"in_process": report["in_process"]}), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as scratch:
        work = Path(scratch)
        if "2" in parts:
            (work / "llm").mkdir()
            report["proxied_call_1_conn"] = proxied_calls(
                args.bin_dir, work / "llm", args.calls, args.repeat, args.baseline, args.block
            )
        if "3" in parts:
            (work / "inv").mkdir()
            conns = [int(c) for c in args.conns.split(",")]
            report["invocations_auth"] = invocations(args.bin_dir, work / "inv", args.duration, args.repeat, conns)
    report["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
