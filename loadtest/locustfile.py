"""Locust scenario for users: ``/invocations`` against a running gateway, 1-row or N-row bodies.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --headless -u 64 -r 16 -t 60s
    INVOCATIONS_ROWS=100 locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --headless -u 16 -t 60s

``INVOCATIONS_PATH`` picks the endpoint (default ``/invocations``; e.g.
``/models/iris@champion/invocations``), ``INVOCATIONS_BODY_FILE`` a request body (default: one
iris row as ``dataframe_split``) and ``INVOCATIONS_ROWS`` the rows per request (the body's
``dataframe_split`` rows repeated in turn; default: the body as it is). Each answer must be a 200
with one prediction per row. Locust measures the whole client path in Python, so it tops out at
a few thousand req/s per process: use it for scenarios and soak tests, and
``loadtest/bench.py`` (wrk) for throughput figures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from locust import FastHttpUser, task

IRIS_BODY: dict[str, Any] = {
    "dataframe_split": {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "data": [[5.1, 3.5, 1.4, 0.2]],
    }
}


def build_body() -> tuple[bytes, int | None]:
    """(request body, rows expected in the answer or None when the body is not dataframe_split)."""
    body_file = os.environ.get("INVOCATIONS_BODY_FILE")
    payload = json.loads(Path(body_file).read_text()) if body_file else IRIS_BODY
    split = payload.get("dataframe_split") if isinstance(payload, dict) else None
    if not isinstance(split, dict) or not split.get("data"):
        return json.dumps(payload).encode(), None
    rows = int(os.environ.get("INVOCATIONS_ROWS") or len(split["data"]))
    if rows < 1:
        raise ValueError(f"INVOCATIONS_ROWS must be >= 1, got {rows}")
    data = [split["data"][i % len(split["data"])] for i in range(rows)]
    return json.dumps({**payload, "dataframe_split": {**split, "data": data}}).encode(), rows


BODY, ROWS = build_body()
PATH = os.environ.get("INVOCATIONS_PATH", "/invocations")
HEADERS = {"Content-Type": "application/json"}


class InvocationsUser(FastHttpUser):
    """Each user sends requests back to back on one keep-alive connection."""

    @task
    def invocations(self) -> None:
        with self.client.post(PATH, data=BODY, headers=HEADERS, catch_response=True) as resp:  # type: ignore[arg-type]
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                predictions = json.loads(resp.content or b"")["predictions"]
            except (ValueError, KeyError, TypeError):
                resp.failure(f"answer has no predictions: {(resp.text or '')[:200]}")
                return
            if ROWS is not None and len(predictions) != ROWS:
                resp.failure(f"{len(predictions)} predictions for {ROWS} rows")
