"""The judge queue bench on a small queue, on the store's queue and on Redis: it drains every job and reports
a rate (the harness, not the speed)."""

from __future__ import annotations

from tests.conftest import require_service
from tests.loadtest._kit import run_script


def test_the_bench_drains_both_queues_and_reports_a_rate() -> None:
    require_service("Redis", "127.0.0.1", 6379)
    result = run_script("bench_judge_queue.py", "--jobs", "60", "--concurrency", "8", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith(("| redis", "| store"))]
    assert [row[1].strip() for row in rows] == ["redis", "store"]
    for row in rows:
        assert int(row[2]) == 60 and float(row[4]) > 0, row
