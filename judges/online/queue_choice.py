"""Which judge queue online jobs go to: the seam between online judging and the queue backends
(judges/queue/). gateway.app calls :func:`queue_for` when ``judges.online`` has rules and no queue was
handed to ``create_app``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config_values import ConfigError

if TYPE_CHECKING:
    from gateway.config import Settings
    from judges.queue.base import JobQueue


def check_online_queue(settings: Settings) -> None:
    """Refuse, before the server binds (``gateway serve``, before any worker starts), online rules that no
    queue can carry: ConfigError naming ``judges.online``. Builds nothing."""
    if settings.judges.online.rules:
        queue_for(settings)


def queue_for(settings: Settings) -> JobQueue:
    """The judge queue online jobs go to. Not wired yet: the backends (Redis Streams when ``redis_url``
    is set, the embedded SQLite queue otherwise) are written beside this; until they are, a gateway with
    ``judges.online`` rules refuses to start, saying so."""
    raise ConfigError(
        "judges.online needs a judge queue: no queue backend is available in this build yet (Redis Streams "
        "or the embedded SQLite queue); remove the judges.online rules to start."
    )
