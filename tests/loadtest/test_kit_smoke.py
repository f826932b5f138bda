"""The bench harness and the RSS soak, run for real on one tiny cell each (about 1 s of load).

They start real servers on loopback as subprocesses, drive them with wrk (or loadgen.py) and
must print a table that parses, with figures that came from answered requests, and leave no
server process behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.loadtest._kit import load, run_script

report = load("report")


def processes_in(directory: Path) -> list[int]:
    """Pids whose working directory is ``directory`` (the servers the kit started there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(directory):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_bench_one_tiny_cell_prints_a_table_that_parses(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    out = tmp_path / "bench.json"
    res = run_script(
        "bench.py", "--models", "iris", "--targets", "gateway,hello", "--batching", "off", "--conns", "1",
        "--rows", "2", "--duration", "1", "--warmup", "0", "--workdir", str(workdir), "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    table = {row["target"]: row for row in report.parse_table(res.stdout)}
    assert set(table) == {"gateway batching off", "bare hello (HTTP ceiling)"}, res.stdout
    gateway = table["gateway batching off"]
    assert (gateway["model"], gateway["rows"], gateway["workers"], gateway["conns"]) == ("iris", "2", "1", "1")
    for row in table.values():
        assert row["req/s"] != "–" and float(row["req/s"].replace(",", "")) > 0, res.stdout
        assert row["errors"] == "0", res.stdout
    assert gateway["vs hello"] != "–" and float(gateway["vs hello"]) > 0, res.stdout  # same-run ratio
    raw = json.loads(out.read_text())
    cells = {c["target"]: c for c in raw["cells"]}
    assert cells["gateway-off"]["requests"] > 0 and cells["gateway-off"]["server_cpu_us_per_req"] > 0
    assert "Issue targets, this run:" in res.stdout
    assert processes_in(workdir) == []


def test_soak_reports_rss_of_every_worker(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    out = tmp_path / "soak.json"
    res = run_script(
        "soak.py", "--requests", "3000", "--warmup-requests", "1000", "--workers", "2", "--conns", "8",
        "--chunk-seconds", "1", "--workdir", str(workdir), "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    rows = report.parse_table(res.stdout)
    assert len(rows) == 2, res.stdout  # one row per uvicorn worker process
    for row in rows:
        assert float(row["RSS after warm-up MiB"]) > 10
        assert float(row["RSS at end MiB"]) > 10
    summary = json.loads(out.read_text())["summary"]
    assert summary["requests_after_warmup"] >= 3000
    assert summary["errors"] == 0
    assert processes_in(workdir) == []
