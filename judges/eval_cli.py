"""``gateway eval run DATA.jsonl --judge NAME ...``: an evaluation run from the command line.

DATA.jsonl holds one item per line, ``{"inputs": ..., "outputs": ..., "expectations": {...}}`` (outputs may
be left out when ``--target-route`` generates them). The command posts the run, follows its progress (a
bar on a terminal, a line every few seconds otherwise, on stderr), then prints the summary per judge on
stdout, or with ``--json`` one JSON document (every run as ``GET /api/evaluations/{id}`` answers it, the
error rate and whether it passed).

Several ``--prompt`` references (each with ``--target-route``) start one evaluation per prompt version on the
same items, run together; the summary shows their scores side by side, one column group per version. (One
run per version keeps each run's aggregates that version's, and each can be read, cancelled or compared
on its own.)

Where it runs: ``--url`` (default ``$GATEWAY_URL``) names a running gateway, reached over HTTP with the key in
``$GATEWAY_API_KEY`` (sent as ``Authorization: Bearer``). Without either, it runs embedded: the gateway app
in this process, on the local store and the LLM routes of the configuration (``--config``, ``GATEWAY_*``),
as ``gateway serve`` would, through the same HTTP API without a socket (so without gateway keys: only this
process reaches it); runs that another process left unfinished are not resumed by it. Either way the judge
jobs go through the configured judge queue: embedded, this process's own worker runs them (with
``judges.workers: external``, ``gateway judges worker`` processes must be running).

Exit status: 0 when every run completed with an error rate (items with an error, over all items) at most
``--max-error-rate`` (default 0: any error fails); 1 when the rate is higher, or a run failed or was
cancelled; 2 for a bad argument, data file or request (the gateway's message is printed); 130 on Ctrl-C,
after cancelling the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from judges.eval_display import Progress, error_rate, json_document, summary_table

API_KEY_ENV: Final = "GATEWAY_API_KEY"
URL_ENV: Final = "GATEWAY_URL"
POLL_INTERVAL_S: Final = 0.5
FINISHED: Final = frozenset({"completed", "cancelled", "failed"})


class UsageError(Exception):
    """A bad argument, data file or request: exit status 2."""


def add_commands(commands: Any, add_store_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """``gateway eval run`` (``commands`` is the top-level subparsers object of gateway/cli.py)."""
    evaluate = commands.add_parser("eval", help="Run evaluations: judges over a dataset.")
    actions = evaluate.add_subparsers(dest="eval_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="Judge the items of a JSONL file (generating outputs through a route and prompt when asked).",
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("data", metavar="DATA.jsonl", help='One item per line: {"inputs", "outputs"?, "expectations"?}.')
    run.add_argument(
        "--judge",
        action="append",
        required=True,
        metavar="NAME",
        help="A judge (repeatable): relevance_to_query, correctness, safety, ... or a custom one.",
    )
    run.add_argument("--guidelines", metavar="TEXT", help="The guidelines text of the 'guidelines' judge.")
    run.add_argument("--target-route", metavar="ROUTE", help="Generate the items' outputs through this LLM route.")
    run.add_argument("--prompt", action="append", metavar="REF",
                     help="With --target-route: render this prompt with each item's inputs (prompts:/qa@production, "
                     "prompts:/qa/3); repeat to compare versions side by side.")  # fmt: skip
    run.add_argument("--name", help="A name for the run(s).")
    run.add_argument("--json", action="store_true", help="Print one JSON document instead of the table.")
    run.add_argument("--max-error-rate", type=_rate, default=0.0, metavar="X",
                     help="Highest share of items with an error that still exits 0 (default 0).")  # fmt: skip
    run.add_argument(
        "--url",
        default=os.environ.get(URL_ENV) or None,
        help=f"A running gateway (default ${URL_ENV}); none: run embedded on the local store.",
    )
    add_store_options(run)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return value


def run(args: argparse.Namespace, settings_of: Callable[[], Any]) -> int:
    """``gateway eval run``; ``settings_of`` loads the Settings (embedded mode only)."""
    try:
        requests = build_requests(args, read_items(Path(args.data)))
    except UsageError as exc:
        print(f"gateway eval: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, requests, settings_of))
    except UsageError as exc:
        print(f"gateway eval: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def read_items(path: Path) -> list[dict[str, Any]]:
    """The items of a JSONL file (blank lines skipped); UsageError naming the line that is not an object."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    items: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{path} line {number} is not JSON: {exc}") from None
        if not isinstance(item, dict):
            raise UsageError(f"{path} line {number} must be a JSON object with 'inputs', got {type(item).__name__}")
        items.append(item)
    if not items:
        raise UsageError(f"{path} holds no items")
    return items


