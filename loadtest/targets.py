"""What the bench measures: the models, the targets, their packages, bodies and server commands.

Models (``--models``):

- ``iris``: the demo package, built with ``python -m gateway.demo`` (``--label-only`` for
  mlflow, whose ONNX pyfunc cannot answer a DataFrame request for a model with both ``label`` and
  ``probabilities``); a cheap onnxruntime call.
- ``mlp``: ``loadtest/mlp_model.py``, a 32 -> 2048 -> 2048 -> 1 MLP regressor, a costly 1-row call
  with one intra-op thread; every target serves the same package. Each model's measured cost per call
  is in docs/benchmarks.md, "What is measured".

Targets (``--targets``), each at every worker count with the same body:

- ``gateway``: ``gateway serve --workers W --model models:/<model>@champion``, once per
  ``--batching`` mode (``on``/``off`` set ``GATEWAY_SERVING_BATCHING=true|false``; ``default``
  sets nothing), with ``GATEWAY_SERVING_INTRA_OP_NUM_THREADS=1`` like the other targets, the
  store and artifact root in the scratch dir, plus any ``--gateway-env KEY=VALUE``.
- ``bare``: ``loadtest/bare_app.py`` ``/invocations`` (Starlette + orjson + onnxruntime inline,
  uvicorn with uvloop + httptools, same worker count, same package): the ceiling.
- ``hello``: the same bare app's ``/hello``, a constant answer: the HTTP-only ceiling.
- ``mlflow``: ``mlflow models serve --env-manager local -w W`` when mlflow is installed.

Imports nothing from ``gateway``: packages are built and registered by subprocesses.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from procs import Server, free_port, run_cmd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ALL_MODELS = ("iris", "mlp")
ALL_TARGETS = ("gateway", "bare", "hello", "mlflow")
BATCHING_MODES = ("on", "off", "default")
KIND_LABELS = {
    "bare": "bare onnx (ceiling)",
    "hello": "bare hello (HTTP ceiling)",
    "mlflow": "mlflow serve",
}
BATCHING_ENV = "GATEWAY_SERVING_BATCHING"
INTRA_OP_ENV = "GATEWAY_SERVING_INTRA_OP_NUM_THREADS"


@dataclasses.dataclass(frozen=True)
class Target:
    """One measured thing: a server kind and, for the gateway, its batching mode."""

    kind: str  # gateway | bare | hello | mlflow
    batching: str = ""  # on | off | default, gateway only

    @property
    def key(self) -> str:
        return f"gateway-{self.batching}" if self.kind == "gateway" else self.kind

    @property
    def server_key(self) -> str:
        """The server that answers it: hello is the bare app's other route."""
        return "bare" if self.kind == "hello" else self.key

    @property
    def path(self) -> str:
        return "/hello" if self.kind == "hello" else "/invocations"

    @property
    def label(self) -> str:
        if self.kind == "gateway":
            return "gateway" if self.batching == "default" else f"gateway batching {self.batching}"
        return KIND_LABELS[self.kind]


def expand_targets(kinds: list[str], batching: list[str]) -> list[Target]:
    out: list[Target] = []
    for kind in kinds:
        if kind == "gateway":
            out.extend(Target("gateway", mode) for mode in batching)
        else:
            out.append(Target(kind))
    return out


@dataclasses.dataclass
class Plan:
    """What ``prepare`` built, and what cannot run and why (by model, then by target kind)."""

    workdir: Path
    packages: dict[str, Path] = dataclasses.field(default_factory=dict)
    mlflow_packages: dict[str, Path] = dataclasses.field(default_factory=dict)
    bodies: dict[tuple[str, int], Path] = dataclasses.field(default_factory=dict)
    unavailable: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Tools:
    """Where the venv's programs are, and extra gateway environment from the command line."""

    bin_dir: Path
    gateway_env: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def python(self) -> str:
        return str(self.bin_dir / "python")


