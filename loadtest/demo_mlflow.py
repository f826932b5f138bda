"""``make demo-mlflow``: the gateway inside an MLflow installation, in one command, on 127.0.0.1 only.

1. starts ``mlflow server`` (the full ``mlflow`` release of ``.venv-mlflow-demo``, with its web UI) on a SQLite
   store and a local artifacts directory served through its artifact proxy;
2. builds the demo iris package (``python -m gateway.demo``) and registers it in MLflow with MLflow's own client:
   a run in the experiment ``gateway-demo`` holds it, ``iris`` version 1 points at it, alias ``champion``;
3. starts the fake OpenAI-compatible upstream (loadtest/fake_upstream.py) and ``gateway serve --model
   models:/iris@champion`` with ``registry.kind: mlflow`` against that server, one LLM route ``demo-chat`` on the
   fake upstream with content capture on, its spans exported to MLflow's OTLP endpoint
   (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=<mlflow>/v1/traces``, header ``x-mlflow-experiment-id``), and the built-in
   ``safety`` judge grading every chat call on live traffic (``judges.online``; its own calls go to the same route,
   where the fake upstream's judge mode answers them) with each verdict logged to MLflow as feedback on the graded
   call's trace (``judges.export.mlflow``);
4. makes a few scoring and chat calls through the gateway, waits until MLflow holds their traces (and the judge
   calls' own traces) and the chat calls' feedback, prints them and the MLflow UI's address; with ``--screenshot
   PATH`` takes the UI's trace list with headless Chromium, and with ``--trace-screenshot PATH`` one chat call
   opened with its assessments pane;
5. leaves everything running until Ctrl-C (or exits at once with ``--exit-after``), then stops every server.

Every wait is bounded; every server is a subprocess in its own process group, stopped with SIGTERM then SIGKILL.
The working directory (``--workdir``, default ``.gateway/demo-mlflow``) is made afresh on each run. Runs with the
project's venv (the gateway, httpx); the MLflow side runs in ``--mlflow-python`` (loadtest/demo_mlflow_client.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from llm_servers import HttpServer
from procs import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLIENT = HERE / "demo_mlflow_client.py"
MARKER = ".demo-mlflow"
EXPERIMENT = "gateway-demo"
MODEL = "iris"
ALIAS = "champion"
ROUTE = "demo-chat"
CHAT_SPAN = "POST /v1/chat/completions"
JUDGE = "safety"
UPSTREAM_MODEL = "fake-model"
QUESTIONS = (
    "What is the capital of France?",
    "Summarise the iris data set in one sentence.",
    "Which MLflow alias does the gateway serve?",
)
IRIS_ROWS = (
    [5.1, 3.5, 1.4, 0.2],
    [6.4, 3.2, 4.5, 1.5],
    [6.3, 3.3, 6.0, 2.5],
)
IRIS_COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
STOP_GRACE_S = 15.0


def say(message: str) -> None:
    print(f"[demo-mlflow {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _port(requested: int, flag: str) -> int:
    """``requested`` if it is free on 127.0.0.1 (0: any free port); else stop, naming the flag."""
    if requested == 0:
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", requested))
        except OSError:
            raise SystemExit(
                f"demo-mlflow: port {requested} on 127.0.0.1 is in use; pass {flag} PORT (0: any free port)"
            ) from None
    return requested


def _fresh_workdir(path: Path) -> Path:
    """An empty working directory; an old one is removed only when an earlier demo run made it."""
    if path.exists():
        if not (path / MARKER).exists() and any(path.iterdir()):
            raise SystemExit(f"demo-mlflow: {path} exists and was not made by this demo; pass another --workdir")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by loadtest/demo_mlflow.py; removed by its next run\n")
    return path.resolve()


def _env(drop: tuple[str, ...] = ("GATEWAY_", "OTEL_", "MLFLOW_")) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _client(mlflow_python: str, *args: str, timeout: float) -> Any:
    """Run a demo_mlflow_client.py subcommand in the MLflow venv; its JSON answer."""
    done = subprocess.run(
        [mlflow_python, str(CLIENT), *args],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"demo_mlflow_client.py {args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mlflow_server(mlflow_python: str, workdir: Path, port: int) -> HttpServer:
    # ``python -m mlflow``, not the venv's ``mlflow`` script: a venv moved to another directory keeps scripts whose
    # first line names the old one.
    argv = [
        mlflow_python, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", str(workdir / "mlflow-artifacts"),
        "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = _env()
    # No background job runner (its huey consumers run MLflow's own judges and optimizations, which the demo does
    # not use): seven processes fewer, and the server stops at once on SIGTERM.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return HttpServer("mlflow", argv, env, workdir, port, workdir / "logs" / "mlflow.log", ready_path="/health")


def upstream_server(workdir: Path, port: int) -> HttpServer:
    argv = [sys.executable, str(HERE / "fake_upstream.py"), "--host", "127.0.0.1", "--port", str(port)]
    return HttpServer(
        "fake upstream", argv, _env(), workdir, port, workdir / "logs" / "upstream.log", ready_path="/v1/models"
    )


def gateway_config(upstream: str, mlflow: str) -> dict[str, Any]:
    return {
        "store_uri": "sqlite:///./gateway.db",
        "workers": 1,
        "registry": {"kind": "mlflow", "tracking_uri": mlflow},
        "llm": {
            "capture_content": True,
            "routes": [
                {"name": ROUTE, "timeout_s": 30, "targets": [{"base_url": f"{upstream}/v1", "model": UPSTREAM_MODEL}]}
            ],
        },
        # The built-in safety judge grades every chat call (its own calls go to the same route, where the fake
        # upstream's judge mode answers them), and each verdict is logged to MLflow as feedback on the call's trace.
        "judges": {
            "route": ROUTE,
            "online": [{"route": ROUTE, "judges": [{"name": JUDGE, "rate": 1}]}],
            "export": {"mlflow": {"tracking_uri": mlflow}},
        },
    }


def gateway_server(workdir: Path, port: int, upstream: str, mlflow: str, experiment_id: str) -> HttpServer:
    config = workdir / "gateway.yaml"
    config.write_text(json.dumps(gateway_config(upstream, mlflow), indent=2))  # JSON is YAML
    env = _env()
    env.update(
        {
            # MLflow's OTLP receiver; the header names the experiment the traces land in.
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{mlflow}/v1/traces",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"x-mlflow-experiment-id={experiment_id}",
            "OTEL_SERVICE_NAME": "gateway-demo",
            # The SDK's default is 5 s between exports: shorter, so the UI shows the calls sooner.
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }
    )
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host", "127.0.0.1", "--port",
            str(port), "--model", f"models:/{MODEL}@{ALIAS}"]  # fmt: skip
    return HttpServer("gateway", argv, env, workdir, port, workdir / "logs" / "gateway.log", ready_path="/health")


@contextlib.contextmanager
def running(server: HttpServer, timeout: float) -> Iterator[HttpServer]:
    say(f"starting {server.name} on {server.base} (log: {server.log_path})")
    server.start()
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop(STOP_GRACE_S)


def make_calls(gateway: str) -> tuple[int, int]:
    """A few scoring and chat calls through the gateway; returns how many calls were made, and how many were chat
    calls (each graded by the online judge)."""
    calls = chats = 0
    scoring: list[tuple[str, dict[str, Any]]] = [
        ("/invocations", {"dataframe_split": {"columns": list(IRIS_COLUMNS), "data": [list(r) for r in IRIS_ROWS]}}),
        (
            f"/models/{MODEL}@{ALIAS}/invocations",
            {"dataframe_records": [dict(zip(IRIS_COLUMNS, IRIS_ROWS[1], strict=True))]},
        ),
    ]
    with httpx.Client(base_url=gateway, timeout=30) as client:
        for path, scoring_body in scoring:
            response = client.post(path, json=scoring_body)
            response.raise_for_status()
            labels = [p["label"] if isinstance(p, dict) else p for p in response.json()["predictions"]]
            say(f"POST {path}: labels {labels} (version {response.headers.get('x-model-version')})")
            calls += 1
        for question in QUESTIONS:
            body = {"model": ROUTE, "messages": [{"role": "user", "content": question}]}
            response = client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            answer = response.json()
            say(f"chat {question!r} -> {answer['choices'][0]['message']['content']!r} ({answer['usage']})")
            calls += 1
            chats += 1
        stream_body = {
            "model": ROUTE,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Stream the answer word by word."}],
        }
        with client.stream("POST", "/v1/chat/completions", json=stream_body) as response:
            response.raise_for_status()
            events = sum(1 for line in response.iter_lines() if line.startswith("data:"))
        say(f"chat (streamed): {events} events")
        calls += 1
        chats += 1
    return calls, chats


def take_screenshots(args: argparse.Namespace, mlflow_python: str, mlflow: str, experiment_id: str, found: Any) -> None:
    for path in (args.screenshot, args.trace_screenshot):
        if path:
            Path(path).absolute().parent.mkdir(parents=True, exist_ok=True)
    shot_args = ["screenshot", "--url", mlflow, "--experiment-id", experiment_id,
                 "--out", str(Path(args.screenshot).absolute()), "--min-rows", str(len(found)),
                 "--feedback", JUDGE]  # fmt: skip
    # The first chat call: a question, its answer, token usage and the judge's feedback.
    chat = next((t for t in found if t["name"] == CHAT_SPAN and QUESTIONS[0] in (t["request"] or "")), None)
    if args.trace_screenshot and chat is not None:
        shot_args += ["--trace-id", chat["trace_id"], "--trace-out", str(Path(args.trace_screenshot).absolute())]
    shots = _client(mlflow_python, *shot_args, timeout=300)
    say(f"screenshots: {', '.join(shots.values())}")


def print_addresses(mlflow: str, gateway: str, experiment_id: str, workdir: Path) -> None:
    print(
        f"\nMLflow UI (the gateway's traces): {mlflow}/#/experiments/{experiment_id}/traces\n"
        f"MLflow UI (the registered model):  {mlflow}/#/models/{MODEL}\n"
        f"Gateway:                           {gateway}  (serving models:/{MODEL}@{ALIAS} from MLflow)\n"
        f"  curl -s {gateway}/v1/chat/completions -H 'content-type: application/json' \\\n"
        f'    -d \'{{"model": "{ROUTE}", "messages": [{{"role": "user", "content": "Hi"}}]}}\'\n'
        f"Logs and stores: {workdir}",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    """0 when MLflow holds a trace of every call made, else 1 (after the same output)."""
    mlflow_python = str(Path(args.mlflow_python).absolute())
    if not Path(mlflow_python).exists() or not (Path(mlflow_python).parent / "mlflow").exists():
        raise SystemExit(
            f"demo-mlflow: no MLflow at {args.mlflow_python}; `make demo-mlflow` creates .venv-mlflow-demo "
            "(pip install -r loadtest/demo_mlflow_requirements.txt)"
        )
    mlflow_port = _port(args.mlflow_port, "--mlflow-port")
    gateway_port = _port(args.gateway_port, "--gateway-port")
    workdir = _fresh_workdir(Path(args.workdir))
    # SIGTERM stops the servers as Ctrl-C does, at any step (and SIGINT does even when a shell started the demo in
    # the background with SIGINT ignored).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    package = workdir / "iris-package"
    say(f"building the demo iris package in {package}")
    subprocess.run(
        [sys.executable, "-m", "gateway.demo", "--out", str(package)],
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )
    with contextlib.ExitStack() as stack:
        mlflow = stack.enter_context(running(mlflow_server(mlflow_python, workdir, mlflow_port), args.startup_timeout))
        say(f"registering {MODEL} in MLflow (experiment {EXPERIMENT!r}, alias {ALIAS!r})")
        registered = _client(
            mlflow_python, "register", "--tracking-uri", mlflow.base, "--experiment", EXPERIMENT,
            "--package", str(package), "--model", MODEL, "--alias", ALIAS, timeout=args.startup_timeout,
        )  # fmt: skip
        experiment_id = str(registered["experiment_id"])
        say(f"{MODEL} version {registered['version']} <- {registered['source']}")
        upstream = stack.enter_context(running(upstream_server(workdir, free_port()), args.startup_timeout))
        gateway_proc = gateway_server(workdir, gateway_port, upstream.base, mlflow.base, experiment_id)
        gateway = stack.enter_context(running(gateway_proc, args.startup_timeout))
        calls, chats = make_calls(gateway.base)
        # Each chat call is graded by the judge, whose own call (on the same route) is a trace too; the verdict
        # reaches MLflow as feedback on the chat call's trace once MLflow holds that trace.
        expected = calls + chats
        found = _client(
            mlflow_python, "traces", "--tracking-uri", mlflow.base, "--experiment-id", experiment_id,
            "--min", str(expected), "--min-feedback", str(chats), "--timeout", str(args.trace_timeout),
            timeout=args.trace_timeout + 120,
        )  # fmt: skip
        say(f"MLflow holds {len(found)} traces from the gateway:")
        for trace in found:
            feedback = f"  feedback={trace['feedback']}" if trace["feedback"] else ""
            say(f"  {trace['trace_id']}  {trace['name']}  {trace['state']}  tokens={trace['tokens']}{feedback}")
        judged = sum(1 for t in found if t["feedback"])
        complete = sum(1 for t in found if t["name"] is not None) >= expected and judged >= chats
        if not complete:
            say(
                f"expected {expected} traces ({calls} calls, {chats} judge calls) and {chats} with the {JUDGE!r} "
                f"judge's feedback within {args.trace_timeout:.0f} s, got {judged}; see {gateway.log_path}"
            )
        if args.screenshot:
            take_screenshots(args, mlflow_python, mlflow.base, experiment_id, found)
        print_addresses(mlflow.base, gateway.base, experiment_id, workdir)
        if not args.exit_after:
            print("Ctrl-C stops the MLflow server, the gateway and the fake upstream.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
        say("stopping the servers")
    return 0 if complete else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="demo_mlflow.py",
        description="Start an MLflow server, register the demo model there, serve it through the gateway with "
        "traces sent to MLflow, make a few calls and print the MLflow UI's address (make demo-mlflow).",
    )
    parser.add_argument(
        "--mlflow-python",
        default=str(REPO / ".venv-mlflow-demo" / "bin" / "python"),
        help="the python of a venv with the full mlflow release and selenium (default: .venv-mlflow-demo)",
    )
    parser.add_argument("--workdir", default=str(REPO / ".gateway" / "demo-mlflow"), help="made afresh on each run")
    parser.add_argument("--mlflow-port", type=int, default=5000, help="default 5000; 0: any free port")
    parser.add_argument("--gateway-port", type=int, default=8080, help="default 8080; 0: any free port")
    parser.add_argument("--screenshot", metavar="PATH", help="save the MLflow UI's trace list as a PNG")
    parser.add_argument("--trace-screenshot", metavar="PATH", help="with --screenshot: one chat trace opened, as a PNG")
    parser.add_argument("--exit-after", action="store_true", help="stop the servers after the calls (and screenshots)")
    parser.add_argument("--startup-timeout", type=float, default=240.0, help="seconds each server may take to start")
    parser.add_argument(
        "--trace-timeout", type=float, default=60.0, help="seconds to wait for the traces and feedback in MLflow"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
