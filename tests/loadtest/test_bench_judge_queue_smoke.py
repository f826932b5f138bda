"""The judge queue bench on a small queue, on the store's queue and on Redis, with its code judge and with LLM
judges: every job ends committed, and it reports a max rate and the half-rate latencies (the harness, not the
speed)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import require_service
from tests.loadtest._kit import run_script


@pytest.mark.parametrize(("judge", "backends"), [("code", "redis,store"), ("llm", "redis")])
def test_the_bench_measures_both_rates_on_each_queue(judge: str, backends: str) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    result = run_script("bench_judge_queue.py", "--judge", judge, "--backends", backends, "--jobs", "60", "--runs",
                        "1", "--duration", "1", "--concurrency", "8", timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith(("| redis", "| store"))]
    assert [row[1].strip() for row in rows] == backends.split(",")
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for backend in results:
        (burst,) = backend["max"]
        assert burst["jobs"] == burst["committed"] == 60 and burst["jobs_per_s"] > 0, burst
        (paced,) = backend["half"]
        assert paced["jobs"] == paced["committed"] > 0 and 0 <= paced["p50_s"] <= paced["p95_s"] <= paced["max_s"]
        assert paced["wait_p95_le_s"] is not None, paced
