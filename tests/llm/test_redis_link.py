"""The limiter's pipelined Redis connection (gateway/limits/redis_link.py) on a real Redis: concurrent scripts
share it and each gets its own answer; a script Redis does not hold is sent whole; an error reply is raised and the
link goes on; a lost connection is replaced; a stalled Redis costs a check its timeout, then the limiter's
``limits.redis_failure`` applies (fail open: the call goes through; closed: 503)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis
import redis.asyncio as aioredis

from gateway.errors import DependencyError
from gateway.keys import GatewayKey
from gateway.limit_settings import LimitsSettings
from gateway.limits.limiter import KeyLimiter
from gateway.limits.redis_link import Script, ScriptLink
from tests.conftest import REDIS_URL, require_service
from tests.judges.worker_procs import StalledServer, TcpProxy

ECHO = Script("return {ARGV[1], #KEYS}")
INCR = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


@pytest.fixture(autouse=True)
def _redis() -> None:
    require_service("Redis", "127.0.0.1", 6379)


def _fresh() -> Script:
    """A script no Redis holds yet (its text is new)."""
    return Script(f"return 'fresh-{secrets.token_hex(8)}'")


def test_concurrent_scripts_share_the_connection_and_each_gets_its_answer() -> None:
    async def body() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        link = ScriptLink(client, 2.0, (ECHO, INCR))
        counter = "limits-link-test:" + secrets.token_hex(4)
        try:
            answers = await asyncio.gather(*(link.run(ECHO, ["a", "b"], [f"call-{i}"]) for i in range(200)))
            assert answers == [[f"call-{i}".encode(), 2] for i in range(200)]
            for step in range(1, 51):  # no answer asked for; each reaches Redis before the next command
                assert link.send(INCR, [counter], [step]) is None
            assert await link.run(ECHO, [], ["last"]) == [b"last", 0]
            assert await client.get(counter) == str(sum(range(1, 51))).encode()
        finally:
            await client.delete(counter)
            await link.close()
            await client.aclose()

    asyncio.run(body())


def test_a_script_redis_does_not_hold_is_sent_whole_then_by_its_digest() -> None:
    async def body() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        link = ScriptLink(client, 2.0)
        try:
            first = _fresh()
            assert await client.script_exists(first.sha) == [False]
            assert await link.run(first, [], []) == first.source.split("'")[1].encode()
            assert await client.script_exists(first.sha) == [True]
            assert await link.run(first, [], []) == first.source.split("'")[1].encode()
        finally:
            await link.close()
            await client.aclose()

    asyncio.run(body())


def test_send_on_a_closed_link_opens_it_and_answers() -> None:
    async def body() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        link = ScriptLink(client, 2.0, (ECHO,))
        try:
            sent = link.send(ECHO, [], ["first"])
            assert sent is not None and await sent == [b"first", 0]
            assert link.connected and link.send(ECHO, [], ["then"]) is None
        finally:
            await link.close()
            await client.aclose()

    asyncio.run(body())


def test_an_error_reply_is_raised_and_the_link_goes_on() -> None:
    failing = Script("return redis.error_reply('ERR no such thing')")

    async def body() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        link = ScriptLink(client, 2.0, (ECHO,))
        try:
            with pytest.raises(redis.ResponseError, match="no such thing"):
                await link.run(failing, [], [])
            assert await link.run(ECHO, [], ["after"]) == [b"after", 0]
        finally:
            await link.close()
            await client.aclose()

    asyncio.run(body())


def test_a_lost_connection_is_replaced() -> None:
    name = "limits-link-" + secrets.token_hex(4)  # the link's connection, and only it, is killed

    async def body() -> None:
        client = aioredis.Redis.from_url(REDIS_URL, client_name=name)
        admin = aioredis.Redis.from_url(REDIS_URL)
        link = ScriptLink(client, 2.0, (ECHO,))
        try:
            assert await link.run(ECHO, [], ["before"]) == [b"before", 0]
            ids = [entry["id"] for entry in await admin.client_list() if entry["name"] == name]
            assert len(ids) == 1 and link.connected
            assert await admin.client_kill_filter(_id=ids[0]) == 1
            for _ in range(200):  # the reader sees the end of the connection
                if not link.connected:
                    break
                await asyncio.sleep(0.01)
            assert not link.connected
            assert await link.run(ECHO, [], ["after"]) == [b"after", 0]
            now = [entry["id"] for entry in await admin.client_list() if entry["name"] == name]
            assert len(now) == 1 and now != ids
        finally:
            await link.close()
            await client.aclose()
            await admin.aclose()

    asyncio.run(body())


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_stalled_redis_costs_a_check_its_timeout_then_the_failure_mode_applies(mode: str) -> None:
    key = GatewayKey(id="stalled-" + secrets.token_hex(4), name="s", digest="0" * 64, scopes=frozenset(), rpm=5)

    async def body(stalled: StalledServer) -> None:
        limiter = KeyLimiter(LimitsSettings(redis_failure=mode, redis_timeout_s=0.2), stalled.url)
        try:
            for _ in range(3):  # the first waits for its timeout; the next are answered at once (Redis paused)
                if mode == "open":
                    admission = await limiter.admit(key, None, {})
                    assert admission.headers == {}  # through, unlimited
                    admission.settle(None, None)
                else:
                    with pytest.raises(DependencyError, match="Redis is unreachable"):
                        await limiter.admit(key, None, {})
            assert stalled.accepted == 1
        finally:
            await limiter.close()

    with StalledServer() as stalled:
        asyncio.run(body(stalled))


def test_a_late_reply_fails_every_command_waiting_and_the_next_opens_a_new_connection() -> None:
    """The link's watchdog (one timer, not one per command): the oldest command still unanswered after the
    timeout drops the connection, and every command waiting on it fails with TimeoutError."""
    proxy = TcpProxy()
    name = "limits-late-" + secrets.token_hex(4)

    async def body() -> None:
        client = aioredis.Redis.from_url(proxy.url, client_name=name)
        admin = aioredis.Redis.from_url(REDIS_URL)
        link = ScriptLink(client, 0.3, (ECHO,))
        try:
            assert await link.run(ECHO, [], ["open"]) == [b"open", 0]
            proxy.stall()
            await asyncio.sleep(0.05)
            first = asyncio.ensure_future(link.run(ECHO, [], ["first"]))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(link.run(ECHO, [], ["second"]))
            for waiting in (first, second):
                with pytest.raises(TimeoutError, match="did not answer within 0.3 s"):
                    await waiting
            assert not link.connected
            proxy.stall(False)
            await asyncio.sleep(0.05)
            assert await link.run(ECHO, [], ["after"]) == [b"after", 0]
            assert len([entry for entry in await admin.client_list() if entry["name"] == name]) == 1
        finally:
            await link.close()
            await client.aclose()
            await admin.aclose()

    try:
        asyncio.run(body())
    finally:
        proxy.close()
