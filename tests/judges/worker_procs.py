"""Helpers of the judge queue and worker tests: a Redis Streams queue under a prefix of the test's own,
stored LLM calls to judge (trace summaries, as the trace sink writes them), ``gateway judges worker``
processes on a configuration file (the store, Redis, an LLM route to the fake upstream as the judge), and
Redis as its clients see it when it fails: cut off (:class:`TcpProxy`) or stalled (:class:`StalledServer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import yaml

from gateway.store.assessments import AssessmentStore
from gateway.store.registry import RegistryStore
from gateway.store.traces import COLUMNS, TraceStore
from judges.queue.jobs import ONLINE, JudgeJob
from judges.queue.redis_streams import RedisStreamsQueue
from tests.conftest import REDIS_URL, require_service
from tests.llm.conftest import PROVIDER_KEY, PROVIDER_KEY_ENV, FakeUpstream, target, wait_until

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
# Small bounds so that a test sees reclaims and retries within a second or two.
FAST_QUEUE: dict[str, Any] = {
    "min_idle_s": 1.0,
    "reclaim_interval_s": 0.2,
    "max_deliveries": 3,
    "retry_base_s": 0.05,
    "retry_max_s": 0.5,
    "claim_block_s": 0.2,
}


def unique_prefix() -> str:
    return f"test:judges:{uuid.uuid4().hex[:12]}:"


def run(work: Callable[[RedisStreamsQueue], Awaitable[T]], prefix: str) -> T:
    """``work(queue)`` on a fresh event loop with a queue of its own under ``prefix``."""

    async def main() -> T:
        queue = RedisStreamsQueue(REDIS_URL, key_prefix=prefix)
        try:
            return await work(queue)
        finally:
            await queue.close()

    return asyncio.run(main())


def online_job(trace_id: str, judge: str = "safety") -> JudgeJob:
    return JudgeJob(kind=ONLINE, judge=judge, enqueued_at=time.time(), trace_id=trace_id, span_id=span_of(trace_id))


def span_of(trace_id: str) -> str:
    return trace_id[:16]


def store_calls(store_uri: str, count: int, *, attributes: dict[str, Any] | None = None) -> list[str]:
    """``count`` stored LLM calls (trace summaries with captured content), as the trace sink writes them;
    their trace ids."""
    store = RegistryStore.open(store_uri)
    try:
        rows, now_ms = [], int(time.time() * 1000)
        for index in range(count):
            trace_id = uuid.uuid4().hex
            row: dict[str, Any] = dict.fromkeys(COLUMNS)
            row.update(
                trace_id=trace_id,
                span_id=span_of(trace_id),
                started_at=now_ms,
                duration_ms=12.0,
                operation="chat",
                route="chat",
                stream=False,
                input_content=_messages("user", f"Question {index}: what is the capital of Australia?"),
                output_content=_messages("assistant", "Canberra."),
                attributes=json.dumps(attributes or {}),
            )
            rows.append(row)
        TraceStore(store.engine).insert_many(rows)
        return [row["trace_id"] for row in rows]
    finally:
        store.close()


def _messages(role: str, text: str) -> str:
    return orjson.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}]).decode()


def count_assessments(store_uri: str, name: str = "safety") -> int:
    store = RegistryStore.open(store_uri)
    try:
        return AssessmentStore(store.engine).count(name=name)
    finally:
        store.close()


def write_config(
    tmp_path: Path, upstream: FakeUpstream, prefix: str, model: str, redis_url: str | None = REDIS_URL, **queue: Any
) -> Path:
    """A configuration: the store in ``tmp_path``, Redis (None: none, the queue is the store's), route ``judge``
    to the fake upstream's ``model`` (no retries in the proxy: the worker's retries are under test), the
    built-in judges on it."""
    config = {
        "store_uri": f"sqlite:///{tmp_path}/store.db",
        **({"redis_url": redis_url} if redis_url else {}),
        "log_level": "info",
        "llm": {"routes": [{"name": "judge", "retries": 0, "targets": [target(upstream, model)]}]},
        "judges": {"route": "judge", "queue": {"key_prefix": prefix, **FAST_QUEUE, **queue}},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Worker:
    """A ``gateway judges worker`` process; its stderr in a file (read with :meth:`log`)."""

    process: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = field(default=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def outcomes(self) -> dict[str, int]:
        """The jobs by outcome of the worker's last log line (after it stopped)."""
        marker = "jobs by outcome: "
        line = next(line for line in reversed(self.log().splitlines()) if marker in line)
        counts: dict[str, int] = json.loads(line.split(marker, 1)[1])
        return counts

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@contextlib.contextmanager
def workers(config: Path, count: int = 1, *, concurrency: int = 4) -> Iterator[list[Worker]]:
    """``count`` worker processes on ``config``, stopped (SIGTERM, else SIGKILL) at the end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), PROVIDER_KEY_ENV: PROVIDER_KEY}
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "GATEWAY_METRICS_DIR"):
        env.pop(name, None)
    started: list[Worker] = []
    try:
        for index in range(count):
            log_path = config.parent / f"worker-{index}.log"
            with log_path.open("wb") as log:
                command = [sys.executable, "-m", "gateway", "judges", "worker", "--config", str(config)]
                command += ["--concurrency", str(concurrency), "--grace-s", "5"]
                process = subprocess.Popen(command, cwd=config.parent, env=env, stdout=log, stderr=log)
            started.append(Worker(process, log_path))
        for worker in started:
            wait_until(lambda w=worker: "started" in w.log() or w.process.poll() is not None, timeout_s=30,  # type: ignore[misc]
                       what="the worker to start")  # fmt: skip
            assert worker.process.poll() is None, worker.log()
        yield started
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
                try:
                    worker.process.wait(15)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait(5)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own, its keys deleted afterwards (skips without Redis)."""
    require_service("Redis", "127.0.0.1", 6379)
    chosen = unique_prefix()
    yield chosen
    run(lambda queue: queue.delete_all(), chosen)


