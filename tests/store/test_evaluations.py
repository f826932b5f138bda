"""EvaluationStore on SQLite and PostgreSQL: a run and its items in one write, statuses and their times,
item updates, newest-first pagination."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.errors import InvalidParameter, NotFound
from gateway.store.evaluations import EvaluationStore
from gateway.store.registry import RegistryStore

RUN = "0c1d2e3f-0000-4000-8000-000000000001"


@pytest.fixture
def store(store_url: str) -> Iterator[EvaluationStore]:
    registry = RegistryStore.open(store_url)
    try:
        yield EvaluationStore(registry.engine)
    finally:
        registry.close()


def test_create_get_and_items(store: EvaluationStore) -> None:
    request = {"judges": ["correctness", "safety"], "items": 2, "target": {"route": "gpt", "prompt": "prompts:/qa/2"}}
    store.create(
        RUN,
        request,
        [
            {"inputs": {"question": "2+2?"}, "expectations": {"expected_response": "4"}},
            {"inputs": "plain text", "outputs": "an answer", "trace_id": "ab" * 16, "span_id": "cd" * 8,
             "prompt_name": "qa", "prompt_version": 2, "model": "llama"},
        ],
        judge_count=2,
    )  # fmt: skip
    run = store.get(RUN)
    assert run is not None
    assert run["status"] == "queued" and run["request"] == request
    assert (run["item_count"], run["judge_count"]) == (2, 2)
    assert run["created_at"] > 0 and run["started_at"] is None and run["finished_at"] is None
    assert run["error_message"] is None
    first, second = store.items(RUN)
    assert first == {
        "evaluation_id": RUN,
        "item_index": 0,
        "inputs": {"question": "2+2?"},
        "outputs": None,
        "expectations": {"expected_response": "4"},
        "trace_id": None,
        "span_id": None,
        "prompt_name": None,
        "prompt_version": None,
        "model": None,
        "status": "pending",
        "error_message": None,
    }
    assert second["inputs"] == "plain text" and second["outputs"] == "an answer"
    assert (second["trace_id"], second["prompt_version"], second["model"]) == ("ab" * 16, 2, "llama")
    assert store.get("unknown") is None and store.items("unknown") == []
    assert store.item_counts(RUN) == {"pending": 2, "queued": 0, "done": 0, "error": 0}


def test_an_unknown_item_field_is_refused_before_writing(store: EvaluationStore) -> None:
    with pytest.raises(ValueError, match="colour"):
        store.create(RUN, {}, [{"inputs": 1}, {"inputs": 2, "colour": "red"}], judge_count=1)
    assert store.get(RUN) is None


def test_statuses_stamp_their_times(store: EvaluationStore) -> None:
    store.create(RUN, {}, [{"inputs": 1}], judge_count=1)
    store.set_status(RUN, "running")
    running = store.get(RUN)
    assert running is not None and running["status"] == "running" and running["started_at"] is not None
    assert running["finished_at"] is None
    store.set_status(RUN, "failed", error_message="the judge route is gone")
    failed = store.get(RUN)
    assert failed is not None and failed["finished_at"] is not None
    assert (failed["status"], failed["error_message"]) == ("failed", "the judge route is gone")
    with pytest.raises(ValueError, match="done"):
        store.set_status(RUN, "done")
    with pytest.raises(NotFound, match="nope"):
        store.set_status("nope", "running")


def test_update_item(store: EvaluationStore) -> None:
    store.create(RUN, {}, [{"inputs": {"q": 1}}, {"inputs": {"q": 2}}], judge_count=1)
    store.update_item(RUN, 1, outputs={"text": "hi"}, trace_id="ab" * 16, span_id="cd" * 8, model="m", status="done")
    store.update_item(RUN, 0, status="error", error_message="the target answered 502")
    store.update_item(RUN, 0)  # nothing to change
    first, second = store.items(RUN)
    assert (first["status"], first["error_message"]) == ("error", "the target answered 502")
    assert second["outputs"] == {"text": "hi"} and second["model"] == "m" and second["status"] == "done"
    assert store.item_counts(RUN) == {"pending": 0, "queued": 0, "done": 1, "error": 1}
    with pytest.raises(ValueError, match="item_index"):
        store.update_item(RUN, 0, item_index=3)  # the key is not a field to change
    with pytest.raises(ValueError, match="finished"):
        store.update_item(RUN, 0, status="finished")
    with pytest.raises(NotFound, match="item 7"):
        store.update_item(RUN, 7, status="done")


def test_list_is_newest_first_and_paginates(store: EvaluationStore) -> None:
    ids = [f"0c1d2e3f-0000-4000-8000-{n:012d}" for n in range(5)]
    for run_id in ids:
        store.create(run_id, {"n": run_id}, [], judge_count=1)
    pages: list[list[str]] = []
    token = None
    while True:
        runs, token = store.list(limit=2, page_token=token)
        pages.append([r["id"] for r in runs])
        if token is None:
            break
    listed = [run_id for page in pages for run_id in page]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(listed) == ids  # each once, in (created_at, id) order, newest first
    assert listed == [r["id"] for r in store.list(limit=10)[0]]
    with pytest.raises(InvalidParameter, match="page_token"):
        store.list(page_token="bogus")
    with pytest.raises(InvalidParameter, match="limit"):
        store.list(limit=0)
