"""The online span processor (judges/online/processor.py) on a real TracerProvider: which finished
spans become judge jobs in the buffer, and what is skipped and counted. Spans here are made through
the SDK's public API with the attributes the LLM proxy sets; tests/judges/test_online_app.py runs the
same processor in a real gateway."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.judge_online_settings import OnlineJudge, OnlineRule
from gateway.telemetry import semconv as sc
from judges.online import metrics
from judges.online.buffer import JobBuffer
from judges.online.processor import JUDGE_ATTRIBUTES, OnlineJudgeProcessor
from judges.online.rules import OnlineRules
from judges.online.sampling import sample_point

ALWAYS = (OnlineJudge("correctness", 1.0),)


class Harness:
    def __init__(self, rules: tuple[OnlineRule, ...], capacity: int = 100, aliases: Mapping[str, int] | None = None):
        self.rules = OnlineRules(rules, (lambda name, alias: (aliases or {}).get(f"{name}@{alias}")))
        self.buffer = JobBuffer(capacity)
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(OnlineJudgeProcessor(self.rules, self.buffer))
        self.tracer = self.provider.get_tracer("test")

    def call(self, kind: SpanKind = SpanKind.SERVER, error: bool = False, **attributes: Any) -> str:
        """One finished LLM call's top span; its trace id."""
        base: dict[str, Any] = {
            sc.GATEWAY_LLM_ROUTE: "chat",
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.HTTP_RESPONSE_STATUS_CODE: 200,
            sc.GEN_AI_INPUT_MESSAGES: "[]",
        }
        span = self.tracer.start_span("chat fake-model", kind=kind)
        span.set_attributes({**base, **attributes})
        if error:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        return format(span.get_span_context().trace_id, "032x")

    def jobs(self) -> list[Any]:
        return self.buffer.take(10_000)


@pytest.fixture
def dropped() -> Iterator[dict[str, float]]:
    """The dropped counter's values before the test (by reason); compare with ``_delta``."""
    yield dict((labels[0], value) for labels, value in metrics.JOBS_DROPPED.samples())


def _delta(before: dict[str, float], reason: str) -> float:
    return metrics.JOBS_DROPPED.get((reason,)) - before.get(reason, 0.0)


def test_a_matching_server_span_becomes_one_job_per_sampled_judge() -> None:
    h = Harness((OnlineRule("chat", (OnlineJudge("correctness", 1.0), OnlineJudge("safety", 1.0))),))
    trace_id = h.call()
    jobs = h.jobs()
    assert [(j.kind, j.judge, j.trace_id) for j in jobs] == [
        ("online", "correctness", trace_id),
        ("online", "safety", trace_id),
    ]
    assert all(j.span_id and len(j.span_id) == 16 and j.enqueued_at > 0 for j in jobs)
    assert jobs[0].id == f"online:{trace_id}:{jobs[0].span_id}:correctness"


def test_sampling_follows_the_trace_number() -> None:
    h = Harness((OnlineRule("chat", (OnlineJudge("low", 0.05), OnlineJudge("high", 0.2))),), capacity=10_000)
    traces = [h.call() for _ in range(400)]
    jobs = h.jobs()
    for trace_id in traces:
        u = sample_point(trace_id)
        judged = {j.judge for j in jobs if j.trace_id == trace_id}
        assert judged == {name for name, rate in (("low", 0.05), ("high", 0.2)) if rate > u}
    assert {j.trace_id for j in jobs if j.judge == "low"} <= {j.trace_id for j in jobs if j.judge == "high"}


def test_judge_calls_are_never_sampled() -> None:
    """A judge's call carries gateway.judge.*: never a job, whatever its kind, even on a route with rules."""
    h = Harness((OnlineRule("chat", ALWAYS),))
    h.call(**{sc.GATEWAY_JUDGE_NAME: "correctness"})
    h.call(**{sc.GATEWAY_JUDGE_TARGET_TRACE_ID: "ab" * 16})
    h.call(kind=SpanKind.INTERNAL, **{sc.GATEWAY_JUDGE_NAME: "correctness"})
    h.call(kind=SpanKind.INTERNAL)  # an in-process call: not the proxy's SERVER span
    assert h.jobs() == []


