"""``gateway judges worker`` processes on a real Redis and store, the fake upstream as the judge:

- online jobs judged once each; a judge call's own trace never judged; a trace stored after its job was
  queued is judged once it is there (no attempt used);
- a poison job (its evaluation item does not exist) reaches the dead letters after max_deliveries attempts,
  with an error assessment;
- 429 with Retry-After is retried after at least that long, without using attempts (max_deliveries 1);
- a 401 from the judge route pauses the judge with its jobs intact; resuming completes them;
- ``kill -9`` of one of two workers in the middle of 300 jobs: every job ends with exactly one assessment,
  the dead worker's jobs reclaimed by the other;
- without redis_url the workers share the store's queue: ``kill -9`` of one of two on one SQLite store, every
  job judged exactly once;
- code judges (``judges.code``) run in the workers: each job written once (CODE), a job enqueued twice found
  existing, a function that raises an error assessment (``code_error``), not a dead letter.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gateway.store.assessments import AssessmentStore
from gateway.store.registry import RegistryStore
from judges.queue.jobs import EVALUATION, JudgeJob
from judges.queue.local import LocalJobQueue
from judges.queue.redis_streams import RedisStreamsQueue
from tests.conftest import REDIS_URL
from tests.judges.worker_procs import (
    FAST_QUEUE,
    ROOT,
    TcpProxy,
    count_assessments,
    online_job,
    redis_prefix,
    run,
    store_calls,
    workers,
    write_config,
)
from tests.llm.conftest import FakeUpstream, running_gateway, target, wait_until
from tests.llm.conftest import fake_upstream as fake_upstream  # noqa: F401 (a fixture, used by name)
from tests.llm.conftest import upstream as upstream  # noqa: F401 (a fixture, used by name)

redis_prefix = redis_prefix  # a fixture, used by name


def _store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


def _assessments(store_uri: str) -> list[dict[str, object]]:
    store = RegistryStore.open(store_uri)
    try:
        import sqlalchemy as sa

        from gateway.store.schema import assessments

        with store.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.select(assessments))]
    finally:
        store.close()


def test_online_jobs_judged_once_judge_calls_skipped_late_traces_waited_for(
    tmp_path: Path, upstream: FakeUpstream, redis_prefix: str
) -> None:
    store_uri = _store_uri(tmp_path)
    traces = store_calls(store_uri, 5)
    (judge_call,) = store_calls(store_uri, 1, attributes={"gateway.judge.name": "safety"})
    late = "f" * 32  # stored only after its job is queued (the trace sink writes in batches)
    config = write_config(tmp_path, upstream, redis_prefix, "fake-model")
    with workers(config) as (worker,):
        run(lambda q: q.enqueue([online_job(t) for t in [*traces, judge_call, late]]), redis_prefix)
        wait_until(lambda: "not stored yet" in worker.log(), timeout_s=20, what="the late trace's retry")
        store_calls_with_id(store_uri, late)
        wait_until(lambda: count_assessments(store_uri) == 6, timeout_s=20, what="6 assessments")
        wait_until(lambda: _depth(redis_prefix) == 0, timeout_s=10, what="an empty queue")
        assert worker.stop() == 0, worker.log()
    rows = _assessments(store_uri)
    assert sorted(str(r["trace_id"]) for r in rows) == sorted([*traces, late])
    assert all(r["error_code"] is None and r["value"] for r in rows)
    outcomes = worker.outcomes()
    assert outcomes["written"] == 6 and outcomes["skipped"] == 1, outcomes
    assert outcomes["retried_not_ready"] >= 1 and outcomes.get("dead_letters", 0) == 0, outcomes


def store_calls_with_id(store_uri: str, trace_id: str) -> None:
    """One stored call under ``trace_id`` (store_calls draws ids: rename its row)."""
    (drawn,) = store_calls(store_uri, 1)
    store = RegistryStore.open(store_uri)
    try:
        import sqlalchemy as sa

        from gateway.store.schema import trace_summaries

        with store.engine.begin() as conn:
            conn.execute(
                sa.update(trace_summaries)
                .where(trace_summaries.c.trace_id == drawn)
                .values(trace_id=trace_id, span_id=trace_id[:16])
            )
    finally:
        store.close()


def _depth(prefix: str) -> int:
    async def depth(queue: RedisStreamsQueue) -> int:
        return sum(s.depth for s in await queue.stats())

    return run(depth, prefix)


def test_poison_job_reaches_the_dead_letters_with_an_error_assessment(
    tmp_path: Path, upstream: FakeUpstream, redis_prefix: str
) -> None:
    store_uri = _store_uri(tmp_path)
    store_calls(store_uri, 1)  # the store exists before the worker starts
    config = write_config(tmp_path, upstream, redis_prefix, "fake-model", max_deliveries=3)
    poison = JudgeJob(kind=EVALUATION, judge="safety", enqueued_at=time.time(), evaluation_id="ev-gone", item_index=7)
    with workers(config) as (worker,):
        run(lambda q: q.enqueue([poison]), redis_prefix)
        letters = wait_until(lambda: run(lambda q: q.dead_letters("safety"), redis_prefix), timeout_s=20,
                             what="the dead letter")  # fmt: skip
        assert worker.stop() == 0
    (letter,) = letters
    assert letter["evaluation_id"] == "ev-gone" and letter["item_index"] == "7"
    assert letter["attempts"] == "3" and "LookupError" in letter["reason"], letter
    store = RegistryStore.open(store_uri)
    try:
        (assessment,) = AssessmentStore(store.engine).for_evaluation("ev-gone")
    finally:
        store.close()
    assert assessment.error_code == "dead_letter" and assessment.item_index == 7
    assert "3 failed attempt(s)" in (assessment.error_message or "")
    assert worker.outcomes()["dead_letters"] == 1
    assert _depth(redis_prefix) == 0


def test_rate_limited_judge_retried_after_retry_after_without_using_attempts(
    tmp_path: Path, upstream: FakeUpstream, redis_prefix: str
) -> None:
    store_uri = _store_uri(tmp_path)
    (trace,) = store_calls(store_uri, 1)
    model = "fake-model@fail_first=2,status=429,retry_after=1"
    # max_deliveries 1: a retry that used an attempt would send the job to the dead letters at once.
    config = write_config(tmp_path, upstream, redis_prefix, model, max_deliveries=1)
    with workers(config) as (worker,):
        run(lambda q: q.enqueue([online_job(trace)]), redis_prefix)
        wait_until(lambda: count_assessments(store_uri) == 1, timeout_s=20, what="the assessment")
        assert worker.stop() == 0
    (row,) = _assessments(store_uri)
    assert row["error_code"] is None and row["score"] == 1.0
    calls = [r.at for r in upstream.recorder.requests if r.path.startswith("/v1/chat")]
    assert len(calls) == 3
    assert all(later - earlier >= 0.95 for earlier, later in zip(calls, calls[1:], strict=False)), calls
    outcomes = worker.outcomes()
    assert outcomes["retried_transient"] == 2 and outcomes.get("dead_letters", 0) == 0, outcomes


def test_unauthorized_judge_route_pauses_the_judge_and_resume_completes_its_jobs(
    tmp_path: Path, upstream: FakeUpstream, redis_prefix: str
) -> None:
    store_uri = _store_uri(tmp_path)
    traces = store_calls(store_uri, 3)
    config = write_config(tmp_path, upstream, redis_prefix, "fake-model@fail_first=1,status=401")
    with workers(config, concurrency=1) as (worker,):
        run(lambda q: q.enqueue([online_job(t) for t in traces]), redis_prefix)
        paused = wait_until(lambda: run(lambda q: q.paused(), redis_prefix), timeout_s=20, what="the pause")
        assert "401" in paused["safety"], paused
        (stats,) = json.loads(_gateway("judges", "queue", "--json", "--config", str(config)).stdout)["judges"]
        assert stats["paused"] == paused["safety"] and stats["depth"] == 3  # every job kept
        assert count_assessments(store_uri) == 0
        resumed = _gateway("judges", "resume", "safety", "--config", str(config))
        assert "resumed" in resumed.stdout
        wait_until(lambda: count_assessments(store_uri) == 3, timeout_s=20, what="3 assessments after resume")
        assert worker.stop() == 0
    assert all(r["error_code"] is None for r in _assessments(store_uri))
    assert "paused" in worker.log()


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_kill_9_one_of_two_workers_every_job_judged_exactly_once(
    tmp_path: Path, upstream: FakeUpstream, redis_prefix: str
) -> None:
    store_uri = _store_uri(tmp_path)
    traces = store_calls(store_uri, 300)
    model = "fake-model@delay=0.02"
    config = write_config(tmp_path, upstream, redis_prefix, model, min_idle_s=1.0, reclaim_interval_s=0.2)
    with workers(config, 2, concurrency=8) as (victim, survivor):
        run(lambda q: q.enqueue([online_job(t) for t in traces]), redis_prefix)
        wait_until(lambda: count_assessments(store_uri) >= 60, timeout_s=30, what="60 assessments")
        reclaims_before = survivor.log().count("reclaimed")
        victim.kill()  # SIGKILL: its jobs in hand stay pending, for the survivor to reclaim
        killed_at = count_assessments(store_uri)
        # Reclaimed within min_idle_s (1) + reclaim_interval_s (0.2), with a margin for a busy machine.
        wait_until(lambda: survivor.log().count("reclaimed") > reclaims_before, timeout_s=1.2 + 3.0,
                   what="the survivor to reclaim the victim's jobs")  # fmt: skip
        wait_until(lambda: count_assessments(store_uri) == 300, timeout_s=60, what="300 assessments")
        wait_until(lambda: _depth(redis_prefix) == 0, timeout_s=10, what="an empty queue")
        assert survivor.stop() == 0, survivor.log()
    rows = _assessments(store_uri)
    assert len(rows) == 300 and sorted(str(r["trace_id"]) for r in rows) == sorted(traces)
    assert all(r["error_code"] is None for r in rows)
    outcomes = survivor.outcomes()
    judge_calls = upstream.recorder.calls_by_model.get(model, 0)
    print(f"killed at {killed_at} assessments; survivor: {outcomes}; judge calls {judge_calls} for 300 jobs")
    assert killed_at < 300, "the victim was killed after the run ended: nothing was shown"
    # Each job's row was written once; the victim's jobs in hand were judged again by the survivor, or
    # found written (the victim died after the commit, before the ack); judge calls beyond 300 are those.
    assert judge_calls >= 300
    # Every call beyond one per job was made by a run that the survivor counted as a possible duplicate
    # (a redelivered job it judged again) or as a sure one (another run wrote first).
    duplicates = outcomes.get("duplicate_calls_redelivered", 0) + outcomes.get("duplicate_calls_concurrent", 0)
    assert judge_calls - 300 <= duplicates, (judge_calls, outcomes)
    assert outcomes.get("written", 0) + outcomes.get("existing", 0) + outcomes.get("duplicate", 0) < 300


def test_redis_cut_off_mid_run_no_job_lost_or_doubled(
    tmp_path: Path, upstream: FakeUpstream, redis_prefix: str
) -> None:
    """Redis unreachable for 2 s in the middle of 120 jobs (every connection dropped, as a restart does): the
    worker keeps going once it is back; replies lost with the connections (entries delivered but never
    received, acks whose answer was lost) are reclaimed: every job ends with exactly one assessment."""
    store_uri = _store_uri(tmp_path)
    traces = store_calls(store_uri, 120)
    proxy = TcpProxy()
    try:
        config = write_config(tmp_path, upstream, redis_prefix, "fake-model@delay=0.02", redis_url=proxy.url)
        with workers(config, concurrency=4) as (worker,):
            run(lambda q: q.enqueue([online_job(t) for t in traces]), redis_prefix)
            wait_until(lambda: count_assessments(store_uri) >= 20, timeout_s=30, what="20 assessments")
            proxy.cut()
            wait_until(lambda: "unavailable" in worker.log().lower(), timeout_s=20, what="the worker to see it")
            cut_at = count_assessments(store_uri)
            time.sleep(2)  # the outage's length (a scenario, not a measurement)
            proxy.restore()
            wait_until(lambda: count_assessments(store_uri) == 120, timeout_s=60, what="120 assessments")
            wait_until(lambda: _depth(redis_prefix) == 0, timeout_s=20, what="an empty queue")
            assert worker.stop() == 0, worker.log()
    finally:
        proxy.close()
    rows = _assessments(store_uri)
    assert len(rows) == 120 and sorted(str(r["trace_id"]) for r in rows) == sorted(traces)
    assert cut_at < 120, "the run ended before Redis was cut"


def test_without_redis_workers_share_the_stores_queue_and_survive_kill_9(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    store_uri = _store_uri(tmp_path)
    traces = store_calls(store_uri, 120)
    model = "fake-model@delay=0.02"
    config = write_config(tmp_path, upstream, "-", model, redis_url=None, min_idle_s=1.0, reclaim_interval_s=0.2)

    async def enqueue() -> None:
        queue = LocalJobQueue.open(store_uri)
        try:
            await queue.enqueue([online_job(t) for t in traces])
        finally:
            await queue.close()

    async def depth() -> int:
        queue = LocalJobQueue.open(store_uri)
        try:
            return sum(s.depth for s in await queue.stats())
        finally:
            await queue.close()

    with workers(config, 2, concurrency=8) as (victim, survivor):
        assert "queue in store" in victim.log()
        asyncio.run(enqueue())
        wait_until(lambda: count_assessments(store_uri) >= 20, timeout_s=30, what="20 assessments")
        victim.kill()
        killed_at = count_assessments(store_uri)
        wait_until(lambda: count_assessments(store_uri) == 120, timeout_s=60, what="120 assessments")
        wait_until(lambda: asyncio.run(depth()) == 0, timeout_s=10, what="an empty queue")
        assert survivor.stop() == 0, survivor.log()
    rows = _assessments(store_uri)
    assert len(rows) == 120 and sorted(str(r["trace_id"]) for r in rows) == sorted(traces)
    assert all(r["error_code"] is None for r in rows)
    assert killed_at < 120, "the victim was killed after the run ended: nothing was shown"


@pytest.mark.parametrize("value", ["0", "x"])
def test_worker_concurrency_must_be_positive(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "judges", "worker", "--concurrency", value],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert done.returncode == 2 and "--concurrency" in done.stderr


@pytest.mark.parametrize("mode", ["embedded", "external"])
def test_a_gateway_runs_a_worker_in_process_unless_workers_are_external(
    tmp_path: Path, upstream: FakeUpstream, redis_prefix: str, mode: str
) -> None:
    store_uri = _store_uri(tmp_path)
    traces = store_calls(store_uri, 3)
    llm = {"routes": [{"name": "judge", "retries": 0, "targets": [target(upstream)]}]}
    judges = {"route": "judge", "workers": mode, "queue": {"key_prefix": redis_prefix, **FAST_QUEUE}}
    with running_gateway(tmp_path, llm, redis_url=REDIS_URL, judges=judges) as gateway:
        run(lambda q: q.enqueue([online_job(t) for t in traces]), redis_prefix)
        if mode == "embedded":
            assert gateway.app.state.judge_queue is not None
            wait_until(lambda: count_assessments(store_uri) == 3, timeout_s=20, what="3 assessments")
            wait_until(lambda: _depth(redis_prefix) == 0, timeout_s=10, what="an empty queue")
        else:  # the queue is there (for the API and online judging), but no worker takes from it
            assert gateway.app.state.judge_queue is not None
            assert _depth(redis_prefix) == 3 and count_assessments(store_uri) == 0


def test_code_judges_run_in_the_workers_each_job_written_once(
    tmp_path: Path, upstream: FakeUpstream, redis_prefix: str
) -> None:
    store_uri = _store_uri(tmp_path)
    traces = store_calls(store_uri, 200)
    config = write_config(tmp_path, upstream, redis_prefix, "fake-model")
    data = yaml.safe_load(config.read_text())
    data["judges"]["code"] = [
        {"name": "says_four", "function": "tests.judges.code_judges:says_four"},
        {"name": "broken", "function": "tests.judges.code_judges:broken"},
    ]
    config.write_text(yaml.safe_dump(data))
    jobs = [online_job(t, "says_four") for t in traces] + [online_job(t, "broken") for t in traces[:5]]
    with workers(config, 2, concurrency=16) as (first, second):
        run(lambda q: q.enqueue(jobs), redis_prefix)
        run(lambda q: q.enqueue(jobs[:50]), redis_prefix)  # the same jobs again: judged once
        wait_until(lambda: _depth(redis_prefix) == 0, timeout_s=30, what="an empty queue")
        assert first.stop() == 0 and second.stop() == 0, first.log() + second.log()
    rows = _assessments(store_uri)
    assert len(rows) == 205 and len({str(r["id"]) for r in rows}) == 205
    assert {r["source_type"] for r in rows} == {"CODE"}
    written = [r for r in rows if r["name"] == "says_four"]
    assert sorted(str(r["trace_id"]) for r in written) == sorted(traces)
    assert all(r["error_code"] is None and r["value"] in ("true", "false") for r in written)
    broken = [r for r in rows if r["name"] == "broken"]
    assert all(r["error_code"] == "code_error" and "KeyError" in str(r["error_message"]) for r in broken)
    kinds = ("written", "existing", "duplicate")
    outcomes = {k: first.outcomes().get(k, 0) + second.outcomes().get(k, 0) for k in kinds}
    assert outcomes["written"] == 205 and outcomes["existing"] + outcomes["duplicate"] == 50, outcomes
    assert first.outcomes().get("dead_letters", 0) == second.outcomes().get("dead_letters", 0) == 0
