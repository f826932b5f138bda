"""``gateway judges queue`` and ``gateway judges resume NAME``: the judge queue's state and a paused
judge's resumption, on the queue the workers use (judges/queue/choice.py: Redis, or the store's table)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.cli_output import print_json
from gateway.config import Settings
from judges.queue.base import JobQueue, JudgeQueueStats
from judges.queue.choice import open_judge_queue

T = TypeVar("T")


def add_commands(actions: Any, add_store_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """``queue`` and ``resume`` under ``gateway judges``."""
    queue = actions.add_parser(
        "queue", help="Show the judge queue per judge: depth, in hand, delayed, oldest age, dead letters, pauses."
    )
    queue.add_argument("--json", action="store_true", help="Print JSON.")
    add_store_options(queue)
    resume = actions.add_parser("resume", help="Resume judge NAME, paused by a configuration failure.")
    resume.add_argument("name", metavar="NAME")
    add_store_options(resume)


def run(args: argparse.Namespace, settings: Settings) -> int:

    def on_queue(work: Callable[[JobQueue], Awaitable[T]]) -> T:
        async def main() -> T:
            queue = open_judge_queue(settings)
            try:
                return await work(queue)
            finally:
                await queue.close()

        return asyncio.run(main())

    if args.judges_command == "resume":
        paused = on_queue(lambda queue: queue.paused())
        if args.name not in paused:
            print(f"gateway: judge {args.name!r} is not paused", file=sys.stderr)
            return 1
        on_queue(lambda queue: queue.resume(args.name))
        print(f"Judge {args.name!r} resumed (it was paused: {paused[args.name]})")
        return 0
    stats = on_queue(lambda queue: queue.stats())
    _print_stats(stats, args.json)
    return 0


def _print_stats(stats: list[JudgeQueueStats], as_json: bool) -> None:
    if as_json:
        print_json({"judges": [s.to_dict() for s in stats]})
        return
    print(f"{'JUDGE':<24} {'DEPTH':>7} {'IN HAND':>7} {'DELAYED':>7} {'OLDEST_S':>9} {'DEAD':>6}  PAUSED")
    for s in stats:
        print(f"{s.judge:<24} {s.depth:>7} {s.pending:>7} {s.delayed:>7} {s.oldest_age_s:>9.1f} {s.dead_letters:>6}  "
              f"{s.paused or '-'}")  # fmt: skip
