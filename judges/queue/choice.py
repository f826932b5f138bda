"""Which judge queue a process uses: Redis Streams when ``redis_url`` is set (judges/queue/redis_streams.py),
else the embedded queue in the store (judges/queue/local.py). The one place that decides, so the gateway's
embedded workers, ``gateway judges worker`` processes, the online-judging shipper, the queue's API and its
command line always meet on the same queue. The queue's ``kind`` (``redis`` or ``store``) names it."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from gateway.config import Settings
from judges.queue.base import JobQueue
from judges.queue.local import LocalJobQueue
from judges.queue.redis_streams import RedisStreamsQueue


def open_judge_queue(settings: Settings, engine: Engine | None = None) -> JobQueue:
    """The queue for ``settings``: on Redis, or on ``engine`` (the store's; opened from ``store_uri`` and
    migrated when not given, then owned by the queue and disposed with it)."""
    if settings.redis_url:
        return RedisStreamsQueue(settings.redis_url, key_prefix=settings.judges.queue.key_prefix)
    if engine is not None:
        return LocalJobQueue(engine)
    return LocalJobQueue.open(settings.store_uri)