class TcpProxy:
    """A loopback TCP proxy to Redis that a test can cut (every connection dropped, new ones closed at
    once, as a Redis restart looks to its clients) and restore, or stall (Redis's replies held back, the
    connections left open, as a stalled Redis looks to its clients); ``url`` is the Redis URL through it."""

    def __init__(self, target_port: int = 6379) -> None:
        self.target_port = target_port
        self.open = True
        self.stalled = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(5)
        self.url = f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, replies: bool) -> None:
            try:
                while data := await source.read(65536):
                    while replies and self.stalled:
                        await asyncio.sleep(0.01)
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        self._writers.difference_update((writer, up_writer))

    def cut(self) -> None:
        def drop() -> None:
            self.open = False
            for writer in list(self._writers):
                writer.close()

        self._loop.call_soon_threadsafe(drop)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(lambda: setattr(self, "open", True))

    def stall(self, stalled: bool = True) -> None:
        """Hold Redis's replies back (``stalled``) or let them through again, every connection's."""
        self._loop.call_soon_threadsafe(lambda: setattr(self, "stalled", stalled))

    def close(self) -> None:
        """Drop every connection and stop, all on the proxy's own loop (``Server.close`` is not thread-safe:
        called from another thread, it raced the connections' own closing)."""

        def stop() -> None:
            self.open = False
            for writer in list(self._writers):
                writer.close()
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)


class StalledServer:
    """A loopback TCP server that accepts every connection and then neither reads nor answers: a stalled
    Redis (a socket that accepts and never answers) as its clients see it. ``url`` is a Redis URL on it;
    :meth:`close` drops the connections it holds."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # the accept loop looks at ``_stopped`` this often
        self._held: list[socket.socket] = []
        self._stopped = threading.Event()
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self._thread = threading.Thread(target=self._accept, name="stalled-server", daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return len(self._held)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(connection)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._listener.close()
        for connection in self._held:
            connection.close()

    def __enter__(self) -> StalledServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
