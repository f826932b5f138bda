"""``gateway eval run`` as a user runs it: a real ``gateway serve`` process (two workers, 127.0.0.1) whose routes
lead to the fake upstream, the command as another process. The summary equals the stored assessments, ``--json``
parses, two prompt versions are reported side by side, the exit status follows ``--max-error-rate``, and the
command also runs embedded (no ``--url``) on a local store."""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.store.assessments import LLM_JUDGE, AssessmentStore
from gateway.store.engine import open_engine
from judges.eval_cli import API_KEY_ENV
from tests.judges.evaluation_servers import evaluation_routes
from tests.llm.conftest import PROVIDER_KEY, PROVIDER_KEY_ENV, FakeUpstream
from tests.llm.conftest import fake_upstream as fake_upstream  # noqa: F401 (a fixture, used by name)
from tests.servers import gateway_env, run_cli, run_gateway_process

JUDGES = ("relevance_to_query", "correctness")


KEY = "gw-eval-" + secrets.token_hex(8)


def _config(path: Path, up: FakeUpstream) -> Path:
    """The routes, the judges and a gateway key (every /api route then needs it; embedded runs need none)."""
    config = {"llm": evaluation_routes(up), "judges": {"route": "judge", "concurrency": 8},
              "auth": {"keys": [hashlib.sha256(KEY.encode()).hexdigest()]}}  # fmt: skip
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def served(
    fake_upstream: FakeUpstream,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str], Path, str]]:
    workdir = tmp_path_factory.mktemp("eval-cli")
    store_uri = f"sqlite:///{workdir}/store.db"
    env = gateway_env(store_uri, workdir, **{PROVIDER_KEY_ENV: PROVIDER_KEY, API_KEY_ENV: KEY})
    config = _config(workdir / "gateway.yaml", fake_upstream)
    with run_gateway_process(["--config", str(config), "--workers", "2"], env, log_path=workdir / "gateway.log") as (
        base_url,
        _,
    ):
        with httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as client:
            assert client.post("/api/prompts", json={"name": "qa"}).status_code == 201
            for verdict in ("false", "true"):  # version 1 answers get "no" from the fake judge, version 2 "yes"
                template = f"{{{{ question }}}} [[verdict.relevance_to_query={verdict}]]"
                assert client.post("/api/prompts/qa/versions", json={"template": template}).status_code == 201
        yield base_url, env, workdir, store_uri


def _dataset(path: Path, count: int = 50, *, expectations: bool = True, outputs: bool = True) -> Path:
    lines = []
    for i in range(count):
        item: dict[str, Any] = {"inputs": {"question": f"What is {i} times two?"}}
        if outputs:
            relevant = "true" if i % 5 else "false"  # 40 of 50 relevant
            item["outputs"] = f"{i} times two is {2 * i}. [[verdict.relevance_to_query={relevant}]]"
        if expectations:
            item["expectations"] = {"expected_response": f"{2 * i}"}
        lines.append(orjson.dumps(item).decode())
    path.write_text("\n".join(lines) + "\n")
    return path


def _stored(store_uri: str, evaluation_id: str) -> dict[str, dict[str, Any]]:
    """Per judge, what the stored assessment rows of the run say."""
    engine = open_engine(store_uri)
    try:
        rows = AssessmentStore(engine).for_evaluation(evaluation_id)
    finally:
        engine.dispose()
    figures = {}
    for name in {a.name for a in rows}:
        verdicts = [a for a in rows if a.name == name and a.source_type == LLM_JUDGE]
        judged = [a for a in verdicts if a.error_code is None]
        scores = [a.score for a in judged if a.score is not None]
        booleans = [a.value for a in judged if isinstance(a.value, bool)]
        figures[name] = {
            "count": len(judged),
            "errors": len(verdicts) - len(judged),
            "mean_score": math.fsum(scores) / len(scores) if scores else None,
            "pass_rate": sum(booleans) / len(booleans) if booleans else None,
            "labels": dict(sorted(Counter(a.label for a in judged if a.label is not None).items())),
        }
    return figures


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """JUDGE -> its cells (N, ERR, MEAN, PASS per run) from the summary table."""
    return {
        line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.split()[:1] in ([j] for j in JUDGES)
    }


def _cells(figures: dict[str, Any]) -> list[str]:
    mean, rate = figures["mean_score"], figures["pass_rate"]
    return [str(figures["count"]), str(figures["errors"]), "-" if mean is None else f"{mean:.3f}",
            "-" if rate is None else f"{rate:.0%}"]  # fmt: skip


def _judge_args() -> list[str]:
    return [arg for name in JUDGES for arg in ("--judge", name)]


