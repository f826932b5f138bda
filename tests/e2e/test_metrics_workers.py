"""/metrics on a real 2-worker gateway: parsed with prometheus-client's parser, its counts are the
requests sent, whichever worker answered them and whichever worker answers the scrape."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.packages import PackageCache
from tests.servers import gateway_env, run_cli, run_gateway_process

GOOD = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}
BAD = {"inputs": [["not a number", 3.5, 1.4, 0.2]]}


def _scrape(base_url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = httpx.get(base_url + "/metrics", timeout=10)
    assert response.status_code == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_count_every_request_across_two_workers(packages: PackageCache, tmp_path: Path) -> None:
    models = tmp_path / "models"
    package = packages.copy("onnx_classifier", models / "iris")
    metrics_dir = tmp_path / "metrics"
    env = gateway_env(f"sqlite:///{tmp_path}/store.db", models, GATEWAY_METRICS_DIR=str(metrics_dir))
    run_cli(["models", "register", "iris", str(package), "--alias", "champion"], env)
    good, bad = 120, 7
    with run_gateway_process(["--model", "models:/iris@champion", "--workers", "2"], env, ready_path="/health") as (
        base_url,
        _,
    ):
        for i in range(good + bad):
            # A new connection per request: both workers answer some of them.
            response = httpx.post(base_url + "/invocations", json=BAD if i % 18 == 17 else GOOD, timeout=30)
            assert response.status_code == (400 if i % 18 == 17 else 200), response.text

        ok = (("model", "iris"), ("status", "200"), ("version", "1"))
        rejected = (("model", "iris"), ("status", "400"), ("version", "1"))
        deadline = time.monotonic() + 15
        while True:
            samples = _scrape(base_url)
            counts = samples.get("gateway_requests_total", {})
            if (counts.get(ok), counts.get(rejected)) == (good, bad) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert counts.get(ok) == good and counts.get(rejected) == bad, counts
        latency_count = samples["gateway_request_duration_seconds_count"][(("model", "iris"), ("version", "1"))]
        assert latency_count == good + bad
        buckets = samples["gateway_request_duration_seconds_bucket"]
        assert buckets[(("le", "+Inf"), ("model", "iris"), ("version", "1"))] == good + bad
        # Each worker left its own snapshot: the numbers above are a sum over both.
        assert len(list(metrics_dir.glob("worker-*.json"))) == 2
