"""A gateway key's requests and tokens per minute and its budget (issue 13, items 4 and 5), in one gateway: counted
in the process (no Redis) and in Redis (one Lua script per check). Multi-replica exactness is in
tests/e2e/test_key_limits_replicas.py.

Over a limit: 429 in OpenAI's shape with Retry-After (the openai SDK raises RateLimitError); every /v1 answer of a
limited key carries OpenAI's x-ratelimit-* headers; a call reserves its max_tokens (or limits.reserve_tokens) and
is corrected to its real usage (the fake upstream counts words) when it ends; a spent budget is a 429
insufficient_quota naming the budget and when it resets.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.limits.budget import period_bounds
from tests.conftest import REDIS_URL, require_service
from tests.llm.conftest import FakeUpstream, Gateway, closed_port_url, running_gateway, target, wait_until
from tests.llm.sdk import SDK

ADMIN = "gw-limits-admin-" + secrets.token_hex(8)
RESERVE = 50  # limits.reserve_tokens here
HI = {"messages": [{"role": "user", "content": "hi"}]}  # 1 input word; "Echo: hi" is 2 output words
# $1000 per million tokens: a token costs $0.001, so a "hi" call (3 tokens) costs $0.003.
PRICED = {"input_price_per_mtok": 1000, "output_price_per_mtok": 1000}
# Routes with limits of their own (rpm 2; tpm 60), named afresh per run: Redis keeps a minute's counts.
NARROW = "narrow-" + secrets.token_hex(4)
METERED = "metered-" + secrets.token_hex(4)


@pytest.fixture(scope="module", params=["local", "redis"])
def limited(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    more: dict[str, Any] = {"limits": {"reserve_tokens": RESERVE}}
    if request.param == "redis":
        require_service("Redis", "127.0.0.1", 6379)
        more["redis_url"] = REDIS_URL
    llm = {
        "routes": [
            {"name": "chat", "targets": [target(fake_upstream)]},
            {"name": "priced", "targets": [target(fake_upstream, **PRICED)]},
            {"name": "dead", "retries": 0, "connect_timeout_s": 1, "targets": [target(closed_port_url())]},
            {"name": "claude", "provider": "anthropic", "targets": [target(fake_upstream, "claude-fake")]},
            {"name": NARROW, "rpm": 2, "targets": [target(fake_upstream)]},
            {"name": METERED, "tpm": 60, "targets": [target(fake_upstream)]},
        ]
    }
    auth = {"keys": [hashlib.sha256(ADMIN.encode()).hexdigest()]}
    with running_gateway(tmp_path_factory.mktemp("limits"), llm, auth, **more) as gw:
        yield gw


def make_key(gw: Gateway, **limits: Any) -> tuple[str, str]:
    """(key id, key) of a new key holding the llm scope, with these limits."""
    body = {"name": f"k-{secrets.token_hex(4)}", "scopes": ["llm"], **limits}
    answer = httpx.post(f"{gw.base_url}/api/keys", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["key"]


def call(gw: Gateway, secret: str, model: str = "chat", **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gw.v1}/chat/completions", json={"model": model, **HI, **body}, headers={"Authorization": f"Bearer {secret}"}
    )


def counted_tokens(gw: Gateway, key_id: str) -> int:
    """The tokens the key's (or ``route:<name>``'s) window holds now (Redis's count, or this process's)."""
    limiter = gw.app.state.llm_proxy.limiter
    if limiter.redis is None:
        return int(limiter.local._windows[key_id][1].total)
    with redis.Redis.from_url(REDIS_URL) as client:
        return int(client.get(f"gw:rl:{{{key_id}}}:tok:n") or 0)


def counted_requests(gw: Gateway, key_id: str) -> int:
    """The requests the key's window holds now."""
    limiter = gw.app.state.llm_proxy.limiter
    if limiter.redis is None:
        return int(limiter.local._windows[key_id][0].total)
    with redis.Redis.from_url(REDIS_URL) as client:
        return int(client.zcard(f"gw:rl:{{{key_id}}}:req"))


