"""TraceStore on SQLite and PostgreSQL: idempotent batch inserts, every filter, keyset pagination."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gateway.errors import InvalidParameter
from gateway.store.assessments import (
    LLM_JUDGE,
    Assessment,
    AssessmentStore,
    assessment_id,
    score_and_label,
    trace_target,
)
from gateway.store.registry import RegistryStore
from gateway.store.traces import TraceFilters, TraceStore

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def row(n: int, **values: Any) -> dict[str, Any]:
    """A complete trace_summaries row; ``n`` orders it in time (one second apart)."""
    data: dict[str, Any] = {
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "started_at": BASE_MS + n * 1000,
        "duration_ms": 12.5,
        "time_to_first_chunk_ms": None,
        "operation": "chat",
        "route": "gpt-4o-mini",
        "target": "http://127.0.0.1:8001/v1#llama",
        "provider": "openai",
        "request_model": "gpt-4o-mini",
        "response_model": "llama-3.1-8b",
        "status_code": 200,
        "error_type": None,
        "stream": False,
        "input_tokens": 10,
        "output_tokens": 20,
        "key_id": "key-1",
        "prompt_name": None,
        "prompt_version": None,
        "input_content": None,
        "output_content": None,
        "attributes": "{}",
        "cost_usd": None,
    }
    data.update(values)
    return data


@pytest.fixture
def traces(store_url: str) -> Iterator[TraceStore]:
    registry = RegistryStore.open(store_url)  # migrates: trace_summaries is migration 3
    try:
        yield TraceStore(registry.engine)
    finally:
        registry.close()


def _ids(summaries: list[dict[str, Any]]) -> list[int]:
    return [int(s["trace_id"], 16) for s in summaries]


def test_insert_many_is_idempotent_and_round_trips(traces: TraceStore) -> None:
    rows = [
        row(1, stream=True, time_to_first_chunk_ms=42.0, attributes=orjson.dumps({"gateway.llm.attempts": 2}).decode()),
        row(2, input_content='[{"role": "user", "parts": []}]', output_content="[truncated"),
    ]
    assert traces.insert_many(rows) == 2
    assert traces.insert_many(rows) == 2  # a retried batch: no duplicate, no error
    assert traces.insert_many([]) == 0
    page = traces.search(TraceFilters())
    assert _ids(page.summaries) == [2, 1] and page.next_page_token is None
    second, first = page.summaries
    assert first["stream"] is True and first["time_to_first_chunk_ms"] == 42.0
    assert first["attributes"] == {"gateway.llm.attempts": 2}
    assert second["input_content"] == [{"role": "user", "parts": []}]  # JSON content comes back parsed
    assert second["output_content"] == "[truncated"  # text that is not JSON comes back as text
    assert {k: v for k, v in first.items() if k not in ("stream", "attributes", "time_to_first_chunk_ms")} == {
        k: v for k, v in rows[0].items() if k not in ("stream", "attributes", "time_to_first_chunk_ms")
    }


def test_every_filter(traces: TraceStore) -> None:
    traces.insert_many(
        [
            row(1),
            row(2, route="embed", operation="embeddings", request_model="text-embedding-3-small", response_model=None),
            row(3, status_code=502, error_type="502"),
            row(4, status_code=200, error_type="stream_error"),  # failed after the first streamed byte
            row(5, prompt_name="greeting", prompt_version=2),
            row(6, prompt_name="greeting", prompt_version=3, status_code=429, error_type="429"),
            row(7, status_code=None, error_type=None),
        ]
    )

    def ids(**filters: Any) -> list[int]:
        return _ids(traces.search(TraceFilters(**filters), limit=100).summaries)

    assert ids() == [7, 6, 5, 4, 3, 2, 1]
    assert ids(route="embed") == [2]
    assert ids(model="text-embedding-3-small") == [2]  # the request model
    assert ids(model="llama-3.1-8b") == [7, 6, 5, 4, 3, 1]  # or the response model
    assert ids(status="ok") == [7, 5, 2, 1]
    assert ids(status="error") == [6, 4, 3]
    assert ids(status=502) == [3]
    assert ids(prompt_name="greeting") == [6, 5]
    assert ids(prompt_name="greeting", prompt_version=3) == [6]
    assert ids(start_ms=BASE_MS + 3000) == [7, 6, 5, 4, 3]  # inclusive
    assert ids(end_ms=BASE_MS + 3000) == [2, 1]  # exclusive
    assert ids(start_ms=BASE_MS + 2000, end_ms=BASE_MS + 5000, status="error") == [4, 3]
    assert ids(route="nope") == []


def test_pagination_is_newest_first_complete_and_stable(traces: TraceStore) -> None:
    # Ties on started_at are broken by trace id, so no row is skipped or repeated across pages.
    traces.insert_many([row(n, started_at=BASE_MS + (n // 3) * 1000) for n in range(1, 24)])
    seen: list[int] = []
    token: str | None = None
    pages = 0
    while True:
        page = traces.search(TraceFilters(), limit=5, page_token=token)
        seen.extend(_ids(page.summaries))
        pages += 1
        if page.next_page_token is None:
            break
        token = page.next_page_token
        if pages == 2:
            traces.insert_many([row(100)])  # a newer summary arriving meanwhile does not shift later pages
    assert pages == 5
    assert seen == sorted(range(1, 24), key=lambda n: (n // 3, n), reverse=True)
    filtered = traces.search(TraceFilters(route="gpt-4o-mini"), limit=24)
    assert filtered.next_page_token is None and len(filtered.summaries) == 24


def test_get_returns_a_traces_summaries_oldest_first(traces: TraceStore) -> None:
    trace_id = "ab" * 16
    traces.insert_many(
        [
            row(2, trace_id=trace_id, span_id="2" * 16),
            row(1, trace_id=trace_id, span_id="1" * 16),
            row(3),
        ]
    )
    assert [s["span_id"] for s in traces.get(trace_id)] == ["1" * 16, "2" * 16]
    assert [s["span_id"] for s in traces.get(trace_id.upper())] == ["1" * 16, "2" * 16]
    assert traces.get("cd" * 16) == []
    many = traces.get_many([trace_id.upper(), "cd" * 16, trace_id])  # one query for several traces
    assert list(many) == [trace_id] and many[trace_id] == traces.get(trace_id)
    assert traces.get_many([]) == {}


@pytest.mark.parametrize("token", ["not-a-token", "W10", "WzEsMl0", "eyJhIjoxfQ"])
def test_a_foreign_page_token_is_refused_by_name(traces: TraceStore, token: str) -> None:
    with pytest.raises(InvalidParameter, match="page_token"):
        traces.search(TraceFilters(), page_token=token)


def test_assessment_filters(traces: TraceStore) -> None:
    """A summary is kept when one assessment of its trace matches every assessment filter at once."""
    # Trace 1 has two summaries (spans); trace 5 none: its assessments never list anything.
    traces.insert_many([row(1), row(1, span_id="f" * 16, started_at=BASE_MS + 1500), row(2), row(3), row(4)])

    def judged(n: int, name: str, value: Any) -> Assessment:
        score, label = score_and_label(value)
        target = trace_target(f"{n:032x}", f"{n:016x}")
        return Assessment(
            id=assessment_id(target=target, judge_name=name, judge_version=1, evaluation_id=None),
            trace_id=f"{n:032x}",
            span_id=f"{n:016x}",
            name=name,
            source_type=LLM_JUDGE,
            value=value,
            score=score,
            label=label,
        )

    AssessmentStore(traces.engine).insert_if_absent(
        [
            judged(1, "correctness", True),
            judged(1, "relevance", 5),
            judged(2, "correctness", False),
            judged(2, "relevance", 2),
            judged(3, "tone", "friendly"),
            judged(5, "correctness", True),
        ]
    )

    def ids(**filters: Any) -> list[int]:
        return _ids(traces.search(TraceFilters(**filters), limit=100).summaries)

    assert ids() == [4, 3, 2, 1, 1]
    assert ids(assessment_name="correctness") == [2, 1, 1]  # both summaries of trace 1
    assert ids(assessment_name="correctness", assessment_value="yes") == [1, 1]
    assert ids(assessment_name="correctness", assessment_value="false") == [2]  # the JSON value
    assert ids(assessment_value="friendly") == [3]  # any name
    assert ids(assessment_name="relevance", min_score=3) == [1, 1]
    assert ids(assessment_name="relevance", max_score=2) == [2]
    assert ids(assessment_name="relevance", min_score=2, max_score=5) == [2, 1, 1]
    assert ids(min_score=1) == [2, 1, 1]  # any name: trace 1 (true, 5), trace 2 (relevance 2)
    assert ids(min_score=3) == [1, 1]
    # One assessment must match all filters: trace 2's correctness is 0.0, its relevance is not "yes".
    assert ids(assessment_name="correctness", min_score=0.5) == [1, 1]
    assert ids(assessment_name="tone", min_score=0) == []  # a label has no score
    assert ids(assessment_name="nope") == []
    assert ids(assessment_name="correctness", route="gpt-4o-mini", status="ok") == [2, 1, 1]


def test_usage_sums_the_rows_search_lists(traces: TraceStore) -> None:
    day = 86_400_000
    traces.insert_many(
        [
            row(1, key_id="k1", input_tokens=3, output_tokens=4, cost_usd=0.5),
            row(2, key_id="k1", route="other", input_tokens=1, output_tokens=None, cost_usd=None),
            row(3, key_id="k2", request_model="m2", input_tokens=10, output_tokens=10, cost_usd=0.25),
            row(4, key_id=None, started_at=BASE_MS + day + 5, input_tokens=None, output_tokens=None),
        ]
    )
    groups, total = traces.usage(TraceFilters())
    assert groups == [] and total == {
        "requests": 4, "input_tokens": 14, "output_tokens": 14, "total_tokens": 28, "cost_usd": 0.75,
    }  # fmt: skip
    by_day, _ = traces.usage(TraceFilters(), "day")
    assert [(g["day"], g["requests"]) for g in by_day] == [("2026-01-01", 3), ("2026-01-02", 1)]
    by_key, _ = traces.usage(TraceFilters(), "key")
    assert {g["key"]: g["cost_usd"] for g in by_key} == {None: 0.0, "k1": 0.5, "k2": 0.25}
    by_model, _ = traces.usage(TraceFilters(key_id="k1"), "model")
    assert by_model == [
        {"model": "gpt-4o-mini", "requests": 2, "input_tokens": 4, "output_tokens": 4, "total_tokens": 8,
         "cost_usd": 0.5}
    ]  # fmt: skip
    _, routed = traces.usage(TraceFilters(key_id="k1", route="other"), "route")
    assert routed["requests"] == 1 and _ids(traces.search(TraceFilters(key_id="k1", route="other")).summaries) == [2]
    _, none = traces.usage(TraceFilters(key_id="nobody"))
    assert none == {"requests": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "cost_usd": 0.0}
