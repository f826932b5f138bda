"""Bench harness: the gateway against a bare Starlette ceiling and ``mlflow models serve``, in one run.

Run ``python loadtest/bench.py`` (``make bench``); ``--help`` lists every flag. It talks HTTP only
and imports nothing from ``gateway``: every server is a subprocess on a free 127.0.0.1 port,
started in its own process group, awaited on ``GET /ping`` and stopped at the end with SIGTERM,
then SIGKILL for whatever is left (no orphans, also on Ctrl-C or SIGTERM).

Targets (``--targets``):

- ``gateway``: the demo iris package built with ``python -m gateway.demo``, registered with
  ``gateway models register iris <pkg> --alias champion`` and served by
  ``gateway serve --workers W --model models:/iris@champion`` (store and artifact root in the
  bench's temporary directory, via ``GATEWAY_STORE_URI`` / ``GATEWAY_ARTIFACT_ROOTS``).
- ``bare``: ``loadtest/bare_app.py`` ``/invocations``, the ceiling: Starlette + orjson +
  onnxruntime inline, uvicorn with uvloop + httptools, same worker count, same package.
- ``hello``: the same bare app's ``/hello``, a constant JSON answer: the HTTP-only ceiling.
- ``mlflow``: ``mlflow models serve --env-manager local -w W`` (when mlflow is installed) on a
  label-only variant of the package (``gateway.demo --label-only``), because mlflow's ONNX
  pyfunc cannot answer a DataFrame request for a model with both ``label`` and
  ``probabilities`` outputs; same ``dataframe_split`` body.

Every target gets the same body, ``{"dataframe_split": {"columns": [...], "data": [[...]]}}``
with ``--rows`` rows taken from the package's ``serving_input_example.json``; one probe request
per target checks the answer before any load (a target that answers an error is reported, not
measured). Load: ``wrk -t1`` with ``loadtest/wrk_post.lua`` when ``wrk`` is installed, else
``loadtest/loadgen.py`` (asyncio, raw keep-alive sockets); either runs in its own process, pinned
to the cores the server does not use when there are spare ones (``--pin``). For each worker
count, all servers run side by side and the cells are interleaved (conns, then repeat, then
target) so slow drift of a noisy machine hits every target alike; with ``--repeat N`` the table
shows medians. Server CPU per request comes from ``/proc`` (the server's whole process tree).

Output: one markdown table on stdout (target, workers, conns, req/s, p50, p99, errors, ratio
to the bare ceiling, ratio gateway/mlflow, server CPU per request) and every raw figure in a
JSON file (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ALL_TARGETS = ("gateway", "bare", "hello", "mlflow")
LABELS = {
    "gateway": "gateway",
    "bare": "bare onnx (ceiling)",
    "hello": "bare hello (HTTP ceiling)",
    "mlflow": "mlflow serve (label-only pkg)",
}
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _affinity(cpus: Sequence[int] | None) -> Callable[[], None] | None:
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    chosen = set(cpus)

    def apply() -> None:
        os.sched_setaffinity(0, chosen)

    return apply


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, cpu seconds) for every process (Linux /proc); empty elsewhere."""
    table: dict[int, tuple[int, float]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK)
    return table


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for its (new) parent to reap it."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rfind(")") + 2 :].split()[0] != "Z"


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
                preexec_fn=_affinity(self.cpus),
            )

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        """Poll ``GET /ping`` until 200, the process dies, or ``timeout`` seconds pass."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + "/ping", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(
            f"{self.name} not ready on {self.base}/ping after {timeout:.0f}s:\n{self.log_tail()}"
        )

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
        while (left := [p for p in family if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if left:
            log(f"{self.name}: processes {left} still alive after SIGKILL")


class Servers:
    """Every server the harness started; ``stop_all`` runs on exit, Ctrl-C and SIGTERM."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.running: list[Server] = []

    def start(self, server: Server, ready_timeout: float) -> Server:
        self.running.append(server)
        server.start()
        server.wait_ready(ready_timeout)
        return server

    def stop_all(self) -> None:
        while self.running:
            server = self.running.pop()
            server.stop(self.grace)