def test_requests_per_minute(limited: Gateway) -> None:
    key_id, secret = make_key(limited, rpm=3)
    for remaining in (2, 1, 0):
        answer = call(limited, secret)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ratelimit-limit-requests"] == "3"
        assert answer.headers["x-ratelimit-remaining-requests"] == str(remaining)
        assert answer.headers["x-ratelimit-reset-requests"].endswith("s")
        assert "x-ratelimit-limit-tokens" not in answer.headers  # no tpm on this key
    refused = call(limited, secret)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert "Limit 3, Used 3, Requested 1" in error["message"] and key_id in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as raised:
        SDK("sync", limited.v1, secret).chat(model="chat", **HI)
    assert raised.value.status_code == 429 and raised.value.code == "rate_limit_exceeded"


def test_tokens_are_reserved_then_corrected_to_the_real_usage(limited: Gateway) -> None:
    key_id, secret = make_key(limited, tpm=100)
    first = call(limited, secret, max_tokens=40)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-remaining-tokens"] == "60"  # 40 reserved
    wait_until(lambda: counted_tokens(limited, key_id) == 3, what="the first call corrected to its 3 tokens")
    second = call(limited, secret)  # no max_tokens: limits.reserve_tokens
    assert second.headers["x-ratelimit-remaining-tokens"] == str(100 - 3 - RESERVE)
    wait_until(lambda: counted_tokens(limited, key_id) == 6, what="the second call corrected")
    streamed = call(limited, secret, max_tokens=10, stream=True, stream_options={"include_usage": True})
    assert streamed.status_code == 200 and streamed.headers["x-ratelimit-remaining-tokens"] == str(100 - 6 - 10)
    wait_until(lambda: counted_tokens(limited, key_id) == 9, what="the stream corrected to its reported usage")
    too_large = call(limited, secret, max_tokens=101)
    assert too_large.status_code == 429
    error = too_large.json()["error"]
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded") and "max_tokens" in error["message"]
    tight = make_key(limited, tpm=10)[1]
    assert call(limited, tight, max_tokens=8).status_code == 200
    refused = call(limited, tight, max_tokens=8)  # 8 reserved (or 3 once corrected) + 8 > 10
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
    assert int(refused.headers["retry-after"]) >= 1


def test_a_failed_call_gives_its_tokens_back_and_carries_the_headers(limited: Gateway) -> None:
    key_id, secret = make_key(limited, rpm=100, tpm=100)
    failed = call(limited, secret, model="dead", max_tokens=30)
    assert failed.status_code in (502, 503), failed.text
    assert failed.headers["x-ratelimit-remaining-tokens"] == "70"
    assert failed.headers["x-ratelimit-remaining-requests"] == "99"
    wait_until(lambda: counted_tokens(limited, key_id) == 0, what="the reservation given back")


def test_a_budget_stops_the_key_at_the_call_that_crosses_it(limited: Gateway) -> None:
    key_id, secret = make_key(limited, budget_usd=0.01, budget_period="day")
    statuses = []
    for _ in range(6):
        statuses.append(call(limited, secret, model="priced").status_code)
        if statuses[-1] != 200:
            break
    # $0.003 a call: 0.003, 0.006, 0.009 under the budget, 0.012 crosses it (and is answered), then refused.
    assert statuses == [200, 200, 200, 200, 429], statuses
    refused = call(limited, secret, model="priced")
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "$0.01 per day" in error["message"] and "resets at" in error["message"]
    assert int(refused.headers["retry-after"]) <= 86400
    assert call(limited, secret, model="chat").status_code == 429  # every route: the key's budget


def test_a_key_without_limits_gets_no_headers(limited: Gateway) -> None:
    _, secret = make_key(limited)
    answer = call(limited, secret)
    assert answer.status_code == 200 and not [h for h in answer.headers if h.startswith("x-ratelimit")]


