"""JudgeRunner.judge_once(raise_failures=True), the queue workers' mode: transient upstream failures (5xx,
429 with its Retry-After, timeouts) raise JudgeCallDeferred and configuration failures (the route's
upstream answering 401, an unknown route, no route) raise JudgeMisconfigured, with nothing written; the
default mode (evaluation runs, the synchronous API) still writes an error assessment for each."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.judge_settings import JudgesSettings
from judges.definitions import Judge
from judges.runner import (
    DUPLICATE,
    EXISTING,
    WRITTEN,
    JudgeCallDeferred,
    JudgeMisconfigured,
    JudgeRunner,
    RunResult,
    Target,
)
from tests.judges.conftest import FakeUpstream, JudgeGateway, judging_gateway
from tests.llm.conftest import target

ROUTES = {
    "down": "fake-model@status=503",
    "limited": "fake-model@status=429,retry_after=3",
    "unauthorized": "fake-model@status=401",
    "hanging": "fake-model@delay=30",
    "ok": "fake-model",
    "slow": "fake-model@delay=0.3",
}
BOOL = {"type": "bool"}


@pytest.fixture(scope="module")
def failing_gateway(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JudgeGateway]:
    routes = [{"name": name, "retries": 0, "targets": [target(fake_upstream, model)]} for name, model in ROUTES.items()]
    with judging_gateway(tmp_path_factory.mktemp("failures"), {"routes": routes}, {"route": "ok"}) as gw:
        yield gw


def _judge(gw: JudgeGateway, route: str) -> Judge:
    name = f"fail_{route}_{secrets.token_hex(3)}"
    return gw.create_judge(
        name, "Is {{ outputs }} a good answer to {{ inputs }}?", BOOL, route if route in ROUTES else "ok"
    )


def _once(gw: JudgeGateway, judge: Judge, raise_failures: bool, timeout_s: float = 10.0) -> RunResult:
    target = Target(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8))
    item: dict[str, Any] = {"inputs": "What is 2 + 2?", "outputs": "4"}
    return gw.run(
        lambda runner: runner.judge_once(judge, item, target=target, raise_failures=raise_failures),
        JudgesSettings(call_timeout_s=timeout_s),
    )


@pytest.mark.parametrize(
    ("route", "code", "retry_after_s"),
    [("down", "upstream_error", None), ("limited", "rate_limited", 3.0), ("hanging", "timeout", None)],
)
def test_transient_failures_raise_deferred_and_write_nothing(
    failing_gateway: JudgeGateway, route: str, code: str, retry_after_s: float | None
) -> None:
    judge = _judge(failing_gateway, route)
    with pytest.raises(JudgeCallDeferred) as raised:
        _once(failing_gateway, judge, True, timeout_s=0.5 if route == "hanging" else 10.0)
    assert (raised.value.code, raised.value.retry_after_s) == (code, retry_after_s)
    assert failing_gateway.assessments.count(name=judge.name) == 0


@pytest.mark.parametrize("route", ["unauthorized", "unknown", "none"])
def test_configuration_failures_raise_misconfigured_and_write_nothing(
    failing_gateway: JudgeGateway, route: str
) -> None:
    judge = _judge(failing_gateway, route)
    if route != "unauthorized":
        judge = dataclasses.replace(judge, route=None if route == "none" else "no-such-route")
    with pytest.raises(JudgeMisconfigured) as raised:
        _once(failing_gateway, judge, True)
    assert raised.value.code in ("upstream_error", "unknown_route", "no_route"), raised.value
    assert failing_gateway.assessments.count(name=judge.name) == 0


@pytest.mark.parametrize("route", ["down", "unauthorized", "unknown"])
def test_the_default_mode_still_writes_an_error_assessment(failing_gateway: JudgeGateway, route: str) -> None:
    judge = _judge(failing_gateway, route)
    if route == "unknown":
        judge = dataclasses.replace(judge, route="no-such-route")
    result = _once(failing_gateway, judge, False)
    assert result.status == WRITTEN and result.assessment.error_code is not None
    assert failing_gateway.assessments.count(name=judge.name) == 1


def test_results_say_who_wrote(failing_gateway: JudgeGateway) -> None:
    judge = _judge(failing_gateway, "ok")
    target = Target(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8))
    item: dict[str, Any] = {"inputs": "What is 2 + 2?", "outputs": "4"}

    async def twice(runner: JudgeRunner) -> tuple[RunResult, RunResult]:
        first = await runner.judge_once(judge, item, target=target, raise_failures=True)
        return first, await runner.judge_once(judge, item, target=target, raise_failures=True)

    first, second = failing_gateway.run(twice)
    assert (first.status, first.calls, second.status, second.calls) == (WRITTEN, 1, EXISTING, 0)


def test_two_runs_of_one_job_at_once_one_writes_the_other_is_a_duplicate_call(failing_gateway: JudgeGateway) -> None:
    judge = _judge(failing_gateway, "slow")
    target = Target(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8))
    item: dict[str, Any] = {"inputs": "What is 2 + 2?", "outputs": "4"}

    async def together(runner: JudgeRunner) -> list[RunResult]:
        runs = (runner.judge_once(judge, item, target=target, raise_failures=True) for _ in range(2))
        return list(await asyncio.gather(*runs))

    results = failing_gateway.run(together)
    assert sorted(r.status for r in results) == sorted([WRITTEN, DUPLICATE])
    assert results[0].assessment.id == results[1].assessment.id
    assert failing_gateway.assessments.count(name=judge.name) == 1