def base_env(tools: Tools) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    # mlflow models serve runs `exec uvicorn` through bash: the venv's bin must come first on PATH
    env["PATH"] = os.pathsep.join(p for p in (str(tools.bin_dir), env.get("PATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    for key in [k for k in env if k.startswith("GATEWAY_")]:
        del env[key]  # the caller's gateway settings must not leak into what is measured
    return env


def gateway_env(tools: Tools, workdir: Path) -> dict[str, str]:
    env = base_env(tools)
    env["GATEWAY_STORE_URI"] = f"sqlite:///{workdir / 'store.db'}"
    env["GATEWAY_ARTIFACT_ROOTS"] = str(workdir / "models")
    return env


def _tail(res: object) -> str:
    text = (getattr(res, "stderr", "") or getattr(res, "stdout", "") or "").strip()
    return text[-400:]


def build_package(model: str, out: Path, tools: Tools, *, for_mlflow: bool = False) -> str:
    """Build ``model``'s package at ``out``; return '' on success, else why it failed."""
    if model == "iris":
        argv = [tools.python, "-m", "gateway.demo", "--out", str(out), *(["--label-only"] if for_mlflow else [])]
    else:
        argv = [tools.python, str(HERE / "mlp_model.py"), "--out", str(out)]
    res = run_cmd(argv, base_env(tools), REPO, 600)
    return "" if res.returncode == 0 else f"`{' '.join(argv[1:3])}` failed: {_tail(res)}"


def prepare(plan: Plan, tools: Tools, models: list[str], kinds: list[str], rows: list[int]) -> None:
    """Build packages and bodies, register the models; record what cannot run and why."""
    models_dir = plan.workdir / "models"
    mlflow_ok = "mlflow" in kinds and (tools.bin_dir / "mlflow").exists()
    if "mlflow" in kinds and mlflow_ok:
        check = run_cmd([tools.python, "-c", "import mlflow.pyfunc, mlflow.onnx"], base_env(tools), REPO, 120)
        mlflow_ok = check.returncode == 0
    for model in models:
        why = build_package(model, models_dir / model, tools)
        if why:
            for kind in kinds:
                plan.unavailable[(model, kind)] = why
            continue
        plan.packages[model] = models_dir / model
        if "mlflow" in kinds:
            if not mlflow_ok:
                plan.unavailable[(model, "mlflow")] = f"mlflow is not installed in {tools.bin_dir}"
            elif model == "iris":
                label_only = models_dir / "iris_label"
                why = build_package(model, label_only, tools, for_mlflow=True)
                if why:
                    plan.unavailable[(model, "mlflow")] = why
                else:
                    plan.mlflow_packages[model] = label_only
            else:
                plan.mlflow_packages[model] = plan.packages[model]
        if "gateway" in kinds:
            gateway_bin = tools.bin_dir / "gateway"
            argv = [str(gateway_bin), "models", "register", model, str(plan.packages[model]), "--alias", "champion"]
            res = run_cmd(argv, gateway_env(tools, plan.workdir), plan.workdir, 120) if gateway_bin.exists() else None
            if res is None or res.returncode != 0:
                why = f"{gateway_bin} does not exist" if res is None else f"register failed: {_tail(res)}"
                plan.unavailable[(model, "gateway")] = why
        example = json.loads((plan.packages[model] / "serving_input_example.json").read_text())["dataframe_split"]
        for count in rows:
            data = [example["data"][i % len(example["data"])] for i in range(count)]
            body = plan.workdir / f"body-{model}-{count}.json"
            body.write_text(json.dumps({"dataframe_split": {"columns": example["columns"], "data": data}}))
            plan.bodies[(model, count)] = body


def server_for(target: Target, model: str, workers: int, plan: Plan, tools: Tools, cpus: list[int] | None) -> Server:
    """The server process for ``target`` (not started)."""
    port = free_port()
    log_path = plan.workdir / "logs" / f"{target.server_key}-{model}-w{workers}.log"
    if target.kind == "gateway":
        env = gateway_env(tools, plan.workdir)
        env[INTRA_OP_ENV] = "1"
        if target.batching != "default":
            env[BATCHING_ENV] = "true" if target.batching == "on" else "false"
        env.update(tools.gateway_env)
        argv = [
            str(tools.bin_dir / "gateway"), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--model", f"models:/{model}@champion",
        ]  # fmt: skip
        return Server(target.key, argv, env, plan.workdir, port, log_path, cpus)
    if target.kind in ("bare", "hello"):
        env = base_env(tools)
        env["BARE_APP_MODEL"] = str(plan.packages[model])
        argv = [
            tools.python, "-m", "uvicorn", "bare_app:app", "--app-dir", str(HERE), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        return Server("bare", argv, env, plan.workdir, port, log_path, cpus)
    if target.kind == "mlflow":
        argv = [
            str(tools.bin_dir / "mlflow"), "models", "serve", "-m", str(plan.mlflow_packages[model]),
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers),
        ]  # fmt: skip
        env = base_env(tools)
        env.setdefault("MLFLOW_TRACKING_URI", f"file://{plan.workdir / 'mlruns'}")
        return Server("mlflow", argv, env, plan.workdir, port, log_path, cpus)
    raise ValueError(f"unknown target kind {target.kind!r}")