def build_requests(args: argparse.Namespace, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The POST /api/evaluations bodies: one per --prompt (one in all without)."""
    judges: list[Any] = []
    for name in args.judge:
        judges.append({"name": name, "guidelines": args.guidelines} if name == "guidelines" and args.guidelines
                      else name)  # fmt: skip
    if args.prompt and not args.target_route:
        raise UsageError("--prompt needs --target-route (the route that runs the rendered prompt)")
    base: dict[str, Any] = {"judges": judges, "items": items}
    if args.name:
        base["name"] = args.name
    if not args.target_route:
        return [base]
    prompts: list[str | None] = list(args.prompt) if args.prompt else [None]
    requests = []
    for prompt in prompts:
        target: dict[str, Any] = {"route": args.target_route}
        if prompt is not None:
            target["prompt"] = prompt
        requests.append({**base, "target": target})
    return requests


async def _run(args: argparse.Namespace, requests: list[dict[str, Any]], settings_of: Callable[[], Any]) -> int:
    async with _client(args.url, settings_of) as client:
        ids: list[str] = []
        try:
            for body in requests:
                answer = await _call(client, "POST", "/api/evaluations", json=body)
                ids.append(answer["id"])
            views = await _follow(client, ids, Progress())
        except (KeyboardInterrupt, asyncio.CancelledError):
            for evaluation_id in ids:
                with contextlib.suppress(Exception):
                    await client.delete(f"/api/evaluations/{evaluation_id}")
            print(f"\ngateway eval: interrupted; cancelled {', '.join(ids) or 'nothing'}", file=sys.stderr)
            return 130
        views = [await _call(client, "GET", f"/api/evaluations/{evaluation_id}") for evaluation_id in ids]
    rate = error_rate(views)
    document = json_document(views, args.max_error_rate)
    if args.json:
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(summary_table(views))
        print(f"error rate {rate:.1%} (max {args.max_error_rate:.1%}): {'passed' if document['passed'] else 'FAILED'}")
    return 0 if document["passed"] else 1


async def _follow(client: httpx.AsyncClient, ids: list[str], progress: Progress) -> list[dict[str, Any]]:
    """Poll the runs (without their items) until every one has finished, drawing the progress."""
    while True:
        views = [await _call(client, "GET", f"/api/evaluations/{i}", params={"items": "false"}) for i in ids]
        finished = all(view["status"] in FINISHED for view in views)
        progress.update(views, final=finished)
        if finished:
            return views
        await asyncio.sleep(POLL_INTERVAL_S)


async def _call(client: httpx.AsyncClient, method: str, path: str, **options: Any) -> dict[str, Any]:
    try:
        response = await client.request(method, path, **options)
    except httpx.TransportError as exc:
        raise UsageError(f"cannot reach the gateway at {client.base_url}: {type(exc).__name__}: {exc}") from None
    if response.status_code >= 400:
        try:
            message = response.json().get("message") or response.text
        except ValueError:
            message = response.text
        raise UsageError(f"{method} {path} answered {response.status_code}: {message}")
    data: dict[str, Any] = response.json()
    return data


@contextlib.asynccontextmanager
async def _client(url: str | None, settings_of: Callable[[], Any]) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the gateway at ``url``, or for the gateway app run in this process."""
    if url:
        key = os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=60) as client:
            yield client
        return
    from gateway.app import configure_logging, create_app
    from gateway.llm.routes_config import AuthSettings

    # No socket is bound: only this process reaches the app, already holding the store (as `gateway prompts`
    # does), so its gateway keys are left out rather than asked for.
    settings = dataclasses.replace(settings_of(), auth=AuthSettings())
    configure_logging("warning")
    app = create_app(settings, resume_evaluations=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=None) as client:
            yield client
