"""Evaluation runs through the judge queue, run by ``gateway judges worker`` processes (``judges.workers:
external``: the gateway only feeds and settles its runs), the fake upstream as the judge, a real store and,
for the Redis backend, a real Redis under the test's own key prefix:

- a backfill over a trace filter completes on both backends, spread over two workers, each item judged once
  per judge, the guidelines judge with the run's own guidelines;
- a judge edited after the run started: the workers judge with the version the run pinned;
- a gateway stopped while it generates a run's outputs: the next one resumes the run and enqueues only the
  items whose jobs were never enqueued (every job enqueued once in all), and the run completes;
- a dry run over 10,000 stored calls reports the call count and the cost estimate, and enqueues nothing;
- a cancel: the queued jobs are acked by the workers without a judge call, every call made has its verdict;
- ``kill -9`` of one of two workers in the middle of a 500-item run on Redis: every item ends with exactly
  one assessment per judge (rows counted in the store), every item done, the run completed; the dead
  worker's jobs are reclaimed by the survivor, which counts the judge calls it may have repeated.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.store.assessments import AssessmentStore
from gateway.store.engine import open_engine
from gateway.store.evaluations import EvaluationStore
from judges.evaluation_feed import ENQUEUED
from judges.queue.local import LocalJobQueue
from judges.queue.redis_streams import RedisStreamsQueue
from tests.conftest import REDIS_URL
from tests.judges.evaluation_servers import FINISHED, EvalGateway
from tests.judges.worker_procs import redis_prefix, run, store_calls, workers, write_config
from tests.llm.conftest import FakeUpstream, running_gateway, wait_until
from tests.llm.conftest import upstream as upstream  # noqa: F401 (a fixture, used by name)

redis_prefix = redis_prefix  # a fixture, used by name (through request.getfixturevalue)

GUIDELINES = "The answer names the capital city of the country asked about."


@dataclass
class QueueGateway(EvalGateway):
    """EvalGateway's post/view/wait, plus the worker processes' configuration and the queue's depth."""

    config: Path
    prefix: str | None

    def wait(
        self, evaluation_id: str, *, statuses: tuple[str, ...] = FINISHED, timeout_s: float = 120
    ) -> dict[str, Any]:
        """EvalGateway.wait with room for a run spread over worker processes (120 s by default)."""
        return super().wait(evaluation_id, statuses=statuses, timeout_s=timeout_s)

    def depth(self) -> int:
        """Jobs not yet acked in the gateway's judge queue, read through a queue of the test's own."""
        if self.prefix is not None:

            async def redis_depth(queue: RedisStreamsQueue) -> int:
                return sum(s.depth for s in await queue.stats())

            return run(redis_depth, self.prefix)

        async def store_depth() -> int:
            queue = LocalJobQueue.open(self.store_uri)
            try:
                return sum(s.depth for s in await queue.stats())
            finally:
                await queue.close()

        return asyncio.run(store_depth())

    def one_per_item_and_judge(self, evaluation_id: str, items: int, judges: tuple[str, ...]) -> None:
        """Rows counted in the store: exactly one assessment per (item, judge), none in error."""
        rows = self.assessments.for_evaluation(evaluation_id)
        assert Counter((a.item_index, a.name) for a in rows) == {(i, name): 1 for i in range(items) for name in judges}
        assert self.assessments.count(evaluation_id=evaluation_id) == items * len(judges)
        assert [a for a in rows if a.error_code is not None] == []


@contextmanager
def queue_gateway(
    tmp_path: Path, up: FakeUpstream, model: str, prefix: str | None, *, concurrency: int = 16, **queue: Any
) -> Iterator[QueueGateway]:
    """A gateway with ``judges.workers: external`` on the configuration the worker processes read (the store
    in ``tmp_path``, the judge route to the fake upstream's ``model``, Redis under ``prefix`` or, None, the
    store's queue); ``concurrency``: the gateway's ``judges.concurrency`` (its target calls at once)."""
    config = write_config(tmp_path, up, prefix or "-", model, redis_url=REDIS_URL if prefix else None, **queue)
    data = yaml.safe_load(config.read_text())
    judges = {**data["judges"], "workers": "external", "max_trace_items": 10_000, "concurrency": concurrency}
    more: dict[str, Any] = {"redis_url": REDIS_URL} if prefix else {}
    with running_gateway(tmp_path, data["llm"], judges=judges, **more) as gateway:
        engine = open_engine(data["store_uri"])
        try:
            with httpx.Client(base_url=gateway.base_url, timeout=60) as client:
                yield QueueGateway(gateway.base_url, client, data["store_uri"], AssessmentStore(engine),
                                   EvaluationStore(engine), config, prefix)  # fmt: skip
        finally:
            engine.dispose()


