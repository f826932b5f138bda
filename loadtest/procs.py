"""Processes for the load-test kit: server subprocesses on loopback, their CPU time and memory.

Every server is a subprocess on a free 127.0.0.1 port, started in its own process group,
awaited on ``GET /ping`` and stopped with SIGTERM, then SIGKILL for whatever is left (no
orphans, also on Ctrl-C). CPU seconds and RSS come from ``/proc`` (Linux); elsewhere the
figures are simply missing. Imports nothing from ``gateway``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def call(method: str, url: str, body: Any = None, timeout: float = 60.0) -> Any:
    """One JSON request (``body`` as JSON, when given); the JSON answer. An HTTP error raises."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def answers(request: urllib.request.Request) -> bool:
    """Whether ``request`` gets a 200 within 2 s (a refused or failed connection is a no)."""
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def affinity(cpus: Sequence[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning the child to ``cpus`` (None when there is nothing to pin)."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    chosen = set(cpus)

    def apply() -> None:
        os.sched_setaffinity(0, chosen)

    return apply


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, cpu seconds) for every process (Linux /proc); empty elsewhere."""
    table: dict[int, tuple[int, float]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if entry.name.isdigit() and (rest := _stat_fields(int(entry.name))) is not None:
            table[int(entry.name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK)
    return table


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for its (new) parent to reap it."""
    rest = _stat_fields(pid)
    return rest is not None and rest[0] != "Z"


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of ``root`` and each of its descendants, by pid."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, float] = {}
    stack = [root]
    while stack and len(out) < 10_000:
        pid = stack.pop()
        if pid in table and pid not in out:
            out[pid] = table[pid][1]
            stack.extend(children.get(pid, []))
    return out


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (``VmRSS`` in /proc/PID/status), None when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def uvicorn_workers(root: int) -> list[int]:
    """The pids that serve requests under a uvicorn started as ``root``.

    With one worker uvicorn serves in ``root`` itself; with ``--workers N`` the root supervises N
    children started through multiprocessing's spawn (``spawn_main`` in their command line) and
    also has helpers (multiprocessing's resource tracker) that serve nothing.
    """
    tree = [pid for pid in tree_cpu(root) if pid != root]
    workers = [pid for pid in tree if "spawn_main" in cmdline(pid)]
    return sorted(workers) or [root]


@dataclasses.dataclass
class Server:
    """One server subprocess in its own process group, logging to a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    log_path: Path
    cpus: Sequence[int] | None = None
    proc: subprocess.Popen[bytes] | None = None
    ready_poll_s: ClassVar[float] = 0.2

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=affinity(self.cpus),
            )

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def ready(self) -> bool:
        """Whether the server is up: a 200 on ``GET /ping`` (subclasses ask what suits them)."""
        return answers(urllib.request.Request(self.base + "/ping"))

    def not_ready(self, timeout: float) -> str:
        """What ``wait_ready`` says when ``timeout`` seconds passed without ``ready``."""
        return f"{self.name} not ready on {self.base}/ping after {timeout:.0f}s"

    def wait_ready(self, timeout: float) -> None:
        """Poll ``ready`` every ``ready_poll_s`` until it holds, the process dies, or ``timeout`` seconds pass."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(self.ready_poll_s)
        raise RuntimeError(f"{self.not_ready(timeout)}:\n{self.log_tail()}")

    def stop(self, grace: float) -> None:
        """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL group and stragglers."""
        if self.proc is None:
            return
        pid = self.proc.pid
        family = set(tree_cpu(pid))  # descendants that may have left the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop within {grace:.0f}s of SIGTERM; sending SIGKILL")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        for child in family - {pid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.proc = None
        deadline = time.monotonic() + 5
        while (left := [p for p in family if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if left:
            log(f"{self.name}: processes {left} still alive after SIGKILL")


ServerT = TypeVar("ServerT", bound="Server")


class Servers:
    """Every server the harness started; ``stop_all`` runs on exit, Ctrl-C and SIGTERM."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.running: list[Server] = []

    def start(self, server: ServerT, ready_timeout: float) -> ServerT:
        self.running.append(server)
        server.start()
        server.wait_ready(ready_timeout)
        return server

    def stop_all(self) -> None:
        while self.running:
            self.running.pop().stop(self.grace)


def run_cmd(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the caller's ``finally`` stops the servers."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
