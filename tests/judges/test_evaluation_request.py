"""``POST /api/evaluations`` bodies read field by field: what is accepted, and each refusal naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import BadRequest
from judges.evaluation_request import JudgeSpec, TargetSpec, parse_request

ITEM = {"inputs": {"question": "What is 2+2?"}, "outputs": "4"}


def test_items_and_judges_as_names_or_objects() -> None:
    request = parse_request(
        {"judges": ["safety", {"name": "guidelines", "guidelines": "Be polite."}], "items": [ITEM], "name": "n"}
    )
    assert request.judges == (JudgeSpec("safety"), JudgeSpec("guidelines", "Be polite."))
    assert request.items == ({"inputs": ITEM["inputs"], "outputs": "4", "expectations": None},)
    assert request.source == "items" and request.name == "n" and not request.dry_run


def test_target_lets_items_leave_outputs_out() -> None:
    request = parse_request(
        {"judges": ["safety"], "items": [{"inputs": {"q": "x"}}], "target": {"route": "chat", "prompt": "qa@prod"}}
    )
    assert request.target == TargetSpec("chat", "qa@prod")
    assert request.items is not None and request.items[0]["outputs"] is None


def test_trace_sources() -> None:
    ids = parse_request({"judges": ["safety"], "trace_ids": ["A" * 32, "a" * 32, "b" * 32]})
    assert ids.trace_ids == ("a" * 32, "b" * 32)  # lower case, once each
    query = parse_request(
        {"judges": ["safety"], "traces": {"route": "r", "prompt_version": 2, "from": "2026-01-01T00:00:00Z",
                                          "to": 1_800_000_000_000, "limit": 5}}
    )  # fmt: skip
    assert query.traces is not None
    assert (query.traces.route, query.traces.prompt_version, query.traces.limit) == ("r", 2, 5)
    assert query.traces.start_ms == 1_767_225_600_000 and query.traces.end_ms == 1_800_000_000_000


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"items": [ITEM]}, "'judges'"),
        ({"judges": [], "items": [ITEM]}, "'judges'"),
        ({"judges": ["safety", "safety"], "items": [ITEM]}, "judges[1]"),
        ({"judges": [{"name": "g", "rules": "x"}], "items": [ITEM]}, "judges[0]"),
        ({"judges": [3], "items": [ITEM]}, "judges[0]"),
        ({"judges": ["safety"]}, "exactly one of"),
        ({"judges": ["safety"], "items": [ITEM], "trace_ids": ["a" * 32]}, "exactly one of"),
        ({"judges": ["safety"], "items": [ITEM], "extra": 1}, "'extra'"),
        ({"judges": ["safety"], "items": [{"outputs": "x"}]}, "items[0].inputs"),
        ({"judges": ["safety"], "items": [ITEM, {"inputs": "q"}]}, "items[1] has no outputs"),
        ({"judges": ["safety"], "items": [{**ITEM, "expectations": "x"}]}, "items[0].expectations"),
        ({"judges": ["safety"], "items": [{**ITEM, "tags": {}}]}, "items[0]"),
        ({"judges": ["safety"], "trace_ids": ["xyz"]}, "trace_ids[0]"),
        ({"judges": ["safety"], "traces": {"route": 3}}, "traces.route"),
        ({"judges": ["safety"], "traces": {"limit": 0}}, "traces.limit"),
        ({"judges": ["safety"], "traces": {"from": "yesterday"}}, "traces.from"),
        ({"judges": ["safety"], "traces": {"from": 10, "to": 5}}, "traces.to"),
        ({"judges": ["safety"], "traces": {"status": "ok"}}, "'status'"),
        ({"judges": ["safety"], "items": [ITEM], "target": "chat"}, "'target'"),
        ({"judges": ["safety"], "items": [ITEM], "target": {"prompt": "qa"}}, "target.route"),
        ({"judges": ["safety"], "items": [ITEM], "dry_run": "yes"}, "dry_run"),
    ],
)
def test_refusals_name_the_field(body: dict[str, Any], named: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_request(body)
    assert named in refused.value.message