def _failures(gw: Gateway, outcome: str) -> float:
    """gateway_rate_limit_redis_failures_total{outcome=...} on the gateway's /metrics (0 before the first)."""
    prefix = f'gateway_rate_limit_redis_failures_total{{outcome="{outcome}"}} '
    lines = httpx.get(f"{gw.base_url}/metrics").text.splitlines()
    return next((float(line.removeprefix(prefix)) for line in lines if line.startswith(prefix)), 0.0)


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_unreachable_fails_open_or_closed(
    mode: str, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    llm = {"routes": [{"name": "chat", "targets": [target(fake_upstream)]}]}
    auth = {"keys": [hashlib.sha256(ADMIN.encode()).hexdigest()]}
    more = {"redis_url": "redis://127.0.0.1:1/0", "limits": {"redis_failure": mode}}
    outcome = "allowed" if mode == "open" else "refused"
    with running_gateway(tmp_path_factory.mktemp("redis-down"), llm, auth, **more) as gw:
        _, secret = make_key(gw, rpm=1)
        before = _failures(gw, outcome)  # the counter is this process's: other tests' limiters count in it too
        answers = [call(gw, secret) for _ in range(3)]
        after = _failures(gw, outcome)
    assert after - before == 3
    if mode == "open":
        assert [a.status_code for a in answers] == [200, 200, 200]  # unlimited while Redis is away
    else:
        assert [a.status_code for a in answers] == [503, 503, 503]
        assert "Redis is unreachable" in answers[0].json()["error"]["message"]
    logged = [r for r in caplog.records if r.name == "gateway.limits" and "unreachable" in r.getMessage()]
    assert len(logged) == 1  # once per outage


def test_without_redis_a_replica_sees_the_others_spend_from_the_store(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """No Redis: each replica counts its own calls, and reads the others' from the store's trace summaries (calls
    started a few seconds ago), so a budget spent through A is refused by B soon after."""
    llm = {"routes": [{"name": "priced", "targets": [target(fake_upstream, **PRICED)]}]}
    auth = {"keys": [hashlib.sha256(ADMIN.encode()).hexdigest()], "refresh_interval_s": 0.2}
    more = {"telemetry.summary_flush_interval_s": 0.1}
    with (
        running_gateway(tmp_path, llm, auth, **more) as a,  # type: ignore[arg-type]
        running_gateway(tmp_path, llm, auth, **more) as b,  # type: ignore[arg-type]
    ):
        key_id, secret = make_key(a, budget_usd=0.005)
        assert [call(a, secret, model="priced").status_code for _ in range(3)] == [200, 200, 429]  # $0.006 > $0.005
        start, _ = period_bounds("month")
        spend = b.app.state.llm_proxy.limiter.local.spend
        wait_until(lambda: spend.spent(key_id, start) >= 0.006 - 1e-9, timeout_s=20, what="B reading A's spend")
        refused = call(b, secret, model="priced")  # B's first call with this key
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"


def test_the_responses_api_reserves_its_max_output_tokens(limited: Gateway) -> None:
    """A Responses API call reserves its max_output_tokens (not limits.reserve_tokens, 50 here, over this tpm)."""
    _, secret = make_key(limited, tpm=40)
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": "chat", "input": "hi", "max_output_tokens": 10}
    answer = httpx.post(f"{limited.v1}/responses", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert "x-ratelimit-limit-tokens" in answer.headers
    too_large = httpx.post(f"{limited.v1}/responses", json={**body, "max_output_tokens": 41}, headers=headers)
    assert too_large.status_code == 429 and "Request too large" in too_large.json()["error"]["message"]


def test_anthropics_api_is_limited_in_its_own_shape(limited: Gateway) -> None:
    _, secret = make_key(limited, rpm=1)
    body = {"model": "claude", "max_tokens": 8, **HI}
    first = httpx.post(f"{limited.v1}/messages", json=body, headers={"x-api-key": secret})
    assert first.status_code == 200, first.text
    second = httpx.post(f"{limited.v1}/messages", json=body, headers={"x-api-key": secret})
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
    error = second.json()
    assert error["type"] == "error" and error["error"]["type"] == "rate_limit_error", error


def test_a_routes_own_limits_hold_for_every_caller_and_a_refused_call_counts_nowhere(limited: Gateway) -> None:
    """``rpm`` on a route: every caller together. The key is checked first: a call its own limits refuse takes
    nothing of the route's; a call the route refuses gives the key's reservation back."""
    frugal_id, frugal = make_key(limited, rpm=1)
    plain = make_key(limited)[1]  # no limits of its own
    first = call(limited, frugal, model=NARROW)
    assert first.status_code == 200, first.text
    # Both limits have 1 request left: the key's is shown (the first checked, not looser).
    assert (first.headers["x-ratelimit-limit-requests"], first.headers["x-ratelimit-remaining-requests"]) == ("1", "0")
    by_key = call(limited, frugal, model=NARROW)
    assert by_key.status_code == 429 and frugal_id in by_key.json()["error"]["message"]
    second = call(limited, plain, model=NARROW)  # the key's refusal took nothing of the route's 2
    assert second.status_code == 200, second.text
    assert (second.headers["x-ratelimit-limit-requests"], second.headers["x-ratelimit-remaining-requests"]) == (
        "2",
        "0",
    )
    by_route = call(limited, plain, model=NARROW)
    assert by_route.status_code == 429
    error = by_route.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert f"the route {NARROW!r}" in error["message"] and "Limit 2, Used 2, Requested 1" in error["message"]
    assert 1 <= int(by_route.headers["retry-after"]) <= 60
    roomy_id, roomy = make_key(limited, rpm=10)
    refused = call(limited, roomy, model=NARROW)
    assert refused.status_code == 429 and f"the route {NARROW!r}" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"  # the route's, the tighter
    assert counted_requests(limited, roomy_id) == 0  # given back: the key may still make its 10 calls elsewhere
    assert call(limited, roomy).headers["x-ratelimit-remaining-requests"] == "9"


def test_a_routes_tokens_per_minute_are_reserved_and_corrected(limited: Gateway) -> None:
    plain = make_key(limited)[1]
    first = call(limited, plain, model=METERED, max_tokens=40)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-tokens"] == "60" and first.headers["x-ratelimit-remaining-tokens"] == "20"
    subject = f"route:{METERED}"
    wait_until(lambda: counted_tokens(limited, subject) == 3, what="the route's reservation corrected to 3 tokens")
    second = call(limited, plain, model=METERED, max_tokens=40)
    assert second.status_code == 200 and second.headers["x-ratelimit-remaining-tokens"] == "17"
    wait_until(lambda: counted_tokens(limited, subject) == 6, what="the second reservation corrected")
    refused = call(limited, plain, model=METERED, max_tokens=55)  # 3 + 3 + 55 > 60
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["type"] == "tokens" and f"the route {METERED!r}" in error["message"]
    too_large = call(limited, plain, model=METERED, max_tokens=61)
    assert too_large.status_code == 429 and "Request too large for the route" in too_large.json()["error"]["message"]


def test_a_routes_limits_hold_without_any_key(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    llm = {"routes": [{"name": "open", "rpm": 2, "targets": [target(fake_upstream)]}]}
    with running_gateway(tmp_path, llm) as gw:  # auth off: no key at all
        body = {"model": "open", **HI}
        statuses = [httpx.post(f"{gw.v1}/chat/completions", json=body).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        refused = httpx.post(f"{gw.v1}/chat/completions", json=body)
        assert refused.status_code == 429 and "the route 'open'" in refused.json()["error"]["message"]
        assert refused.headers["x-ratelimit-limit-requests"] == "2" and int(refused.headers["retry-after"]) >= 1
