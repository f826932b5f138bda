"""A stalled Redis (a socket that accepts and never answers) costs one call its timeout, not every call: the
response pins (written before a Responses API answer reaches the client) and the change notifier (awaited by
registry, prompt and key writes) leave Redis alone for a while after a failure. Counted by the connections the
stalled server accepted: a client that tried again would open another."""

from __future__ import annotations

import asyncio

import pytest

from gateway.llm.response_pins import Pin, PinsUnavailable, RedisPins
from gateway.store.notify import ChangeNotifier
from tests.judges.worker_procs import StalledServer


def test_pins_keep_to_memory_after_a_stalled_write_and_refuse_unknown_ids_at_once() -> None:
    async def body(stalled: StalledServer) -> None:
        pins = RedisPins(stalled.url)
        try:
            await pins.remember("resp_first", Pin("chat", "0"))  # waits REDIS_TIMEOUT_S, then pauses Redis
            assert stalled.accepted == 1
            for index in range(5):
                await pins.remember(f"resp_{index}", Pin("chat", "0"))
                with pytest.raises(PinsUnavailable):
                    await pins.lookup(f"resp_unknown_{index}")
            assert await pins.lookup("resp_3") == Pin("chat", "0")  # this worker's memory
            assert stalled.accepted == 1  # nothing more was sent to the stalled Redis
        finally:
            await pins.close()

    with StalledServer() as stalled:
        asyncio.run(body(stalled))


def test_the_notifier_gives_up_on_a_stalled_redis_for_a_while() -> None:
    async def body(stalled: StalledServer) -> None:
        notifier = ChangeNotifier(stalled.url)
        try:
            await notifier.publish(1)  # bounded by PUBLISH_TIMEOUT_S, then paused
            assert stalled.accepted == 1
            for revision in range(2, 7):
                await notifier.publish(revision)
            assert stalled.accepted == 1
        finally:
            await notifier.close()

    with StalledServer() as stalled:
        asyncio.run(body(stalled))