def test_only_matching_calls_that_succeeded() -> None:
    h = Harness((OnlineRule("chat", ALWAYS, operation="text_completion"), OnlineRule("other", ALWAYS)))
    h.call()  # chat, but the chat route's rule wants text_completion
    h.call(**{sc.GATEWAY_LLM_ROUTE: "no-rules"})
    h.call(**{sc.GATEWAY_LLM_ROUTE: "other", sc.GEN_AI_OPERATION_NAME: "embeddings"})
    h.call(**{sc.GATEWAY_LLM_ROUTE: "other"}, error=True)
    h.call(**{sc.GATEWAY_LLM_ROUTE: "other", sc.HTTP_RESPONSE_STATUS_CODE: 502})
    h.call(kind=SpanKind.CLIENT, **{sc.GATEWAY_LLM_ROUTE: "other"})
    assert h.jobs() == []
    h.call(**{sc.GEN_AI_OPERATION_NAME: "text_completion"})
    h.call(**{sc.GATEWAY_LLM_ROUTE: "other"})
    assert len(h.jobs()) == 2


def test_prompt_rules_match_name_version_and_alias() -> None:
    h = Harness(
        (
            OnlineRule("chat", (OnlineJudge("any-version", 1.0),), prompt="qa"),
            OnlineRule("chat", (OnlineJudge("v2", 1.0),), prompt="qa", prompt_version=2),
            OnlineRule("chat", (OnlineJudge("production", 1.0),), prompt="qa", prompt_alias="production"),
        ),
        aliases={"qa@production": 3},
    )

    def judged(**attributes: Any) -> set[str]:
        h.call(**attributes)
        return {job.judge for job in h.jobs()}

    assert judged() == set()
    assert judged(**{sc.GEN_AI_PROMPT_NAME: "other", sc.GEN_AI_PROMPT_VERSION: 2}) == set()
    assert judged(**{sc.GEN_AI_PROMPT_NAME: "qa", sc.GEN_AI_PROMPT_VERSION: 1}) == {"any-version"}
    assert judged(**{sc.GEN_AI_PROMPT_NAME: "qa", sc.GEN_AI_PROMPT_VERSION: 2}) == {"any-version", "v2"}
    assert judged(**{sc.GEN_AI_PROMPT_NAME: "qa", sc.GEN_AI_PROMPT_VERSION: 3}) == {"any-version", "production"}


def test_a_judge_in_two_matching_rules_runs_once_at_the_higher_rate() -> None:
    h = Harness((OnlineRule("chat", (OnlineJudge("j", 0.0),)), OnlineRule("chat", (OnlineJudge("j", 1.0),))))
    h.call()
    assert [job.judge for job in h.jobs()] == ["j"]


def test_truncated_content_is_skipped_and_counted(dropped: dict[str, float]) -> None:
    h = Harness((OnlineRule("chat", (OnlineJudge("a", 1.0), OnlineJudge("b", 1.0))),))
    h.call(**{sc.GATEWAY_LLM_CONTENT_TRUNCATED: True})
    assert h.jobs() == []
    assert _delta(dropped, metrics.CONTENT_TRUNCATED) == 2


def test_a_full_buffer_drops_and_counts(dropped: dict[str, float]) -> None:
    h = Harness((OnlineRule("chat", (OnlineJudge("a", 1.0), OnlineJudge("b", 1.0))),), capacity=5)
    for _ in range(4):
        h.call()
    assert len(h.buffer) == 5
    assert _delta(dropped, metrics.BUFFER_FULL) == 3
    assert len(h.jobs()) == 5


def test_rules_replaced_at_runtime_apply_to_the_next_call() -> None:
    h = Harness((OnlineRule("chat", ALWAYS),))
    h.call()
    h.rules.replace(())
    h.call()
    h.rules.replace((OnlineRule("chat", (OnlineJudge("safety", 1.0),)),))
    h.call()
    assert [job.judge for job in h.jobs()] == ["correctness", "safety"]
    assert h.rules.to_list() == [{"route": "chat", "judges": [{"name": "safety", "rate": 1.0}]}]


def test_every_judge_attribute_marks_a_judge_call() -> None:
    """The processor looks up the gateway.judge.* names semconv defines; a new one must join them."""
    defined = {value for value in vars(sc).values() if isinstance(value, str) and value.startswith("gateway.judge.")}
    assert defined == set(JUDGE_ATTRIBUTES)
