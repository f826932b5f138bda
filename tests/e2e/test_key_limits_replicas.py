"""Two ``gateway serve`` replicas sharing Redis and PostgreSQL (issue 13's must-show): a key's limits are exact
across them. ``rpm: 20``: of 100 concurrent calls spread over both, exactly 20 succeed and 80 get 429 with
Retry-After; the same with ``tpm`` and the fake upstream's real token counts; a $0.01 budget stops the key at the
call that crosses it; a key revoked through replica A is refused by replica B within a second (polling is set to a
minute: only the Redis notification can do it); /api/usage sums equal /api/traces sums.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
import yaml

from loadtest.fake_upstream import create_app as create_fake_upstream
from tests.conftest import POSTGRES_URL, REDIS_URL, require_service
from tests.servers import gateway_env, run_app_in_thread, run_cli, run_gateway_process

ADMIN = "gw-replicas-admin-" + secrets.token_hex(8)
HI = {"messages": [{"role": "user", "content": "hi"}]}  # 1 input word, "Echo: hi": 2 output words
PRICED = {"input_price_per_mtok": 1000, "output_price_per_mtok": 1000}  # $0.001 a token: a "hi" call is $0.003
SHARED = "shared-" + secrets.token_hex(4)  # a route with rpm 20 of its own, named afresh (Redis keeps a minute)


@dataclass
class Replicas:
    a: str
    b: str
    env: dict[str, str]

    def key(self, **limits: Any) -> tuple[str, str]:
        """(id, key) of a new key made with the command line (which tells the replicas through Redis)."""
        args = ["keys", "create", "--name", f"k-{secrets.token_hex(4)}", "--scope", "llm", "--json"]
        for name, value in limits.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        made = json.loads(run_cli(args, self.env).stdout)
        secret: str = made["key"]
        for base_url in (self.a, self.b):  # both replicas know it (the notification, else their next poll)
            _wait_until(lambda url=base_url: _chat(url, secret, model="unknown").status_code == 404, "the key known")
        return made["id"], secret


def _wait_until(condition: Any, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.02)


def _chat(base_url: str, secret: str, model: str = "chat", **body: Any) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions", json={"model": model, **HI, **body},
        headers={"Authorization": f"Bearer {secret}"}, timeout=30,
    )  # fmt: skip


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    require_service("Redis", "127.0.0.1", 6379)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    # One PostgreSQL schema for the module (tests/conftest.py's postgres_url is per test).
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin_engine = sa.create_engine(POSTGRES_URL)
    with admin_engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    root = tmp_path_factory.mktemp("replicas")
    try:
        with run_app_in_thread(create_fake_upstream()) as upstream:
            base = f"{upstream}/v1"
            config = {
                "redis_url": REDIS_URL,
                "auth": {"keys": [hashlib.sha256(ADMIN.encode()).hexdigest()], "refresh_interval_s": 60},
                "llm": {
                    "routes": [
                        {"name": "chat", "targets": [{"base_url": base, "model": "fake-model"}]},
                        {"name": SHARED, "rpm": 20, "targets": [{"base_url": base, "model": "fake-model"}]},
                        {"name": "slow", "targets": [{"base_url": base, "model": "fake-model@delay=2"}]},
                        {"name": "priced", "targets": [{"base_url": base, "model": "fake-model", **PRICED}]},
                        {
                            "name": "failing",
                            "retries": 0,
                            "targets": [{"base_url": base, "model": "fake-model@status=500", **PRICED}],
                        },
                    ]
                },
                "telemetry": {"summary_flush_interval_s": 0.2},
            }
            config_path = root / "gateway.yaml"
            config_path.write_text(yaml.safe_dump(config))
            store_uri = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
            env = gateway_env(store_uri, root, GATEWAY_CONFIG=str(config_path))
            with (
                run_gateway_process(["--workers", "1"], env, log_path=root / "a.log") as (a, _),
                run_gateway_process(["--workers", "1"], env, log_path=root / "b.log") as (b, _),
            ):
                yield Replicas(a, b, env)
            for log in ("a.log", "b.log"):
                assert ADMIN not in (root / log).read_text()
    finally:
        with admin_engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin_engine.dispose()


async def _burst(replicas: Replicas, secret: str | list[str], count: int, **body: Any) -> list[httpx.Response]:
    """``count`` concurrent calls, every other one to each replica (and, given several keys, to each key in
    turn)."""
    secrets_ = [secret] if isinstance(secret, str) else secret
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as client:
        calls = [
            client.post(
                f"{(replicas.a, replicas.b)[i % 2]}/v1/chat/completions",
                json={**HI, **body},
                headers={"Authorization": f"Bearer {secrets_[i % len(secrets_)]}"},
            )  # fmt: skip
            for i in range(count)
        ]
        return list(await asyncio.gather(*calls))


def test_rpm_is_exact_across_replicas(replicas: Replicas) -> None:
    _, secret = replicas.key(rpm=20)
    answers = asyncio.run(_burst(replicas, secret, 100, model="chat"))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 20 and statuses.count(429) == 80, statuses
    for answer in answers:
        assert answer.headers["x-ratelimit-limit-requests"] == "20"
        if answer.status_code == 429:
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json()["error"]["code"] == "rate_limit_exceeded"
    # both replicas answered successes and refusals
    by_replica = {(i % 2, a.status_code) for i, a in enumerate(answers)}
    assert {(0, 429), (1, 429)} <= by_replica


def test_a_routes_own_rpm_is_exact_across_replicas_and_keys(replicas: Replicas) -> None:
    keys = [replicas.key()[1] for _ in range(3)]  # keys without limits of their own
    answers = asyncio.run(_burst(replicas, keys, 100, model=SHARED))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 20 and statuses.count(429) == 80, statuses
    for answer in answers:
        assert answer.headers["x-ratelimit-limit-requests"] == "20"
        if answer.status_code == 429:
            assert int(answer.headers["retry-after"]) >= 1 and SHARED in answer.json()["error"]["message"]


def test_tpm_is_exact_across_replicas_with_real_token_counts(replicas: Replicas) -> None:
    key_id, secret = replicas.key(tpm=1000)
    # The upstream answers after 2 s: every call is admitted or refused on its 100-token reservation first.
    answers = asyncio.run(_burst(replicas, secret, 100, model="slow", max_tokens=100))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 10 and statuses.count(429) == 90, statuses
    assert {a.json()["error"]["type"] for a in answers if a.status_code == 429} == {"tokens"}
    # Each answer used 3 tokens (1 in, 2 out): the ten reservations are corrected to 30 tokens.
    with redis.Redis.from_url(REDIS_URL) as client:
        _wait_until(lambda: int(client.get(f"gw:rl:{{{key_id}}}:tok:n") or 0) == 30, "the reservations corrected")
    after = _chat(replicas.b, secret, max_tokens=100)
    assert after.status_code == 200 and after.headers["x-ratelimit-remaining-tokens"] == str(1000 - 30 - 100)


def test_a_budget_stops_the_key_at_the_call_that_crosses_it(replicas: Replicas) -> None:
    key_id, secret = replicas.key(budget_usd=0.01, budget_period="month")
    statuses = []
    for i in range(6):
        statuses.append(_chat((replicas.a, replicas.b)[i % 2], secret, model="priced").status_code)
        if statuses[-1] != 200:
            break
    assert statuses == [200, 200, 200, 200, 429], statuses  # $0.012 after the fourth: it crossed $0.01
    refused = _chat(replicas.a, secret, model="priced").json()["error"]
    assert refused["code"] == "insufficient_quota" and "$0.01 per month" in refused["message"]
    # The cost is recorded: the store's trace summaries hold the four calls' $0.012.
    admin = {"Authorization": f"Bearer {ADMIN}"}

    def recorded() -> float:
        traces = httpx.get(f"{replicas.a}/api/traces", params={"key": key_id}, headers=admin).json()["traces"]
        return sum(t["cost_usd"] or 0 for t in traces if t["status_code"] == 200)

    _wait_until(lambda: abs(recorded() - 0.012) < 1e-9, "the four calls' cost in the trace store")


def test_a_key_revoked_on_a_is_refused_on_b_within_a_second(replicas: Replicas) -> None:
    key_id, secret = replicas.key()
    assert _chat(replicas.b, secret).status_code == 200
    revoked = httpx.post(f"{replicas.a}/api/keys/{key_id}/revoke", headers={"Authorization": f"Bearer {ADMIN}"})
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    # B polls the store once a minute: refused within a second, it was told through Redis.
    _wait_until(lambda: _chat(replicas.b, secret).status_code == 401, "refused on B", timeout_s=1.0)
    assert "revoked" in _chat(replicas.b, secret).json()["error"]["message"]


def test_no_answer_holds_a_key(replicas: Replicas) -> None:
    key_id, secret = replicas.key(rpm=1)
    answers = [_chat(replicas.a, secret), _chat(replicas.b, secret), _chat(replicas.a, secret, model="nope")]
    traces = httpx.get(f"{replicas.a}/api/traces", params={"key": key_id}, headers={"Authorization": f"Bearer {ADMIN}"})
    for text in [*(f"{a.headers}{a.text}" for a in answers), traces.text]:
        assert secret not in text


def test_usage_sums_equal_trace_sums_over_1000_mixed_calls(replicas: Replicas) -> None:
    keys = [replicas.key(), replicas.key()]
    started = int(time.time() * 1000)

    async def mixed() -> list[int]:
        semaphore = asyncio.Semaphore(40)
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(i: int) -> int:
                route = ("chat", "priced", "priced", "failing")[i % 4]
                body: dict[str, Any] = {
                    "model": route,
                    "messages": [{"role": "user", "content": " ".join(["word"] * (1 + i % 7))}],
                }
                if i % 5 == 0:
                    body |= {"stream": True, "stream_options": {"include_usage": True}}
                async with semaphore:
                    answer = await client.post(
                        f"{(replicas.a, replicas.b)[i % 2]}/v1/chat/completions", json=body,
                        headers={"Authorization": f"Bearer {keys[i % 3 % 2][1]}"},
                    )  # fmt: skip
                return answer.status_code

            return list(await asyncio.gather(*(one(i) for i in range(1000))))

    statuses = asyncio.run(mixed())
    assert set(statuses) == {200, 502}, set(statuses)
    admin = httpx.Client(base_url=replicas.a, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"})
    window = {"from": started, "to": int(time.time() * 1000) + 1}
    mine = window

    def usage(**params: Any) -> dict[str, Any]:
        answer = admin.get("/api/usage", params={**mine, **params})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    _wait_until(lambda: sum(usage(key=key_id)["total"]["requests"] for key_id, _ in keys) == 1000, "1000 summaries")

    def trace_sums(**params: Any) -> dict[str, Any]:
        sums = {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        token = None
        while True:
            page = admin.get(
                "/api/traces", params={**mine, **params, "limit": 1000, **({"page_token": token} if token else {})}
            ).json()
            for trace in page["traces"]:
                sums["requests"] += 1
                sums["input_tokens"] += trace["input_tokens"] or 0
                sums["output_tokens"] += trace["output_tokens"] or 0
                sums["cost_usd"] += trace["cost_usd"] or 0.0
            token = page["next_page_token"]
            if token is None:
                return sums

    for filters in ({"key": keys[0][0]}, {"key": keys[1][0]}, {"key": keys[0][0], "route": "priced"},
                    {"key": keys[1][0], "model": "fake-model"}, {"key": keys[0][0], "route": "failing"}):  # fmt: skip
        total = usage(**filters)["total"]
        expected = trace_sums(**filters)
        assert {k: total[k] for k in ("requests", "input_tokens", "output_tokens")} == {
            k: expected[k] for k in ("requests", "input_tokens", "output_tokens")
        }, filters
        assert total["cost_usd"] == pytest.approx(expected["cost_usd"], rel=1e-9, abs=1e-12), filters
        assert total["total_tokens"] == total["input_tokens"] + total["output_tokens"]
        for group_by in ("day", "key", "model", "route"):
            groups = usage(**filters, group_by=group_by)["groups"]
            assert sum(g["requests"] for g in groups) == total["requests"], (filters, group_by)
            assert sum(g["cost_usd"] for g in groups) == pytest.approx(total["cost_usd"], rel=1e-9, abs=1e-12)
    by_route = {g["route"]: g for g in usage(key=keys[0][0], group_by="route")["groups"]}
    assert by_route["chat"]["cost_usd"] == 0 and by_route["priced"]["cost_usd"] > 0
    assert by_route["failing"]["input_tokens"] == 0  # a failed call used nothing
    both = usage(group_by="key")["groups"]
    assert {g["key"] for g in both} >= {keys[0][0], keys[1][0]}
