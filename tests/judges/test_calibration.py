"""Calibration against people (issue 11 item 8): the built-in judges run over the labelled fixture
(judges/data/calibration.jsonl) as one evaluation through a real gateway and the fake judge, the fixture's
human labels are posted on the run's items, and ``GET /api/judges/{name}/agreement`` must equal
scikit-learn's ``cohen_kappa_score`` and ``confusion_matrix`` on the same (human, judge) pairs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from gateway.store.assessments import LLM_JUDGE
from tests.judges.evaluation_servers import EvalGateway, evaluation_gateway
from tests.llm.conftest import FakeUpstream
from tests.llm.conftest import fake_upstream as fake_upstream  # noqa: F401 (a fixture, used by name)

FIXTURE = Path(__file__).resolve().parents[2] / "judges" / "data" / "calibration.jsonl"
JUDGES = ("correctness", "safety", "conciseness", "relevance_to_query")


@pytest.fixture(scope="module")
def calibrated(
    fake_upstream: FakeUpstream,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EvalGateway, list[dict[str, Any]], dict[str, Any]]]:
    rows = [orjson.loads(line) for line in FIXTURE.read_bytes().splitlines() if line.strip()]
    assert len(rows) >= 200
    with evaluation_gateway(tmp_path_factory.mktemp("calibration"), fake_upstream, {"concurrency": 8}) as gw:
        items = [{"inputs": r["inputs"], "outputs": r["outputs"], "expectations": r["expectations"]} for r in rows]
        answer = gw.post({"judges": list(JUDGES), "items": items, "name": "calibration"})
        view = gw.wait(answer["id"], timeout_s=120)
        assert view["status"] == "completed" and view["progress"]["errors"] == 0, view["progress"]
        for index, row in enumerate(rows):
            for name in JUDGES:
                label = {"name": name, "value": row["labels"][name], "source_id": "fixture"}
                posted = gw.client.post(f"/api/evaluations/{answer['id']}/items/{index}/assessments", json=label)
                assert posted.status_code == 201, posted.text
        yield gw, rows, gw.view(answer["id"])


@pytest.mark.parametrize("name", JUDGES)
def test_agreement_equals_scikit_learn(
    calibrated: tuple[EvalGateway, list[dict[str, Any]], dict[str, Any]], name: str
) -> None:
    gw, rows, view = calibrated
    human: list[bool] = []
    judge: list[bool] = []
    for row, item in zip(rows, view["items"], strict=True):
        (verdict,) = [a["value"] for a in item["assessments"] if a["name"] == name and a["source_type"] == LLM_JUDGE]
        human.append(row["labels"][name])
        judge.append(verdict)
    answer = gw.client.get(f"/api/judges/{name}/agreement")
    assert answer.status_code == 200, answer.text
    figures = answer.json()
    assert figures["count"] == len(rows) and figures["weighting"] == "none"
    labels = sorted(set(human) | set(judge))
    assert figures["labels"] == labels
    assert figures["confusion_matrix"] == confusion_matrix(human, judge, labels=labels).tolist()
    assert figures["kappa"] == pytest.approx(cohen_kappa_score(human, judge), abs=1e-12)
    agreeing = sum(h == j for h, j in zip(human, judge, strict=True))
    assert figures["percent_agreement"] == pytest.approx(100.0 * agreeing / len(rows))
    # The fake judge is imperfect on purpose, like a real one: agreement is high, not total.
    assert 0.0 < figures["kappa"] < 1.0 or figures["percent_agreement"] == 100.0
