"""The LLM bench's servers: the fake upstream, the OTLP sink, the gateway, the bare passthrough, LiteLLM.

Each is a :class:`procs.Server` (subprocess on a free 127.0.0.1 port, own process group) with its
own readiness path. Every proxy points at the same fake upstream and serves the route
``bench-model``; the gateway exports its spans to the sink and writes its trace summaries to a
SQLite store in the scratch directory. Imports nothing from ``gateway``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from procs import Server, answers, free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ROUTE = "bench-model"
UPSTREAM_MODEL = "fake-model"
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-bench-upstream-not-a-secret"
LITELLM_MASTER_KEY = "sk-bench-litellm-master"
# The OTel SDK's default schedule delay is 5 s; 1 s shortens the wait for the last batch after the load.
OTEL_BSP_SCHEDULE_DELAY_MS = "1000"


@dataclasses.dataclass
class HttpServer(Server):
    """A :class:`procs.Server` whose readiness is a 200 on ``ready_path`` (not always ``/ping``)."""

    ready_path: str = "/ping"
    ready_headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def ready(self) -> bool:
        return answers(urllib.request.Request(self.base + self.ready_path, headers=self.ready_headers))

    def not_ready(self, timeout: float) -> str:
        return f"{self.name} not ready on {self.base}{self.ready_path} after {timeout:.0f}s"


@dataclasses.dataclass
class Layout:
    """Where things go and which programs run them."""

    workdir: Path
    bin_dir: Path
    litellm_python: str | None = None

    @property
    def python(self) -> str:
        return str(self.bin_dir / "python")

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    @property
    def store_db(self) -> Path:
        return self.workdir / "store.db"


def base_env(layout: Layout) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join(p for p in (str(layout.bin_dir), env.get("PATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def upstream_server(layout: Layout, cpus: Sequence[int] | None) -> HttpServer:
    port = free_port()
    argv = [layout.python, str(HERE / "fake_upstream.py"), "--host", "127.0.0.1", "--port", str(port)]
    return HttpServer(
        "upstream", argv, base_env(layout), layout.workdir, port, layout.log("upstream"), cpus, ready_path="/v1/models"
    )


def sink_server(layout: Layout, cpus: Sequence[int] | None) -> HttpServer:
    port = free_port()
    argv = [layout.python, str(HERE / "otlp_sink.py"), "--host", "127.0.0.1", "--port", str(port)]
    return HttpServer("otlp-sink", argv, base_env(layout), layout.workdir, port, layout.log("otlp-sink"), cpus)


def gateway_config(upstream: str) -> dict[str, object]:
    """The gateway's config file: one route, one target on the fake upstream (design.md's keys)."""
    return {
        "llm": {
            "routes": [
                {
                    "name": ROUTE,
                    "timeout_s": 30,
                    "targets": [
                        {"base_url": f"{upstream}/v1", "model": UPSTREAM_MODEL, "api_key_env": UPSTREAM_KEY_ENV}
                    ],
                }
            ]
        }
    }


def gateway_server(
    layout: Layout, upstream: str, sink: str, workers: int, cpus: Sequence[int] | None, extra_env: dict[str, str]
) -> HttpServer:
    port = free_port()
    config = layout.workdir / "gateway.yaml"
    config.write_text(json.dumps(gateway_config(upstream), indent=2))  # JSON is YAML
    env = base_env(layout)
    env.update(
        {
            "GATEWAY_STORE_URI": f"sqlite:///{layout.store_db}",
            "GATEWAY_ARTIFACT_ROOTS": str(layout.workdir / "models"),
            UPSTREAM_KEY_ENV: UPSTREAM_KEY,
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "gateway-bench",
            "OTEL_BSP_SCHEDULE_DELAY": OTEL_BSP_SCHEDULE_DELAY_MS,
        }
    )
    env.update(extra_env)
    argv = [
        str(layout.bin_dir / "gateway"), "serve", "--config", str(config), "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    return HttpServer("gateway", argv, env, layout.workdir, port, layout.log("gateway"), cpus)


def bare_server(layout: Layout, upstream: str, workers: int, cpus: Sequence[int] | None) -> HttpServer:
    port = free_port()
    env = base_env(layout)
    env.update({"BARE_LLM_UPSTREAM": f"{upstream}/v1", "BARE_LLM_API_KEY": UPSTREAM_KEY})
    argv = [
        layout.python, "-m", "uvicorn", "bare_llm_proxy:app", "--app-dir", str(HERE), "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return HttpServer("bare", argv, env, layout.workdir, port, layout.log("bare"), cpus)


def litellm_unavailable(layout: Layout) -> str:
    """'' when ``--litellm-python`` can import the LiteLLM proxy, else why not."""
    if not layout.litellm_python:
        return "no --litellm-python given (a python with `litellm[proxy]` installed)"
    if not Path(layout.litellm_python).exists():
        return f"--litellm-python {layout.litellm_python} does not exist"
    import subprocess

    check = subprocess.run(
        [layout.litellm_python, "-c", "import litellm.proxy.proxy_server"],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )  # fmt: skip
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["(no error output)"])[-1]
        return f"{layout.litellm_python} cannot import litellm.proxy.proxy_server: {last[-300:]}"
    return ""


def litellm_version(layout: Layout) -> str:
    import subprocess

    assert layout.litellm_python
    res = subprocess.run(
        [layout.litellm_python, "-m", "pip", "show", "litellm"], capture_output=True, text=True, timeout=60
    )
    return next((ln.split(":", 1)[1].strip() for ln in res.stdout.splitlines() if ln.startswith("Version:")), "?")


def litellm_server(layout: Layout, upstream: str, workers: int, cpus: Sequence[int] | None) -> HttpServer:
    """LiteLLM proxy (``litellm.proxy.proxy_cli``) on the same upstream, master key, no DB, no callbacks."""
    assert layout.litellm_python
    port = free_port()
    config = layout.workdir / "litellm.yaml"
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": ROUTE,
                        "litellm_params": {
                            "model": f"openai/{UPSTREAM_MODEL}",
                            "api_base": f"{upstream}/v1",
                            "api_key": UPSTREAM_KEY,
                        },
                    }
                ],
                "general_settings": {"master_key": LITELLM_MASTER_KEY},
                "litellm_settings": {"telemetry": False},
            },
            indent=2,
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no network fetch of the price list at start
    argv = [
        layout.litellm_python, "-m", "litellm.proxy.proxy_cli", "--config", str(config), "--host", "127.0.0.1",
        "--port", str(port), "--num_workers", str(workers),
    ]  # fmt: skip
    return HttpServer(
        "litellm", argv, env, layout.workdir, port, layout.log("litellm"), cpus, ready_path="/health/liveliness"
    )


def litellm_headers() -> list[str]:
    return [f"Authorization: Bearer {LITELLM_MASTER_KEY}"]