def _backend_prefix(backend: str, request: pytest.FixtureRequest) -> str | None:
    return str(request.getfixturevalue("redis_prefix")) if backend == "redis" else None


@pytest.mark.parametrize("backend", ["store", "redis"])
def test_a_backfill_over_a_trace_filter_is_judged_by_external_workers(
    tmp_path: Path,
    upstream: FakeUpstream,
    backend: str,
    request: pytest.FixtureRequest,  # noqa: F811
) -> None:
    prefix = _backend_prefix(backend, request)
    model = "fake-model@delay=0.02"
    with queue_gateway(tmp_path, upstream, model, prefix) as gw:
        store_calls(gw.store_uri, 60)
        judges = ["safety", {"name": "guidelines", "guidelines": GUIDELINES}]
        answer = gw.post({"judges": judges, "traces": {"route": "chat"}, "name": "backfill"})
        assert (answer["items"], answer["judge_calls"]) == (60, 120)
        time.sleep(0.5)  # no worker yet: the jobs wait on the queue, nothing is judged (a scenario, not a timing)
        assert gw.view(answer["id"], items=False)["progress"]["pending"] == 60 and gw.depth() == 120
        with workers(gw.config, 2, concurrency=4) as pair:
            view = gw.wait(answer["id"])
            wait_until(lambda: gw.depth() == 0, timeout_s=20, what="an empty queue")
            for worker in pair:
                assert worker.stop() == 0, worker.log()
        assert view["status"] == "completed", view
        assert view["progress"] == {"done": 60, "errors": 0, "pending": 0, "total": 60}
        gw.one_per_item_and_judge(answer["id"], 60, ("safety", "guidelines"))
        items = gw.evaluations.items(answer["id"])
        assert {item["status"] for item in items} == {"done"}
    written = [worker.outcomes().get("written", 0) for worker in pair]
    assert sum(written) == 120 and all(written), written  # spread over both workers
    assert upstream.recorder.calls_by_model.get(model, 0) == 120
    # The guidelines judge was given the run's guidelines (resolved from the run, not the catalog by name).
    guideline_calls = [r.body.decode() for r in upstream.recorder.requests if b"judge_guidelines" in r.body]
    assert len(guideline_calls) == 60 and all(GUIDELINES in body for body in guideline_calls)


def test_the_workers_judge_with_the_version_the_run_pinned(tmp_path: Path, upstream: FakeUpstream) -> None:  # noqa: F811
    with queue_gateway(tmp_path, upstream, "fake-model", None) as gw:

        def create_judge(instructions: str) -> int:
            body = {"name": "tone", "instructions": instructions, "route": "judge", "value_kind": {"type": "bool"}}
            answer = gw.client.post("/api/judges", json=body)
            assert answer.status_code == 201, answer.text
            version: int = answer.json()["prompt_version"]
            return version

        first = create_judge("Version one: is the tone polite? {{ outputs }}")
        items = [{"inputs": f"q{i}", "outputs": f"a{i}"} for i in range(5)]
        answer = gw.post({"judges": ["tone"], "items": items})
        second = create_judge("Version two: is the tone friendly? {{ outputs }}")
        assert second == first + 1
        with workers(gw.config, 1, concurrency=2) as (worker,):
            view = gw.wait(answer["id"])
            assert worker.stop() == 0, worker.log()
        assert view["status"] == "completed", view
        rows = gw.assessments.for_evaluation(answer["id"])
        assert sorted(a.item_index for a in rows) == list(range(5))
        assert {(a.judge_prompt_name, a.judge_prompt_version) for a in rows} == {("judges.tone", first)}
    bodies = [r.body.decode() for r in upstream.recorder.requests if b"judge_tone" in r.body]
    assert len(bodies) == 5 and all("Version one" in b and "Version two" not in b for b in bodies)


