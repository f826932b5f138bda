"""Paced A/B of the LLM proxy: several gateway source trees (and the floor) against the fake upstream, one run.

``bench_llm.py`` compares the gateway with other proxies; this compares versions of the gateway with
each other, which its run-to-run noise (docs/benchmarks.md) cannot do:

    python loadtest/llm_paced.py --gateway before=/tmp/old-checkout --gateway after=. --floor --rounds 5

or one tree under two configurations (``--env-for NAME:KEY=VALUE`` sets a variable for one gateway only):

    python loadtest/llm_paced.py --gateway off=. --gateway on=. --env-for on:GATEWAY_JUDGES='{...}'

Each ``--gateway NAME=DIR`` is ``gateway serve`` with ``PYTHONPATH=DIR`` (a copy of the repository,
e.g. ``git worktree`` or an unpacked ``git archive``), one worker, the bench's route, spans to
``otlp_sink.py`` and its own SQLite store. ``--floor`` adds ``floor_llm_proxy.py`` (raw ASGI + aiohttp,
nothing else): what any Python proxy on uvicorn adds at least. ``--bare`` adds the bench's Starlette +
httpx passthrough. Proxies are pinned to the first cpu, the upstream, the sink and the client to the others.

Per round, per mode (``lat``: paced chat at ``--rate``; ``ttfc``: paced streamed chat at ``--stream-rate``,
time to the first event), every target in turn with ``llm_client.py``: p50, p99 and the server's CPU per
request. At the end: per target, the added p50 / p99 over direct of each round and their medians.
Imports nothing from ``gateway``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import llm_servers as ls
from llm_cells import chat_body, run_client
from llm_servers import HttpServer
from procs import Servers, free_port, log, terminate_on_sigterm, tree_cpu

HERE = Path(__file__).resolve().parent


def floor_server(layout: ls.Layout, upstream: str, cpus: list[int] | None) -> HttpServer:
    port = free_port()
    env = ls.base_env(layout)
    env.update({"BARE_LLM_UPSTREAM": f"{upstream}/v1", "BARE_LLM_API_KEY": ls.UPSTREAM_KEY})
    argv = [
        layout.python, "-m", "uvicorn", "floor_llm_proxy:app", "--app-dir", str(HERE), "--host", "127.0.0.1",
        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return HttpServer("floor", argv, env, layout.workdir, port, layout.log("floor"), cpus)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", action="append", default=[], metavar="NAME=DIR", help="a gateway source tree")
    p.add_argument("--floor", action="store_true", help="add floor_llm_proxy.py")
    p.add_argument("--bare", action="store_true", help="add bare_llm_proxy.py")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per cell")
    p.add_argument("--rate", type=float, default=110.0, help="req/s of the lat cells")
    p.add_argument("--stream-rate", type=float, default=60.0, help="req/s of the ttfc cells")
    p.add_argument("--no-lat", action="store_true")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE", help="for every gateway")
    p.add_argument(
        "--env-for", action="append", default=[], metavar="NAME:KEY=VALUE",
        help="for the gateway NAME only (e.g. the same tree twice with two configurations)",
    )  # fmt: skip
    p.add_argument("--bin-dir", default=str(HERE.parent / ".venv" / "bin"))
    p.add_argument("--keep-workdir", action="store_true")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llm-paced-"))
    layout = ls.Layout(workdir=work, bin_dir=Path(a.bin_dir))
    ncpu = os.cpu_count() or 1
    proxy_cpus = [0] if ncpu > 1 else None
    helper_cpus = list(range(1, ncpu)) if ncpu > 1 else None
    client_args = argparse.Namespace(python=layout.python, conns=a.conns, timeout=10.0)
    extra = dict(kv.split("=", 1) for kv in a.gateway_env)
    own: dict[str, dict[str, str]] = {}
    for spec in a.env_for:
        name, kv = spec.split(":", 1)
        key, value = kv.split("=", 1)
        own.setdefault(name, {})[key] = value
    servers = Servers(10)
    try:
        with terminate_on_sigterm():
            upstream = servers.start(ls.upstream_server(layout, helper_cpus), 60)
            sink = servers.start(ls.sink_server(layout, helper_cpus), 60)
            targets: dict[str, HttpServer | None] = {"direct": None}
            for spec in a.gateway:
                name, tree = spec.split("=", 1)
                (work / name).mkdir()
                gateway = ls.gateway_server(layout, upstream.base, sink.base, 1, proxy_cpus, extra)
                gateway.name, gateway.log_path = f"gateway-{name}", layout.log(f"gateway-{name}")
                gateway.env["PYTHONPATH"] = str(Path(tree).resolve())
                gateway.env["GATEWAY_STORE_URI"] = f"sqlite:///{work / name / 'store.db'}"
                gateway.env.update(own.get(name, {}))
                targets[f"gw-{name}"] = servers.start(gateway, 90)
            if a.floor:
                targets["floor"] = servers.start(floor_server(layout, upstream.base, proxy_cpus), 60)
            if a.bare:
                targets["bare"] = servers.start(ls.bare_server(layout, upstream.base, 1, proxy_cpus), 60)
            bodies = {}
            for stream in (False, True):
                bodies[stream] = work / f"body-{int(stream)}.json"
                bodies[stream].write_text(json.dumps(chat_body(stream)))
            modes = [] if a.no_lat else [("lat", False, a.rate)]
            modes += [] if a.no_stream else [("ttfc", True, a.stream_rate)]
            results: dict[str, dict[str, list[tuple[float, float, float]]]] = {}

            def cell(server: HttpServer | None, stream: bool, rate: float, duration: float) -> tuple[float, ...]:
                base = upstream.base if server is None else server.base
                pid = (server or upstream).proc.pid  # type: ignore[union-attr]
                before = sum(tree_cpu(pid).values())
                fig = run_client(
                    client_args, f"{base}/v1/chat/completions", bodies[stream], [], duration=duration, rate=rate,
                    requests=0, cpus=helper_cpus, ttfc=stream,
                )  # fmt: skip
                if fig["errors"]:
                    log(f"{fig['errors']} error(s): {fig['first_error']}")
                cpu_us = (sum(tree_cpu(pid).values()) - before) / max(fig["requests"], 1) * 1e6
                return fig["p50_ms"], fig["p99_ms"], cpu_us

            for server in targets.values():  # warm-up
                for _, stream, rate in modes:
                    cell(server, stream, rate, 2.0)
            for r in range(a.rounds):
                for mode, stream, rate in modes:
                    for name, server in targets.items():
                        p50, p99, cpu_us = cell(server, stream, rate, a.duration)
                        results.setdefault(mode, {}).setdefault(name, []).append((p50, p99, cpu_us))
                        print(f"round {r} {mode:4} {name:12} p50 {p50:.2f} p99 {p99:.2f} ms, cpu {cpu_us:.0f} us/req")
            for mode, per_target in results.items():
                print(f"== {mode}: added over direct, median of rounds (each round in brackets), ms")
                direct = per_target["direct"]
                for name, values in per_target.items():
                    if name == "direct":
                        continue
                    p50s = [v[0] - d[0] for v, d in zip(values, direct, strict=True)]
                    p99s = [v[1] - d[1] for v, d in zip(values, direct, strict=True)]
                    print(
                        f"  {name:12} p50 {statistics.median(p50s):+.2f} ({', '.join(f'{x:+.2f}' for x in p50s)})  "
                        f"p99 {statistics.median(p99s):+.2f} ({', '.join(f'{x:+.2f}' for x in p99s)})  "
                        f"cpu {statistics.median(v[2] for v in values):.0f} us/req"
                    )
    finally:
        servers.stop_all()
        if a.keep_workdir:
            print(f"workdir: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
