"""In-process CPU cost of ``POST /invocations`` (the iris demo model, 1-row body): no HTTP server, no
load generator, so the figure is the app's own work per request, without uvicorn and the kernel.

Unlike the rest of ``loadtest/`` this script imports ``gateway``: it profiles the app itself. It builds
the demo package (``gateway.demo``) and a SQLite store in a scratch directory (``--workdir``, reused when
it exists), registers the package as ``iris@champion``, builds the app with ``create_app`` and runs its
lifespan, then calls the ASGI app directly: each round sends ``--concurrency`` requests at once with
``asyncio.gather`` (1: one at a time; 32: what uvicorn hands the app under load, where same-tick batching
joins them), each with its own fresh scope, ``receive`` (the body in one message) and ``send``.

Printed per concurrency: ``time.process_time`` per request over ``--requests`` requests (after
``--warmup``), for each of ``--repeat`` passes, and their median. ``--profile N`` runs one more pass
under cProfile and prints the top N functions by own time (cProfile slows every call: read it for
where the time goes, not for totals). Every answer is checked (status 200, one prediction).

Examples::

    .venv/bin/python loadtest/profile_invocations.py                          # concurrency 1 and 32
    .venv/bin/python loadtest/profile_invocations.py --concurrency 32 --profile 30
    .venv/bin/python loadtest/profile_invocations.py --batching off --requests 20000
    .venv/bin/python loadtest/profile_invocations.py --auth          # auth on: every request sends a gateway key

Compare code versions in separate processes, interleaved (A B A B ...), and quote medians: on a shared
machine single passes move more than most changes (docs/benchmarks.md, "Figures once quoted in code").
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gateway.app import create_app  # noqa: E402
from gateway.config import load_settings  # noqa: E402
from gateway.demo import build_demo_package  # noqa: E402
from gateway.refs import ModelRef  # noqa: E402
from gateway.registration import register_version  # noqa: E402
from gateway.store.registry import RegistryStore  # noqa: E402

# --auth: the gateway key every request sends (auth.keys holds its digest), else nothing.
AUTH_KEY = "gw_profile-" + "k" * 32
AUTH_HEADERS: list[tuple[bytes, bytes]] = []
MODEL = "iris"
ALIAS = "champion"
# The bench's 1-row body (loadtest/targets.py writes the same from the package's input example).
BODY = orjson.dumps(
    {
        "dataframe_split": {
            "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
            "data": [[5.1, 3.5, 1.4, 0.2]],
        }
    }
)


def prepare_store(workdir: Path) -> str:
    """The store URI, with the demo package registered as iris@champion (built once per workdir)."""
    package = workdir / "models" / MODEL
    store_path = workdir / "store.db"
    if not store_path.exists():
        build_demo_package(package)
        store = RegistryStore.open(f"sqlite:///{store_path}")
        try:
            register_version(
                store, MODEL, str(package), artifact_roots=[workdir / "models"], alias=ALIAS, create_model=True
            )
        finally:
            store.close()
    return f"sqlite:///{store_path}"


def make_scope(path: str) -> dict[str, Any]:
    """What uvicorn's httptools protocol puts in a request's scope (a fresh dict per request)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            *AUTH_HEADERS,
        ],
        "state": {},
    }


async def one_request(app: Any, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:  # nothing reads past the body; a real server would block until disconnect
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(make_scope(path), receive, send)
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, body


async def run_pass(app: Any, path: str, concurrency: int, requests: int) -> float:
    """CPU microseconds per request over ``requests`` requests sent ``concurrency`` at a time."""
    rounds = max(1, requests // concurrency)
    started = time.process_time()
    for _ in range(rounds):
        answers = await asyncio.gather(*(one_request(app, path) for _ in range(concurrency)))
        for status, body in answers:
            if status != 200 or len(orjson.loads(body)["predictions"]) != 1:
                raise SystemExit(f"unexpected answer {status}: {body[:300]!r}")
    return (time.process_time() - started) / (rounds * concurrency) * 1e6


_CONSTANT_BODY = b'{"predictions": [0]}'
_CONSTANT_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_CONSTANT_BODY)).encode())],
}


async def constant_app(scope: Any, receive: Any, send: Any) -> None:
    """``--baseline``: reads the body and answers a constant, to measure what the harness itself costs."""
    await receive()
    await send(_CONSTANT_START)
    await send({"type": "http.response.body", "body": _CONSTANT_BODY})


async def with_app(settings: Any, work: Callable[[Any], Awaitable[None]], baseline: bool = False) -> None:
    if baseline:
        await work(constant_app)
        return
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pool = app.state.gateway.pool
        ref = ModelRef(MODEL, alias=ALIAS)
        deadline = time.monotonic() + 120
        while pool.get_loaded(ref) is None:  # preload runs in the background
            if time.monotonic() > deadline:
                raise SystemExit(f"model did not load: {pool.failures}")
            await asyncio.sleep(0.05)
        await work(app)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--concurrency", default="1,32", help="requests per asyncio.gather, comma-separated")
    parser.add_argument("--requests", type=int, default=8000, help="measured requests per pass")
    parser.add_argument("--warmup", type=int, default=2000, help="requests before measuring, per concurrency")
    parser.add_argument("--repeat", type=int, default=3, help="measured passes per concurrency")
    parser.add_argument("--batching", choices=("on", "off"), default="on")
    parser.add_argument("--path", default="/invocations", help="e.g. /models/iris@champion/invocations")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile one pass, print top N")
    parser.add_argument("--baseline", action="store_true", help="drive a constant ASGI app: the harness's own cost")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="uvloop: as the bench runs")
    parser.add_argument("--auth", action="store_true", help="auth on: every request sends a gateway key")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gateway-profile-invocations")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.auth:
        AUTH_HEADERS.append((b"authorization", b"Bearer " + AUTH_KEY.encode()))
    args.workdir.mkdir(parents=True, exist_ok=True)
    store_uri = prepare_store(args.workdir)
    settings = load_settings(
        {
            "store_uri": store_uri,
            "artifact_roots": [str(args.workdir / "models")],
            "workers": 1,
            "serving.intra_op_num_threads": 1,
            "serving.default_model": f"models:/{MODEL}@{ALIAS}",
            "serving.preload": [f"models:/{MODEL}@{ALIAS}"],
            "serving.batching": args.batching == "on",
            **({"auth": {"keys": [hashlib.sha256(AUTH_KEY.encode()).hexdigest()]}} if args.auth else {}),
        },
        environ={},
    )
    levels = [int(c) for c in args.concurrency.split(",")]

    async def work(app: Any) -> None:
        for concurrency in levels:
            await run_pass(app, args.path, concurrency, args.warmup)
            gc.collect()
            figures = [await run_pass(app, args.path, concurrency, args.requests) for _ in range(args.repeat)]
            shown = " ".join(f"{f:.1f}" for f in figures)
            what = "baseline (constant app)" if args.baseline else f"batching {args.batching}"
            print(
                f"concurrency {concurrency:>3} {what}: median {statistics.median(figures):.1f} "
                f"us/req CPU (passes: {shown})",
                flush=True,
            )
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                await run_pass(app, args.path, concurrency, args.requests)
                profiler.disable()
                stats = pstats.Stats(profiler, stream=sys.stdout)
                stats.sort_stats("tottime").print_stats(args.profile)

    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(with_app(settings, work, args.baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
