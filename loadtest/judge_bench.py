"""The judge benches' shared plumbing (bench_judges.py, bench_judge_queue.py, bench_backfill.py), written once:

- their common flags (``--keep-workdir``, ``--bin-dir``; the queue benches' ``--workers``, ``--concurrency``,
  ``--backends``) and a scratch directory whose servers are stopped (also on SIGTERM) and which is removed on
  the way out unless kept;
- for the two queue benches, per backend (``redis`` or ``store``): a ``gateway serve`` with a captured route
  ``chat`` and a judge route ``judge`` on the fake upstream and ``judges.workers: external``, its ``gateway
  judges worker`` processes, the chat calls whose traces are judged, and the bench's Redis keys deleted after.

Imports nothing from ``gateway``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_servers import UPSTREAM_KEY, UPSTREAM_KEY_ENV, UPSTREAM_MODEL, HttpServer, Layout, base_env
from procs import Server, Servers, call, free_port, log, terminate_on_sigterm

REDIS_URL = "redis://127.0.0.1:6379/0"


class WorkerProcess(Server):
    """A ``gateway judges worker``: ready once its log says it started."""

    ready_poll_s = 0.1

    def ready(self) -> bool:
        return "started" in self.log_tail(50)

    def not_ready(self, timeout: float) -> str:
        return f"{self.name} did not start within {timeout:.0f}s"


def forget_redis_keys(prefix: str) -> None:
    """Delete the bench queue's keys (its streams, groups, retries, dead letters, pauses) from Redis."""
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def make_calls(base: str, count: int) -> None:
    """``count`` chat calls on the route ``chat`` (16 at once): the stored calls the judges judge."""

    def one(i: int) -> None:
        call("POST", f"{base}/v1/chat/completions",
             {"model": "chat", "messages": [{"role": "user", "content": f"Is {i} a safe number to say?"}]})  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


def add_scratch_args(parser: argparse.ArgumentParser, kept: str) -> None:
    """``--keep-workdir`` (``kept``: what the scratch dir holds, for the help) and ``--bin-dir``."""
    parser.add_argument("--keep-workdir", action="store_true", help=f"keep the scratch dir ({kept})")
    parser.add_argument(
        "--bin-dir", type=Path, default=Path(sys.executable).parent, help="venv bin with python and gateway"
    )


def add_queue_args(parser: argparse.ArgumentParser) -> None:
    """The queue benches' ``--workers``, ``--concurrency`` and ``--backends``."""
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="jobs in hand per worker (default 32)")
    parser.add_argument("--backends", type=lambda text: text.split(","), default=["redis", "store"],
                        help="comma-separated: redis, store (default both)")  # fmt: skip


@contextlib.contextmanager
def scratch(prefix: str, args: argparse.Namespace) -> Iterator[tuple[Layout, Servers]]:
    """A scratch directory (``prefix``) laid out for ``args.bin_dir``'s programs, and the servers started in it:
    stopped on the way out (SIGTERM too), the directory then removed unless ``args.keep_workdir``."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    servers = Servers(grace=15)
    try:
        with terminate_on_sigterm():
            yield Layout(workdir=workdir, bin_dir=args.bin_dir), servers
    finally:
        servers.stop_all()
        if args.keep_workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclasses.dataclass
class QueueBackend:
    """One backend's ``gateway serve`` (judges.workers: external) and what its worker processes need."""

    backend: str
    layout: Layout
    config: Path
    env: dict[str, str]
    servers: Servers
    gateway: HttpServer

    def start_workers(self, count: int, concurrency: int, profile: Path | None = None) -> list[Server]:
        """``count`` ``gateway judges worker`` processes, each once it has started; under cProfile (one
        ``worker-<backend>-<i>.prof`` each in ``profile``) when given."""
        workers: list[Server] = []
        for index in range(count):
            name = f"worker-{self.backend}-{index}"
            argv = [str(self.layout.bin_dir / "gateway"), "judges", "worker", "--config", str(self.config),
                    "--concurrency", str(concurrency)]  # fmt: skip
            if profile is not None:
                profile.mkdir(parents=True, exist_ok=True)
                out = profile / f"{name}.prof"
                argv = [self.layout.python, "-m", "cProfile", "-o", str(out), "-m", "gateway", *argv[1:]]
            worker = WorkerProcess(name, argv, self.env, self.layout.workdir, 0, self.layout.log(name))
            workers.append(self.servers.start(worker, 60))
        return workers


def write_config(layout: Layout, upstream: str, backend: str, prefix: str, judges: dict[str, Any]) -> Path:
    """The gateway's (and its workers') configuration: a store per backend, the routes ``chat`` (content
    captured) and ``judge`` on the fake upstream, the judge queue under ``prefix``, ``judges`` added to the
    judges section, and Redis for the ``redis`` backend."""
    target = {"base_url": f"{upstream}/v1", "model": UPSTREAM_MODEL, "api_key_env": UPSTREAM_KEY_ENV}
    config: dict[str, Any] = {
        "store_uri": f"sqlite:///{layout.workdir / backend}.db",
        "log_level": "info",
        "llm": {"routes": [{"name": "chat", "capture_content": True, "targets": [target]},
                           {"name": "judge", "timeout_s": 30, "targets": [target]}]},
        "judges": {"route": "judge", "workers": "external", "queue": {"key_prefix": prefix}, **judges},
    }  # fmt: skip
    if backend == "redis":
        config["redis_url"] = REDIS_URL
    path = layout.workdir / f"gateway-{backend}.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@contextlib.contextmanager
def queue_backend(
    layout: Layout, upstream: str, backend: str, bench: str, judges: dict[str, Any], env: dict[str, str] | None = None
) -> Iterator[QueueBackend]:
    """``backend``'s gateway (one worker, on a free 127.0.0.1 port), its queue keys under ``bench:<random>:``
    (``judges`` and ``env`` added to its configuration and environment); on the way out its servers (and the
    workers started through it) are stopped and, on Redis, its keys deleted."""
    prefix = f"{bench}:{uuid.uuid4().hex[:8]}:"
    config = write_config(layout, upstream, backend, prefix, judges)
    environ = {**base_env(layout), UPSTREAM_KEY_ENV: UPSTREAM_KEY, **(env or {})}
    servers = Servers(grace=15)
    try:
        port = free_port()
        argv = [str(layout.bin_dir / "gateway"), "serve", "--config", str(config), "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--log-level", "warning"]  # fmt: skip
        gateway = servers.start(HttpServer(f"gateway-{backend}", argv, environ, layout.workdir, port,
                                           layout.log(f"gateway-{backend}")), 120)  # fmt: skip
        yield QueueBackend(backend, layout, config, environ, servers, gateway)
    finally:
        servers.stop_all()
        if backend == "redis":
            forget_redis_keys(prefix)
