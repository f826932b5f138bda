"""Large /invocations bodies: ``serving.max_rows`` refuses them by their row count before any value is
converted, and bodies over ``serving.parse_offload_bytes`` are parsed off the event loop (the worker
keeps answering its other requests meanwhile: measured by loadtest/large_bodies.py, not asserted here)
and answer as small ones do (issue 13, item 7)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from gateway.config import load_settings
from gateway.registration import register_version
from gateway.store.registry import RegistryStore
from tests.packages import IRIS_COLUMNS, PackageCache
from tests.servers import run_gateway_in_thread

MAX_ROWS = 1000
URL = "/models/iris@champion/invocations"


def _serve(root: Path, packages: PackageCache, **serving: Any) -> Iterator[httpx.Client]:
    store_uri = f"sqlite:///{root}/store.db"
    store = RegistryStore.open(store_uri)
    register_version(
        store, "iris", str(packages.get("sklearn_skops")), artifact_roots=[packages.root], alias="champion",
        create_model=True,
    )  # fmt: skip
    store.close()
    settings = load_settings(
        {
            "store_uri": store_uri,
            "artifact_roots": [str(packages.root)],
            "workers": 1,
            "serving.preload": ["models:/iris@champion"],
            **{f"serving.{key}": value for key, value in serving.items()},
        },
        environ={},
    )
    with run_gateway_in_thread(settings) as base_url, httpx.Client(base_url=base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, packages: PackageCache) -> Iterator[httpx.Client]:
    yield from _serve(tmp_path_factory.mktemp("rows"), packages, max_rows=MAX_ROWS, parse_offload_bytes=4096)


def _rows(n: int) -> list[list[float]]:
    return np.random.default_rng(n).uniform(0.1, 7.0, size=(n, 4)).round(2).tolist()


def _csv(rows: list[list[float]]) -> bytes:
    lines = [",".join(IRIS_COLUMNS), *(",".join(map(str, row)) for row in rows)]
    return "\n".join(lines).encode()


def _bodies(n: int) -> dict[str, tuple[bytes, str]]:
    rows = _rows(n)
    records = [dict(zip(IRIS_COLUMNS, row, strict=True)) for row in rows]
    columns = {name: [row[i] for row in rows] for i, name in enumerate(IRIS_COLUMNS)}
    json = "application/json"
    return {
        "csv": (_csv(rows), "text/csv"),
        "dataframe_split": (orjson.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}}), json),
        "dataframe_records": (orjson.dumps({"dataframe_records": records}), json),
        "instances": (orjson.dumps({"instances": records}), json),
        "inputs as columns": (orjson.dumps({"inputs": columns}), json),
    }


@pytest.mark.parametrize("form", list(_bodies(1)))
def test_a_request_over_max_rows_is_a_413_naming_the_setting(client: httpx.Client, form: str) -> None:
    body, content_type = _bodies(MAX_ROWS + 1)[form]
    response = client.post(URL, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 413, response.text
    error = response.json()
    assert error["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert "1,001 rows" in error["message"] and "serving.max_rows allows 1,000" in error["message"]


@pytest.mark.parametrize("form", list(_bodies(1)))
def test_a_request_at_max_rows_is_parsed_off_the_loop_and_answered(client: httpx.Client, form: str) -> None:
    body, content_type = _bodies(MAX_ROWS)[form]
    assert len(body) > 4096  # over parse_offload_bytes: the parser thread's way
    response = client.post(URL, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == MAX_ROWS
    small = client.post(URL, content=_bodies(3)[form][0], headers={"Content-Type": content_type})
    assert small.status_code == 200 and len(small.json()["predictions"]) == 3


def test_an_invalid_large_body_gets_the_same_400_as_a_small_one(client: httpx.Client) -> None:
    rows = _rows(MAX_ROWS)
    rows[500][2] = "x"  # type: ignore[call-overload]
    big = client.post(URL, content=_csv(rows), headers={"Content-Type": "text/csv"})
    small = client.post(URL, content=_csv(rows[499:502]), headers={"Content-Type": "text/csv"})
    assert big.status_code == small.status_code == 400
    assert big.json() == small.json()
