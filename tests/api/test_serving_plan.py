"""Each worker logs its serving plan once at start: workers, cores, ONNX threads, spinning, inline threshold."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.store.registry import RegistryStore
from tests.servers import run_gateway_in_thread


@pytest.mark.parametrize(("workers", "spinning"), [(1, "on"), (2, "off")])
def test_startup_logs_the_thread_plan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, workers: int, spinning: str
) -> None:
    store_uri = f"sqlite:///{tmp_path}/store.db"
    RegistryStore.open(store_uri).close()
    settings = load_settings(
        {"store_uri": store_uri, "workers": workers, "serving.intra_op_num_threads": 1,
         "serving.inline_max_us": 50, "serving.max_batch_rows": 32},
        environ={},
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="gateway.app"), run_gateway_in_thread(settings):
        pass
    plans = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Serving plan")]
    assert len(plans) == 1, plans
    plan = plans[0]
    assert f"{workers} worker(s) on {os.cpu_count()} core(s)" in plan
    assert "ONNX intra-op threads 1 per session" in plan and f"spinning {spinning}" in plan
    assert "faster than 50 us run inline" in plan and "max_batch_rows 32" in plan