def test_a_run_resumed_by_another_gateway_enqueues_only_what_was_not_enqueued(
    tmp_path: Path,
    upstream: FakeUpstream,  # noqa: F811
    redis_prefix: str,
) -> None:
    # The target's calls and the judge's: slow enough to stop the first gateway mid-run (its 30 target calls one at
    # a time take 9 s; once, under load, 2 at a time at 0.2 s each had all been made before the gateway stopped).
    model = "fake-model@delay=0.3"
    items = [{"inputs": f"Question {i}?"} for i in range(30)]
    enqueued_before = ENQUEUED.get(())
    with queue_gateway(tmp_path, upstream, model, redis_prefix, concurrency=1) as first:
        answer = first.post({"judges": ["safety"], "items": items, "target": {"route": "judge"}})
        evaluation_id = answer["id"]
        assert answer["target_calls"] == 30
        wait_until(lambda: first.evaluations.item_counts(evaluation_id)["queued"] >= 2, timeout_s=30,
                   what="two items' jobs enqueued")  # fmt: skip
    # Stopped mid-run: some items queued (their jobs on the queue), the others pending; nothing judged (no worker).
    counts = first.evaluations.item_counts(evaluation_id)
    print(f"the first gateway stopped with items {counts}")
    assert counts["queued"] < 30 and counts["pending"] == 30 - counts["queued"], counts
    # An item is marked queued after its jobs went (judges/evaluation_feed.py): a stop between the two leaves
    # a batch enqueued and its items pending, and the resumed run enqueues those again (one verdict each).
    enqueued_by_first = ENQUEUED.get(()) - enqueued_before
    again = enqueued_by_first - counts["queued"]
    assert 0 <= again <= counts["pending"], (enqueued_by_first, counts)
    with queue_gateway(tmp_path, upstream, model, redis_prefix, concurrency=2) as second:
        with workers(second.config, 1, concurrency=8) as (worker,):
            view = second.wait(evaluation_id)
            assert worker.stop() == 0, worker.log()
        assert view["status"] == "completed" and view["progress"]["done"] == 30, view
        second.one_per_item_and_judge(evaluation_id, 30, ("safety",))
        assert all(item["outputs"] == f"Echo: Question {item['item_index']}?"
                   for item in second.evaluations.items(evaluation_id))  # fmt: skip
    # Every job enqueued once, but for those of a batch the stop caught before its items were marked.
    assert ENQUEUED.get(()) - enqueued_before == 30 + again
    # Judged twice: only the jobs enqueued twice, and those the queue gave again while in hand (at least once: a
    # worker too busy to touch its jobs within min_idle_s has them reclaimed; it counts those calls).
    outcomes = worker.outcomes()
    redelivered = outcomes.get("duplicate_calls_redelivered", 0) + outcomes.get("duplicate_calls_concurrent", 0)
    assert outcomes.get("existing", 0) + outcomes.get("duplicate", 0) <= again + redelivered, outcomes


def test_a_dry_run_over_10000_stored_calls_counts_and_estimates_and_enqueues_nothing(
    tmp_path: Path,
    upstream: FakeUpstream,
    redis_prefix: str,  # noqa: F811
) -> None:
    with queue_gateway(tmp_path, upstream, "fake-model", redis_prefix) as gw:
        store_calls(gw.store_uri, 10_000)
        body = {"judges": ["safety", "relevance_to_query"], "traces": {"route": "chat"}, "dry_run": True}
        answer = gw.post(body, status=200)
        assert answer["dry_run"] is True and "id" not in answer
        assert (answer["items"], answer["judge_calls"], answer["target_calls"]) == (10_000, 20_000, 0)
        assert answer["cap"] == {"limit": 10_000, "from": "judges.max_trace_items", "matched_more": False}
        estimate = answer["estimate"]
        assert estimate["by_route"]["judge"]["calls"] == 20_000 and estimate["input_tokens"] > 0
        assert "cost_usd" in estimate
        assert gw.depth() == 0 and gw.client.get("/api/evaluations").json()["evaluations"] == []
    assert upstream.recorder.requests == []


