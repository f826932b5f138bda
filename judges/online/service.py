"""Online judging in one process: the rules, the span processor on the app's TracerProvider, the buffer
and the shipper task; started and stopped by gateway.app's lifespan (``app.state.online_judges``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from opentelemetry.sdk.trace import TracerProvider

from gateway.errors import NotFound
from gateway.judge_online_settings import OnlineSettings
from judges.online.buffer import JobBuffer
from judges.online.processor import OnlineJudgeProcessor
from judges.online.rules import AliasResolver, OnlineRules
from judges.online.shipper import JobShipper
from judges.queue.base import JobQueue
from prompts.cache import PromptCache


@dataclass(eq=False)
class OnlineJudging:
    """What runs online judging in this process; ``rules`` are replaced by ``PUT /api/judges/online``."""

    rules: OnlineRules
    processor: OnlineJudgeProcessor
    buffer: JobBuffer
    shipper: JobShipper
    task: asyncio.Task[None]

    async def close(self, timeout_s: float) -> None:
        """Stop the shipper, then ship what is buffered for at most ``timeout_s`` (the rest is counted as
        dropped, ``shutdown``). The queue itself is its owner's to close."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.shipper.close(timeout_s)


def start_online_judging(
    settings: OnlineSettings, provider: TracerProvider, queue: JobQueue, resolve_alias: AliasResolver | None
) -> OnlineJudging:
    """Install the processor on ``provider`` and start the shipper task (on the running loop)."""
    rules = OnlineRules(settings.rules, resolve_alias)
    buffer = JobBuffer(settings.buffer_size)
    processor = OnlineJudgeProcessor(rules, buffer)
    shipper = JobShipper(
        buffer,
        queue,
        batch_size=settings.batch_size,
        flush_interval_s=settings.flush_interval_s,
        enqueue_timeout_s=settings.enqueue_timeout_s,
    )
    provider.add_span_processor(processor)
    task = asyncio.create_task(shipper.run(), name="online-judge-shipper")
    return OnlineJudging(rules, processor, buffer, shipper, task)


def prompt_alias_resolver(cache: PromptCache) -> AliasResolver:
    """(prompt name, alias) -> the version the alias names in the registry's in-memory catalog now (None:
    no such prompt or alias), for rules with ``prompt_alias``; a dict lookup, cheap enough for ``on_end``."""

    def resolve(name: str, alias: str) -> int | None:
        try:
            return cache.catalog.by_alias(name, alias).version.version
        except NotFound:
            return None

    return resolve
