"""``gateway judges create|list|show``: custom judges and what every judge is, against the store;
``gateway judges worker``: a process running queued judge jobs (judges/worker/process.py);
``gateway judges queue|resume``: the queue's state, a paused judge resumed (judges/queue_cli.py).

Like ``gateway prompts``, the commands talk to the store directly (``--store-uri`` /
``GATEWAY_STORE_URI``, the embedded SQLite store by default) and, when ``redis_url`` is set, tell running
gateways about a change at once. They seed the built-in judges first when the store lacks them, as a
starting gateway does (judges/catalog.py), so ``list`` shows them on a store no gateway has served yet.
A judge's route is checked against the ``llm`` routes of the configuration when it has any.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.cli_output import print_json
from gateway.config import Settings
from gateway.errors import InvalidParameter
from judges.catalog import JudgeCatalog, JudgeUnusable, judge_list
from judges.definitions import Judge, parse_judge_spec

AddStoreOptions = Callable[[argparse.ArgumentParser], None]

_KIND_HELP = (
    "bool, int:MIN..MAX, float:MIN..MAX, categorical:LABEL,LABEL,... or the JSON object "
    '(\'{"type": "int", "min": 1, "max": 5}\')'
)


def add_commands(commands: Any, add_store_options: AddStoreOptions) -> None:
    """Add the ``judges`` command and its actions to ``gateway``'s subparsers."""
    judges = commands.add_parser("judges", help="Create custom LLM judges, list and show judges.")
    actions = judges.add_subparsers(dest="judges_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="Create custom judge NAME, or edit it (a new version of prompt judges.NAME).",
        description="Instructions may use only {{ inputs }}, {{ outputs }} and {{ expectations }}.",
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--instructions", required=True, metavar="FILE|TEXT", help="A file's path, '-' (stdin) or the text."
    )
    create.add_argument("--route", required=True, help="The LLM route that runs the judge.")
    create.add_argument("--value-kind", required=True, metavar="KIND", help=_KIND_HELP)
    create.add_argument("--description")
    create.add_argument("--json", action="store_true", help="Print JSON.")
    add_store_options(create)

    listing = actions.add_parser("list", help="List the built-in and custom judges.")
    listing.add_argument("--json", action="store_true", help="Print JSON.")
    add_store_options(listing)

    show = actions.add_parser("show", help="Show a judge: prompt version, route, value kind, required fields.")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="Print JSON.")
    add_store_options(show)

    worker = actions.add_parser(
        "worker",
        help="Run queued judge jobs (online evaluation, backfills) from the Redis Streams queue; needs redis_url.",
        description="Runs until SIGTERM or SIGINT: then takes no more jobs, finishes those in hand within "
        "--grace-s (the others stay queued for another worker) and exits 0. Settings: judges.queue.",
    )
    worker.add_argument("--concurrency", type=_positive_int, default=8, metavar="N", help="Jobs in hand (default 8).")
    worker.add_argument("--grace-s", type=float, default=10.0, metavar="S",
                        help="On SIGTERM, how long the jobs in hand may take to finish (default 10).")  # fmt: skip
    add_store_options(worker)

    from judges.queue_cli import add_commands as add_queue_commands

    add_queue_commands(actions, add_store_options)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.judges_command == "worker":
        from judges.worker.process import run_worker

        return run_worker(settings, concurrency=args.concurrency, grace_s=args.grace_s)
    if args.judges_command in ("queue", "resume"):
        from judges.queue_cli import run as run_queue

        return run_queue(args, settings)
    from prompts.cache import PromptCache
    from prompts.store import PromptStore

    cache = PromptCache(PromptStore.open(settings.store_uri))
    try:
        cache.refresh_sync()
        catalog = JudgeCatalog(cache, settings.judges)
        changed = bool(catalog.seed())
        if args.judges_command == "create":
            body = {
                "name": args.name,
                "instructions": _text(args.instructions),
                "route": args.route,
                "value_kind": parse_value_kind(args.value_kind),
                "description": args.description,
            }
            routes = set(settings.llm.routes) or None  # no llm section here: the serving gateway's may differ
            judge = catalog.create(parse_judge_spec(body), routes=routes)
            changed = True
            _print_created(judge, args.json)
        if changed and settings.redis_url:
            from gateway.store.notify import publish_change_sync

            publish_change_sync(settings.redis_url, cache.store.revision())
        if args.judges_command == "list":
            cache.refresh_sync()
            _print_list(catalog, args.json)
        elif args.judges_command == "show":
            cache.refresh_sync()
            _print_judge(catalog.get(args.name), args.json)
    finally:
        cache.store.close()
    return 0


