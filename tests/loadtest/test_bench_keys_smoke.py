"""The keys bench's in-process part in its quick mode: it runs and reports its figures (the harness, not the
speed; the Redis figure only when Redis answers)."""

from __future__ import annotations

import json
import socket

from tests.loadtest._kit import run_script


def test_quick_in_process_part_reports_its_figures() -> None:
    result = run_script("bench_keys.py", "--quick", "--only", "1", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)["in_process"]
    assert 0 < figures["key_check_us"] < figures["key_and_local_limit_us"]
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return
    assert 0 < figures["redis_admit_p50_ms"] <= figures["redis_admit_p99_ms"]