def test_fifty_items_summary_equals_the_stored_assessments(served: tuple[str, dict[str, str], Path, str]) -> None:
    base_url, env, workdir, store_uri = served
    data = _dataset(workdir / "data.jsonl")
    done = run_cli(["eval", "run", str(data), *_judge_args(), "--url", base_url], env)
    assert "progress: 50/50 items" in done.stderr  # plain lines: not a terminal
    (evaluation_id,) = re.findall(r"\(evaluation ([0-9a-f-]{36})\)", done.stdout)
    stored = _stored(store_uri, evaluation_id)
    table = _table_rows(done.stdout)
    assert set(table) == set(JUDGES)
    for name in JUDGES:
        assert table[name] == _cells(stored[name]), (name, done.stdout)
    assert stored["relevance_to_query"]["pass_rate"] == pytest.approx(40 / 50)
    assert stored["relevance_to_query"]["count"] + stored["correctness"]["count"] == 100
    assert "passed" in done.stdout

    as_json = run_cli(["eval", "run", str(data), *_judge_args(), "--url", base_url, "--json"], env)
    document = json.loads(as_json.stdout)
    (view,) = document["evaluations"]
    assert document["passed"] is True and document["error_rate"] == 0.0
    assert view["status"] == "completed" and len(view["items"]) == 50
    assert view["aggregates"] == _stored(store_uri, view["id"])


def test_two_prompt_versions_side_by_side(served: tuple[str, dict[str, str], Path, str]) -> None:
    base_url, env, workdir, store_uri = served
    data = _dataset(workdir / "questions.jsonl", 20, outputs=False)
    args = ["eval", "run", str(data), "--judge", "relevance_to_query", "--target-route", "chat",
            "--prompt", "prompts:/qa/1", "--prompt", "prompts:/qa/2", "--url", base_url]  # fmt: skip
    done = run_cli(args, env)
    header = done.stdout.splitlines()[0]
    assert header.index("qa/1") < header.index("qa/2"), done.stdout
    row = _table_rows(done.stdout)["relevance_to_query"]
    assert row == ["20", "0", "0.000", "0%", "20", "0", "1.000", "100%"], done.stdout
    document = json.loads(run_cli([*args, "--json"], env).stdout)
    versions = [(g["prompt_name"], g["prompt_version"], g["items"]) for v in document["evaluations"]
                for g in v["by_version"]]  # fmt: skip
    assert versions == [("qa", 1, 20), ("qa", 2, 20)]
    for view in document["evaluations"]:
        assert view["aggregates"] == _stored(store_uri, view["id"])


def test_exit_status_follows_the_error_rate(served: tuple[str, dict[str, str], Path, str]) -> None:
    base_url, env, workdir, _ = served
    data = _dataset(workdir / "no-expectations.jsonl", 10, expectations=False)  # correctness cannot judge them
    failed = run_cli(["eval", "run", str(data), *_judge_args(), "--url", base_url], env, check=False)
    assert failed.returncode == 1, failed.stderr
    assert "error rate 100.0% (max 0.0%): FAILED" in failed.stdout
    assert _table_rows(failed.stdout)["correctness"][:2] == ["0", "10"]
    tolerated = run_cli(["eval", "run", str(data), *_judge_args(), "--url", base_url, "--max-error-rate", "1"], env)
    assert tolerated.returncode == 0
    refused = run_cli(["eval", "run", str(data), "--judge", "nope", "--url", base_url], env, check=False)
    assert refused.returncode == 2 and "judges[0]" in refused.stderr
    keyless = {name: value for name, value in env.items() if name != API_KEY_ENV}
    unauthenticated = run_cli(["eval", "run", str(data), "--judge", "safety", "--url", base_url], keyless, check=False)
    assert unauthenticated.returncode == 2 and "401" in unauthenticated.stderr
    missing = run_cli(["eval", "run", str(workdir / "absent.jsonl"), "--judge", "safety", "--url", base_url], env,
                      check=False)  # fmt: skip
    assert missing.returncode == 2 and "absent.jsonl" in missing.stderr


def test_embedded_without_url(fake_upstream: FakeUpstream, tmp_path: Path) -> None:  # noqa: F811
    """No --url: the app in process on the local store; the config's gateway keys are not asked for."""
    env = gateway_env(f"sqlite:///{tmp_path}/local.db", tmp_path, **{PROVIDER_KEY_ENV: PROVIDER_KEY})
    config = _config(tmp_path / "gateway.yaml", fake_upstream)
    data = _dataset(tmp_path / "data.jsonl", 5)
    done = run_cli(["eval", "run", str(data), *_judge_args(), "--config", str(config), "--json"], env)
    (view,) = json.loads(done.stdout)["evaluations"]
    assert view["status"] == "completed" and view["progress"]["done"] == 5
    assert view["aggregates"] == _stored(f"sqlite:///{tmp_path}/local.db", view["id"])