def test_a_cancel_drops_the_queued_jobs_without_a_judge_call(
    tmp_path: Path,
    upstream: FakeUpstream,
    redis_prefix: str,  # noqa: F811
) -> None:
    model = "fake-model@delay=0.3"
    with queue_gateway(tmp_path, upstream, model, redis_prefix) as gw:
        items = [{"inputs": f"q{i}", "outputs": f"a{i}"} for i in range(40)]
        answer = gw.post({"judges": ["safety"], "items": items})
        evaluation_id = answer["id"]
        with workers(gw.config, 1, concurrency=2) as (worker,):
            wait_until(
                lambda: gw.view(evaluation_id, items=False)["progress"]["done"] >= 1, timeout_s=30, what="an item done"
            )
            cancelled = gw.client.delete(f"/api/evaluations/{evaluation_id}")
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
            wait_until(lambda: gw.depth() == 0, timeout_s=30, what="the queued jobs acked")
            calls = lambda: upstream.recorder.calls_by_model.get(model, 0)  # noqa: E731

            # The jobs in work finish and are settled; the others were dropped.
            def settled() -> bool:
                stored = gw.assessments.count(evaluation_id=evaluation_id)
                return bool(stored == calls() == gw.view(evaluation_id, items=False)["progress"]["done"])

            wait_until(settled, timeout_s=30, what="the jobs in work settled")
            assert worker.stop() == 0, worker.log()
        view = gw.view(evaluation_id, items=False)
        assert view["status"] == "cancelled"
        assert 1 <= view["progress"]["done"] < 40 and view["progress"]["pending"] == 40 - view["progress"]["done"]
    outcomes = worker.outcomes()
    assert outcomes["written"] == calls() and outcomes["skipped"] == 40 - calls(), outcomes


def test_kill_9_one_of_two_workers_in_a_500_item_evaluation(
    tmp_path: Path,
    upstream: FakeUpstream,
    redis_prefix: str,  # noqa: F811
) -> None:
    model = "fake-model@delay=0.05"
    judges = ("safety", "relevance_to_query")
    with queue_gateway(tmp_path, upstream, model, redis_prefix, min_idle_s=1.0, reclaim_interval_s=0.2) as gw:
        items = [{"inputs": f"Question {i}: what is the capital of Australia?", "outputs": "Canberra."}
                 for i in range(500)]  # fmt: skip
        answer = gw.post({"judges": list(judges), "items": items, "name": "kill -9"})
        evaluation_id = answer["id"]
        assert answer["judge_calls"] == 1000
        with workers(gw.config, 2, concurrency=8) as (victim, survivor):
            wait_until(lambda: gw.assessments.count(evaluation_id=evaluation_id) >= 200, timeout_s=60,
                       what="200 assessments")  # fmt: skip
            reclaims_before = survivor.log().count("reclaimed")
            victim.kill()  # SIGKILL: its jobs in hand stay pending in the stream, for the survivor to reclaim
            killed_at, killed_time = gw.assessments.count(evaluation_id=evaluation_id), time.monotonic()
            wait_until(lambda: survivor.log().count("reclaimed") > reclaims_before, timeout_s=30,
                       what="the survivor to reclaim the victim's jobs")  # fmt: skip
            reclaimed_after_s = time.monotonic() - killed_time
            view = gw.wait(evaluation_id)
            wait_until(lambda: gw.depth() == 0, timeout_s=20, what="an empty queue")
            assert survivor.stop() == 0, survivor.log()
        assert view["status"] == "completed", view
        assert view["progress"] == {"done": 500, "errors": 0, "pending": 0, "total": 500}
        gw.one_per_item_and_judge(evaluation_id, 500, judges)
        assert {item["status"] for item in gw.evaluations.items(evaluation_id)} == {"done"}
    outcomes = survivor.outcomes()
    judge_calls = upstream.recorder.calls_by_model.get(model, 0)
    print(f"killed at {killed_at} of 1000 assessments; reclaim seen {reclaimed_after_s:.2f} s after the kill "
          f"(min_idle_s 1 + reclaim_interval_s 0.2); survivor: {outcomes}; judge calls {judge_calls}")  # fmt: skip
    assert killed_at < 1000, "the victim was killed after the run ended: nothing was shown"
    assert judge_calls >= 1000
    # Every call beyond one per job was made again by the survivor on a job redelivered from the victim (or
    # found written by another run of it): the survivor counted each as a possible duplicate.
    duplicates = outcomes.get("duplicate_calls_redelivered", 0) + outcomes.get("duplicate_calls_concurrent", 0)
    assert judge_calls - 1000 <= duplicates, (judge_calls, outcomes)
