"""Registry change notifications over Redis pub/sub.

Every gateway replica polls the store's revision every ``serving.refresh_interval_s``. With
``redis_url`` set, a registry write also publishes the new revision on ``CHANNEL``, and every
replica (every worker process) re-reads the registry as soon as the message arrives, so an alias
move reaches all of them within a second. A change of the gateway keys (gateway/store/keys.py) is published
on the same channel (the message ``keys``): every worker re-reads its keys, the registry's and prompts'
revision checks find nothing new. Redis is an accelerator here, never a dependency of
correctness: when it is down, polling still converges and the failure is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aioredis

logger = logging.getLogger("gateway.store")

CHANNEL = "gateway:registry:changed"
KEYS_CHANGED = "keys"  # the message of a key change (a registry change sends its revision)
_RECONNECT_DELAY_S = 1.0
PUBLISH_TIMEOUT_S = 0.5  # a registry, prompt or key write waits this long at most for the notification
PUBLISH_PAUSE_S = 5.0  # after a failed publish, Redis is left alone this long


def publish_change_sync(redis_url: str, revision: int | str) -> None:
    """Publish from a command-line process; a Redis failure is logged, never raised."""
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.publish(CHANNEL, str(revision))
        finally:
            client.close()
    except redis.RedisError as exc:
        logger.warning("Could not notify replicas through Redis (%s); they will see the change by polling", exc)


class ChangeNotifier:
    """Publishes registry changes and listens for other replicas' changes (one per worker)."""

    def __init__(self, redis_url: str) -> None:
        self._client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2)
        self._failing = False
        self._paused_until = 0.0

    async def publish(self, revision: int | str) -> None:
        """Tell the other replicas, within ``PUBLISH_TIMEOUT_S`` (a write waits for it); after a failure Redis is
        left alone for ``PUBLISH_PAUSE_S``: the replicas see the change by polling meanwhile."""
        if time.monotonic() < self._paused_until:
            return
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._client.publish(CHANNEL, str(revision))
        except (TimeoutError, redis.RedisError, OSError) as exc:
            self._paused_until = time.monotonic() + PUBLISH_PAUSE_S
            self._log_failure(exc)

    async def listen(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Call ``on_change`` for every message, reconnecting after failures, until cancelled."""
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                if self._failing:
                    logger.info("Redis notifications are back")
                self._failing = False
                # Changes made while we were not subscribed would be missed: catch up once.
                await on_change()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await on_change()
            except (redis.RedisError, OSError) as exc:
                self._log_failure(exc)
                await asyncio.sleep(_RECONNECT_DELAY_S)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _log_failure(self, exc: BaseException) -> None:
        if not self._failing:
            logger.warning("Redis notifications unavailable (%s); replicas fall back to polling", exc)
        self._failing = True

    async def close(self) -> None:
        await self._client.aclose()
