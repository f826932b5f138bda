"""gateway.metrics: cheap process-wide metrics, Prometheus exposition, and the merge over workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics


def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """sample name -> {sorted label items: value} for one family's samples named ``name``."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_counter_gauge_and_histogram_expose_in_prometheus_format() -> None:
    requests = metrics.counter("test_unit_requests_total", "Requests.", ("model", "status"))
    depth = metrics.gauge("test_unit_depth", "Queue depth.", ("model",))
    latency = metrics.histogram("test_unit_latency_seconds", "Latency.", ("model",), buckets=(0.1, 1.0))
    requests.inc(("iris", "200"))
    requests.inc(("iris", "200"))
    requests.inc(("iris", "400"), 3)
    depth.set(("iris",), 5)
    depth.dec(("iris",), 2)
    for value in (0.05, 0.1, 0.5, 2.0):
        latency.observe(("iris",), value)

    text = metrics.exposition().decode()
    assert _samples(text, "test_unit_requests_total") == {
        (("model", "iris"), ("status", "200")): 2.0,
        (("model", "iris"), ("status", "400")): 3.0,
    }
    assert _samples(text, "test_unit_depth") == {(("model", "iris"),): 3.0}
    buckets = _samples(text, "test_unit_latency_seconds_bucket")
    # le is inclusive: 0.1 falls in the 0.1 bucket; cumulative counts.
    assert buckets == {
        (("le", "0.1"), ("model", "iris")): 2.0,
        (("le", "1.0"), ("model", "iris")): 3.0,
        (("le", "+Inf"), ("model", "iris")): 4.0,
    }
    assert _samples(text, "test_unit_latency_seconds_count") == {(("model", "iris"),): 4.0}
    assert _samples(text, "test_unit_latency_seconds_sum") == {(("model", "iris"),): pytest.approx(2.65)}
    families = _families(text)
    assert families["test_unit_requests"].type == "counter"  # type: ignore[attr-defined]
    assert families["test_unit_latency_seconds"].type == "histogram"  # type: ignore[attr-defined]


def test_defining_a_metric_twice_returns_the_same_object_and_conflicts_are_refused() -> None:
    first = metrics.counter("test_unit_twice_total", "Twice.", ("a",))
    assert metrics.counter("test_unit_twice_total", "Twice.", ("a",)) is first
    with pytest.raises(ValueError, match="another kind, labels or buckets"):
        metrics.counter("test_unit_twice_total", "Twice.", ("b",))
    with pytest.raises(ValueError, match="another kind"):
        metrics.gauge("test_unit_twice_total", "Twice.", ("a",))
    with pytest.raises(ValueError, match="invalid metric name"):
        metrics.counter("test.dotted", "Dots are not Prometheus names.")
    with pytest.raises(ValueError, match="strictly increasing"):
        metrics.histogram("test_unit_bad_buckets", "Bad.", buckets=(1.0, 0.5))


def test_collect_hooks_run_before_each_scrape_and_can_be_removed() -> None:
    loaded = metrics.gauge("test_unit_loaded", "Loaded.")
    calls: list[int] = []

    def hook() -> None:
        calls.append(1)
        loaded.set((), len(calls))

    remove = metrics.add_collect_hook(hook)
    try:
        assert _samples(metrics.exposition().decode(), "test_unit_loaded") == {(): 1.0}
        assert _samples(metrics.exposition().decode(), "test_unit_loaded") == {(): 2.0}
    finally:
        remove()
    metrics.exposition()
    assert len(calls) == 2


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from gateway import metrics
    directory, amount, stay = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "stay"
    c = metrics.counter("test_merge_requests_total", "Requests.", ("status",))
    g = metrics.gauge("test_merge_inflight", "In flight.")
    h = metrics.histogram("test_merge_seconds", "Seconds.", buckets=(1.0,))
    c.inc(("200",), amount)
    g.set((), amount)
    h.observe((), amount)
    metrics.write_snapshot(directory)
    print("written", flush=True)
    if stay:
        sys.stdin.read()  # stay alive until the test closes stdin
    """
)


def test_snapshots_of_other_workers_are_merged_counters_from_all_gauges_from_live_only(tmp_path: Path) -> None:
    metrics.prepare_metrics_dir(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", _WORKER, str(tmp_path), "2", "exit"], capture_output=True, text=True, timeout=60
    )
    assert dead.returncode == 0, dead.stderr
    live = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(tmp_path), "5", "stay"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "written"
        text = metrics.exposition(tmp_path).decode()
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait(timeout=30)
    # This process defines none of these series: all values come from the two snapshot files.
    assert _samples(text, "test_merge_requests_total") == {(("status", "200"),): 7.0}
    assert _samples(text, "test_merge_inflight") == {(): 5.0}  # the dead worker's gauge is not counted
    assert _samples(text, "test_merge_seconds_count") == {(): 2.0}
    assert _samples(text, "test_merge_seconds_bucket")[(("le", "1.0"),)] == 0.0
    assert _samples(text, "test_merge_seconds_sum") == {(): 7.0}

    # A fresh run wipes the old snapshots.
    metrics.prepare_metrics_dir(tmp_path)
    assert not list(tmp_path.glob("worker-*"))


def test_metrics_endpoint_serves_the_exposition_format(tmp_path: Path) -> None:
    from gateway.config import Settings
    from tests.servers import run_gateway_in_thread

    settings = Settings(store_uri=f"sqlite:///{tmp_path}/store.db", artifact_roots=(tmp_path,))
    marker = metrics.counter("test_endpoint_marker_total", "A marker the test increments.")
    marker.inc((), 4)
    with run_gateway_in_thread(settings) as base_url:
        response = httpx.get(base_url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert _samples(response.text, "test_endpoint_marker_total") == {(): 4.0}