def parse_value_kind(text: str) -> Any:
    """``--value-kind``: a shorthand or the JSON object, as the API's ``value_kind``."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise InvalidParameter(f"--value-kind: not valid JSON ({exc}).") from None
    kind, _, rest = stripped.partition(":")
    if kind == "bool" and not rest:
        return {"type": "bool"}
    if kind in ("int", "float"):
        low, dots, high = rest.partition("..")
        try:
            bounds = [int(low), int(high)] if kind == "int" else [float(low), float(high)]
        except ValueError:
            bounds = []
        if dots and bounds:
            return {"type": kind, "min": bounds[0], "max": bounds[1]}
    if kind == "categorical" and rest:
        return {"type": "categorical", "labels": [label.strip() for label in rest.split(",")]}
    raise InvalidParameter(f"--value-kind {text!r}: expected {_KIND_HELP}.")


def _text(value: str) -> str:
    if value == "-":
        return sys.stdin.read()
    path = Path(value)
    try:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    except OSError:  # a long text is not a path
        pass
    return value


def _kind_text(judge: Judge) -> str:
    kind = judge.value_kind
    if kind.kind in ("int", "float"):
        return f"{kind.kind} {kind.minimum:g}..{kind.maximum:g}"
    if kind.kind == "categorical":
        return "categorical " + ",".join(kind.labels)
    return kind.kind


def _print_created(judge: Judge, as_json: bool) -> None:
    if as_json:
        print_json(judge.to_dict())
        return
    print(
        f"Judge {judge.name!r}: prompt {judge.prompt_name} version {judge.prompt_version} (alias production), "
        f"{_kind_text(judge)}, route {judge.route}"
    )


def _print_list(catalog: JudgeCatalog, as_json: bool) -> None:
    judges = catalog.judges()
    if as_json:
        print_json(judge_list(judges))
        return
    print(f"{'NAME':<24} {'VERSION':>7}  {'KIND':<24} {'ROUTE':<20} SOURCE")
    for name, judge in judges.items():
        if isinstance(judge, JudgeUnusable):
            print(f"{name:<24} {'-':>7}  unusable: {judge.message}")
            continue
        route = judge.route or "-"
        print(f"{name:<24} {judge.prompt_version:>7}  {_kind_text(judge):<24} {route:<20} {_source(judge)}")


def _source(judge: Judge) -> str:
    return "code" if judge.code is not None else "built-in" if judge.builtin else "custom"


def _print_judge(judge: Judge, as_json: bool) -> None:
    if as_json:
        print_json(judge.to_dict())
        return
    print(f"{judge.name} ({_source(judge)}): {judge.description or ''}".rstrip(": "))
    if judge.code is not None:
        print(f"  function: {judge.code.ref} version {judge.prompt_version} (judges.code: no LLM call)")
    else:
        print(f"  prompt:   {judge.prompt_name} version {judge.prompt_version}")
        print(f"  route:    {judge.route or '- (set judges.route)'}")
    print(f"  value:    {_kind_text(judge)}")
    print(f"  requires: {', '.join(' | '.join(paths) for paths in judge.required)}")
    if judge.code is not None:
        return
    print("  instructions:")
    for line in judge.instructions.splitlines():
        print(f"    {line}")