def run_cmd(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


# ---------------------------------------------------------------------------------------------
# load generation


@dataclasses.dataclass
class Cell:
    target: str
    workers: int
    conns: int
    rep: int
    rps: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    requests: int = 0
    errors: int = 0
    non2xx: int = 0
    socket_errors: int = 0
    server_cpu_us_per_req: float = float("nan")
    worker_cpu_shares: list[float] = dataclasses.field(default_factory=list)
    generator: str = ""
    generator_cpu_frac: float = float("nan")
    failure: str = ""


def run_generator(
    args: argparse.Namespace,
    url: str,
    body_file: Path,
    conns: int,
    duration: float,
    cpus: Sequence[int] | None,
) -> dict[str, Any]:
    """Run one load cell with wrk or loadgen.py in a child process; return normalised figures."""
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk"))
    env = dict(os.environ)
    if use_wrk:
        secs = max(1, round(duration))
        argv = [
            "wrk", "-t1", f"-c{conns}", f"-d{secs}s", f"--timeout={max(1, round(args.timeout))}s",
            "-s", str(HERE / "wrk_post.lua"), url,
        ]  # fmt: skip
        env["WRK_BODY_FILE"] = str(body_file)
    else:
        argv = [
            args.python, str(HERE / "loadgen.py"), "--url", url, "--body-file", str(body_file),
            "--conns", str(conns), "--duration", str(duration), "--timeout", str(args.timeout),
        ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + args.timeout + 30,
        preexec_fn=_affinity(cpus),
        stdin=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    if use_wrk:
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


def probe(url: str, body: bytes, expect_predictions: bool) -> str:
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
    return ""


# ---------------------------------------------------------------------------------------------
# the run


@dataclasses.dataclass
class Plan:
    workdir: Path
    package: Path | None = None
    label_package: Path | None = None
    body_file: Path | None = None
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def base_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    # mlflow models serve runs `exec uvicorn` through bash: the venv's bin must come first on PATH
    env["PATH"] = os.pathsep.join(p for p in (str(args.bin_dir), env.get("PATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def gateway_env(args: argparse.Namespace, plan: Plan) -> dict[str, str]:
    env = base_env(args)
    env["GATEWAY_STORE_URI"] = f"sqlite:///{plan.workdir / 'store.db'}"
    env["GATEWAY_ARTIFACT_ROOTS"] = str(plan.workdir / "models")
    return env


def prepare(args: argparse.Namespace, plan: Plan) -> None:
    """Build the packages and the body, register the model; mark what cannot run and why."""
    env = base_env(args)
    models = plan.workdir / "models"
    needs_model = {"gateway", "bare", "mlflow"} & set(args.targets)
    if needs_model:
        out = models / "iris"
        res = run_cmd([args.python, "-m", "gateway.demo", "--out", str(out)], env, REPO, 300)
        if res.returncode == 0:
            plan.package = out
        else:
            why = f"`python -m gateway.demo` failed: {(res.stderr or res.stdout).strip()[-400:]}"
            for target in needs_model:
                plan.unavailable[target] = why
    if "mlflow" in args.targets and "mlflow" not in plan.unavailable:
        mlflow_bin = Path(args.bin_dir) / "mlflow"
        check = run_cmd([args.python, "-c", "import mlflow.pyfunc, mlflow.onnx"], env, REPO, 120)
        if not mlflow_bin.exists() or check.returncode != 0:
            plan.unavailable["mlflow"] = f"mlflow is not installed in {args.bin_dir}"
        else:
            out = models / "iris_label"
            res = run_cmd(
                [args.python, "-m", "gateway.demo", "--out", str(out), "--label-only"], env, REPO, 300
            )
            if res.returncode == 0:
                plan.label_package = out
            else:
                plan.unavailable["mlflow"] = f"label-only package failed: {res.stderr.strip()[-400:]}"
    if "gateway" in args.targets and "gateway" not in plan.unavailable:
        gateway_bin = Path(args.bin_dir) / "gateway"
        if not gateway_bin.exists():
            plan.unavailable["gateway"] = f"{gateway_bin} does not exist (is the package installed?)"
        else:
            argv = [str(gateway_bin), "models", "register", "iris", str(plan.package), "--alias", "champion"]
            res = run_cmd(argv, gateway_env(args, plan), plan.workdir, 120)
            if res.returncode != 0:
                why = (res.stderr or res.stdout).strip()[-400:]
                plan.unavailable["gateway"] = f"`gateway models register` failed ({res.returncode}): {why}"

    # the body: --rows rows of the package's serving example, or a fixed iris row without a package
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows: list[list[float]] = [[5.1, 3.5, 1.4, 0.2]]
    if plan.package is not None:
        example = json.loads((plan.package / "serving_input_example.json").read_text())["dataframe_split"]
        columns, rows = example["columns"], example["data"]
    data = [rows[i % len(rows)] for i in range(args.rows)]
    plan.body_file = plan.workdir / "body.json"
    plan.body_file.write_text(json.dumps({"dataframe_split": {"columns": columns, "data": data}}))


def cpu_split(workers: int) -> tuple[list[int] | None, list[int] | None, str]:
    """(server cpus, generator cpus, description) for ``--pin auto``."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None, "no pinning (no sched_setaffinity)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > workers:
        server, gen = cpus[:workers], cpus[workers:]
        return server, gen, f"server on cpus {server}, load generator on cpus {gen}"
    return None, None, f"server and load generator share all {len(cpus)} cpus"


def server_for(
    target: str, workers: int, args: argparse.Namespace, plan: Plan, cpus: list[int] | None
) -> Server:
    port = free_port()
    logs = plan.workdir / "logs"
    if target == "gateway":
        argv = [
            str(Path(args.bin_dir) / "gateway"), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--model", "models:/iris@champion",
        ]  # fmt: skip
        return Server("gateway", argv, gateway_env(args, plan), plan.workdir, port,
                      logs / f"gateway-w{workers}.log", cpus)  # fmt: skip
    if target == "bare":
        env = base_env(args)
        if plan.package is not None:
            env["BARE_APP_MODEL"] = str(plan.package)
        argv = [
            args.python, "-m", "uvicorn", "bare_app:app", "--app-dir", str(HERE), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        return Server("bare", argv, env, plan.workdir, port, logs / f"bare-w{workers}.log", cpus)
    if target == "mlflow":
        assert plan.label_package is not None
        argv = [
            str(Path(args.bin_dir) / "mlflow"), "models", "serve", "-m", str(plan.label_package),
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers),
        ]  # fmt: skip
        env = base_env(args)
        env.setdefault("MLFLOW_TRACKING_URI", f"file://{plan.workdir / 'mlruns'}")
        return Server("mlflow", argv, env, plan.workdir, port, logs / f"mlflow-w{workers}.log", cpus)
    raise ValueError(target)


def path_for(target: str) -> str:
    return "/hello" if target == "hello" else "/invocations"


def measure(args: argparse.Namespace, plan: Plan, servers: Servers) -> list[Cell]:
    cells: list[Cell] = []
    assert plan.body_file is not None
    body = plan.body_file.read_bytes()
    for workers in args.workers:
        if args.pin == "auto":
            server_cpus, gen_cpus, pin_note = cpu_split(workers)
        else:
            server_cpus, gen_cpus, pin_note = None, None, "no pinning (--pin off)"
        plan.notes.append(f"workers={workers}: {pin_note}")
        live: dict[str, Server] = {}
        failed: dict[str, str] = {}
        for target in args.targets:
            if target in plan.unavailable:
                continue
            server_key = "bare" if target == "hello" else target
            if server_key in failed:
                failed[target] = failed[server_key]
                continue
            if server_key not in live:
                log(f"starting {server_key} with {workers} worker(s)")
                server = server_for(server_key, workers, args, plan, server_cpus)
                try:
                    live[server_key] = servers.start(server, args.startup_timeout)
                except RuntimeError as exc:
                    failed[target] = failed[server_key] = f"did not start: {exc}"
                    log(failed[target])
                    continue
            why = probe(live[server_key].base + path_for(target), body, expect_predictions=target != "hello")
            if why:
                failed[target] = why
                log(f"{target}: {why}")
        measured = [t for t in args.targets if t not in plan.unavailable and t not in failed]
        for target in args.targets:
            if target in failed:
                cells.append(Cell(target, workers, 0, 0, failure=failed[target]))
        if args.warmup > 0:
            for target in measured:
                server = live["bare" if target == "hello" else target]
                log(f"warm-up {target} ({args.warmup:g}s, {max(args.conns)} conns)")
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    run_generator(args, server.base + path_for(target), plan.body_file, max(args.conns),
                                  args.warmup, gen_cpus)  # fmt: skip
        for conns in args.conns:
            for rep in range(args.repeat):
                for target in measured:
                    server = live["bare" if target == "hello" else target]
                    cells.append(run_cell(args, plan, server, target, workers, conns, rep, gen_cpus))
        servers.stop_all()
    return cells


def run_cell(
    args: argparse.Namespace,
    plan: Plan,
    server: Server,
    target: str,
    workers: int,
    conns: int,
    rep: int,
    gen_cpus: list[int] | None,
) -> Cell:
    assert server.proc is not None and plan.body_file is not None
    cell = Cell(target, workers, conns, rep)
    cpu_before = tree_cpu(server.proc.pid)
    try:
        res = run_generator(
            args, server.base + path_for(target), plan.body_file, conns, args.duration, gen_cpus
        )
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        cell.failure = f"load generator failed: {exc}"
        log(f"{target} w={workers} c={conns}: {cell.failure}")
        return cell
    cpu_after = tree_cpu(server.proc.pid)
    deltas = sorted(
        (cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after),
        reverse=True,
    )
    total = sum(deltas)
    for key in ("rps", "p50_ms", "p99_ms", "requests", "errors", "non2xx", "socket_errors", "generator"):
        setattr(cell, key, res[key])
    cell.generator_cpu_frac = res["generator_cpu_frac"]
    if total > 0 and cell.requests:
        cell.server_cpu_us_per_req = total / cell.requests * 1e6
        cell.worker_cpu_shares = [round(d / total, 3) for d in deltas if d / total >= 0.01]
    log(
        f"{target:8s} w={workers} c={conns:<3d} rep={rep}: {cell.rps:9.1f} req/s  p50 {cell.p50_ms:.2f} ms  "
        f"p99 {cell.p99_ms:.2f} ms  errors {cell.errors}"
    )
    return cell


# ---------------------------------------------------------------------------------------------
# report


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per (target, workers, conns): medians over repeats, summed errors."""
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[str, int, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.target, cell.workers, cell.conns), []).append(cell)
    for (target, workers, conns), group in groups.items():
        ok = [c for c in group if not c.failure]
        rps = [c.rps for c in ok]
        rows.append(
            {
                "target": target,
                "workers": workers,
                "conns": conns,
                "runs": len(ok),
                "rps": _median(rps),
                "rps_min": min(rps) if rps else float("nan"),
                "rps_max": max(rps) if rps else float("nan"),
                "p50_ms": _median([c.p50_ms for c in ok]),
                "p99_ms": _median([c.p99_ms for c in ok]),
                "errors": sum(c.errors for c in ok),
                "non2xx": sum(c.non2xx for c in ok),
                "server_cpu_us_per_req": _median([c.server_cpu_us_per_req for c in ok]),
                "worker_cpu_shares": [c.worker_cpu_shares for c in ok],
                "stuck_runs": sum(
                    1
                    for c in ok
                    if workers > 1
                    and conns >= workers
                    and c.worker_cpu_shares
                    and c.worker_cpu_shares[0] > 0.85
                ),
                "generator_cpu_frac": max((c.generator_cpu_frac for c in ok), default=float("nan")),
                "failure": "; ".join(sorted({c.failure for c in group if c.failure})),
            }
        )
    return rows


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:300]


def _fmt(value: float, digits: int = 1) -> str:
    if value != value:  # nan
        return "–"
    return f"{value:,.{digits}f}"


def render(rows: list[dict[str, Any]], unavailable: dict[str, str], args: argparse.Namespace) -> str:
    index = {(r["target"], r["workers"], r["conns"]): r for r in rows}
    lines = [
        "| target | workers | conns | req/s | p50 ms | p99 ms | errors | vs bare ceiling | gateway/mlflow "
        "| server CPU µs/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for workers in args.workers:
        for target in args.targets:
            if target in unavailable:
                continue
            failed = index.get((target, workers, 0))
            if failed and failed["failure"]:
                lines.append(f"| {LABELS[target]} | {workers} | – | – | – | – | – | – | – | – |")
                notes.append(f"{LABELS[target]}, {workers} worker(s): {_last_line(failed['failure'])}")
                continue
            for conns in args.conns:
                row = index.get((target, workers, conns))
                if row is None:
                    continue
                if row["failure"] and not row["runs"]:
                    lines.append(f"| {LABELS[target]} | {workers} | {conns} | – | – | – | – | – | – | – |")
                    notes.append(f"{LABELS[target]}, w={workers}, c={conns}: {_last_line(row['failure'])}")
                    continue
                bare = index.get(("bare", workers, conns))
                mlflow = index.get(("mlflow", workers, conns))
                vs_bare = row["rps"] / bare["rps"] if bare and bare["runs"] and bare["rps"] else float("nan")
                vs_mlflow = (
                    row["rps"] / mlflow["rps"]
                    if target == "gateway" and mlflow and mlflow["runs"] and mlflow["rps"]
                    else float("nan")
                )
                rps = _fmt(row["rps"], 0) + ("†" if row["stuck_runs"] else "")
                if row["runs"] > 1:
                    rps += f" ({_fmt(row['rps_min'], 0)}–{_fmt(row['rps_max'], 0)})"
                lines.append(
                    f"| {LABELS[target]} | {workers} | {conns} | {rps} | {_fmt(row['p50_ms'], 2)} "
                    f"| {_fmt(row['p99_ms'], 2)} | {row['errors']} | {_fmt(vs_bare, 2)} "
                    f"| {_fmt(vs_mlflow, 1)} | {_fmt(row['server_cpu_us_per_req'], 0)} |"
                )
                if row["stuck_runs"]:
                    notes.append(
                        f"{LABELS[target]}, w={workers}, c={conns}: in {row['stuck_runs']} of "
                        f"{row['runs']} run(s) one process did over 85% of the server's work "
                        "(the kernel handed every connection to one worker), marked †"
                    )
                if row["generator_cpu_frac"] > 0.9:
                    notes.append(
                        f"{LABELS[target]}, w={workers}, c={conns}: the load generator used "
                        f"{row['generator_cpu_frac']:.0%} of a core; req/s may be generator-bound"
                    )
    for target, why in unavailable.items():
        if target in args.targets:
            lines.append(f"| {LABELS[target]} | – | – | – | – | – | – | – | – | – |")
            notes.append(f"{LABELS[target]}: not measured: {_last_line(why)}")
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# command line


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v < 1 or v > 4096 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers in 1..4096, got {text!r}")
    return values


def _targets(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in ALL_TARGETS]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"unknown target(s) {unknown}; choose from {', '.join(ALL_TARGETS)}")
    return list(dict.fromkeys(values))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except ``None`` (those flags say what they default to)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def default_bin_dir() -> Path:
    venv = REPO / ".venv" / "bin"
    return venv if (venv / "python").exists() else Path(sys.executable).parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python loadtest/bench.py",
        description=(
            "Measure single-row /invocations on the gateway, a bare Starlette+onnxruntime ceiling, a bare "
            "hello-world ceiling and `mlflow models serve`, in one run, and print one markdown table."
        ),
        formatter_class=_HelpFormatter,
        epilog="Example: python loadtest/bench.py --duration 10 --repeat 3 --out bench.json",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per cell")
    parser.add_argument(
        "--conns", type=_int_list, default="1,16,64", help="connection counts, comma-separated"
    )
    parser.add_argument(
        "--workers", type=_int_list, default="1,2", help="server worker counts, comma-separated"
    )
    parser.add_argument(
        "--targets",
        type=_targets,
        default=",".join(ALL_TARGETS),
        help=f"targets, comma-separated, from: {', '.join(ALL_TARGETS)}",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the table shows the median")
    parser.add_argument("--rows", type=int, default=1, help="rows per request body")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of warm-up load per target and worker count"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds before a request counts as an error"
    )
    parser.add_argument(
        "--generator", choices=["auto", "wrk", "python"], default="auto",
        help="load generator: wrk when installed (auto), or loadtest/loadgen.py (python)",
    )  # fmt: skip
    parser.add_argument(
        "--pin", choices=["auto", "off"], default="auto",
        help="auto: server on the first W cpus, load generator on the others (when there are spare cpus)",
    )  # fmt: skip
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for GET /ping")
    parser.add_argument(
        "--stop-timeout", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL"
    )
    parser.add_argument(
        "--out", type=Path, default=None,
        help="JSON file for every raw figure (default: loadtest/results/bench-<UTC time>.json)",
    )  # fmt: skip
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument(
        "--bin-dir", type=Path, default=default_bin_dir(), help="venv bin dir with python, gateway, mlflow"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch dir for packages, store, logs (default: a temp dir)",
    )
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the scratch dir (logs) after the run"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 3600:
        parser.error("--duration must be in (0, 3600]")
    if not 1 <= args.repeat <= 100 or not 1 <= args.rows <= 100_000:
        parser.error("--repeat must be in 1..100 and --rows in 1..100000")
    if args.generator == "wrk" and not shutil.which("wrk"):
        parser.error("--generator wrk: wrk is not installed")
    args.python = str(Path(args.bin_dir) / "python")
    if not Path(args.python).exists():
        parser.error(f"{args.python} does not exist (use --bin-dir)")
    return args


def environment() -> dict[str, Any]:
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
    return info


def versions(python: str) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for d in ('gateway', 'uvicorn', 'starlette', 'uvloop', 'httptools', 'onnxruntime', 'orjson',\n"
        "          'numpy', 'mlflow-skinny', 'mlflow'):\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    with contextlib.suppress(subprocess.SubprocessError, ValueError, OSError):
        res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        return dict(json.loads(res.stdout))
    return {}


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    plan = Plan(workdir=workdir)
    servers = Servers(args.stop_timeout)
    cells: list[Cell] = []
    interrupted = False
    try:
        with _terminate_on_sigterm():
            log(f"scratch dir {workdir}")
            prepare(args, plan)
            for target, why in plan.unavailable.items():
                if target in args.targets:
                    log(f"{target}: not measured: {why}")
            cells = measure(args, plan, servers)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping servers")
    finally:
        servers.stop_all()
    rows = summarise(cells)
    table = render(rows, plan.unavailable, args)
    command = " ".join(["python", "loadtest/bench.py", *(argv if argv is not None else sys.argv[1:])])
    uses_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk"))
    generator = "wrk -t1" if uses_wrk else "loadgen.py"
    header = (
        f"<!-- {command} | {started:%Y-%m-%d %H:%M} UTC | {generator}, {args.duration:g}s per cell, "
        f"{args.repeat} run(s) per cell -->"
    )
    print(header)
    print(table)
    result = {
        "command": command,
        "started_utc": started.isoformat(timespec="seconds"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment(),
        "versions": versions(args.python),
        "notes": plan.notes,
        "unavailable": plan.unavailable,
        "rows": rows,
        "cells": [dataclasses.asdict(c) for c in cells],
        "table": table,
        "interrupted": interrupted,
    }
    out = args.out or HERE / "results" / f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(header + "\n" + table + "\n")
    log(f"raw figures in {out}")
    if args.keep_workdir or args.workdir:
        log(f"kept {workdir} (logs under {workdir / 'logs'})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
