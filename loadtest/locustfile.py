"""Locust scenario for users: single-row ``/invocations`` against a running gateway.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --headless -u 64 -r 16 -t 60s

``INVOCATIONS_PATH`` picks the endpoint (default ``/invocations``; e.g.
``/models/iris@champion/invocations``) and ``INVOCATIONS_BODY_FILE`` a request body (default:
one iris row as ``dataframe_split``). Locust measures the whole client path in Python, so it tops
out at a few thousand req/s per process: use it for scenarios and soak tests, and
``loadtest/bench.py`` (wrk) for throughput figures.
"""

from __future__ import annotations

import os
from pathlib import Path

from locust import FastHttpUser, task

DEFAULT_BODY = (
    '{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],'
    ' "data": [[5.1, 3.5, 1.4, 0.2]]}}'
)
BODY = (
    Path(os.environ["INVOCATIONS_BODY_FILE"]).read_text()
    if "INVOCATIONS_BODY_FILE" in os.environ
    else DEFAULT_BODY
)
PATH = os.environ.get("INVOCATIONS_PATH", "/invocations")
HEADERS = {"Content-Type": "application/json"}


class InvocationsUser(FastHttpUser):
    """Each user sends requests back to back on one keep-alive connection."""

    @task
    def invocations(self) -> None:
        with self.client.post(PATH, data=BODY, headers=HEADERS, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            elif b'"predictions"' not in (resp.content or b""):
                resp.failure("answer has no predictions")
