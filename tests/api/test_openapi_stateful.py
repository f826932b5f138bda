"""Schemathesis's stateful phase over the generated OpenAPI document, against a real gateway with gateway keys on
and a key holding every scope (tests/api/full_gateway.py): sequences of calls chained by the links Schemathesis
infers from the document (create a prompt, then read, version and alias it; register a model, then its
versions...). No answer is a 5xx (but the documented 502/503/504 of an LLM route whose upstream is a closed
port), and every error body has the documented shape (test_openapi_fuzz.py's check). Also: /health's 503 body
matches the schema the document gives it.

Bounded in the suite (FUZZ_STATEFUL_EXAMPLES scenarios, default 10, of up to 8 steps); ``make fuzz-stateful``
runs rounds of them for FUZZ_MINUTES minutes (each round drawn with its own seed).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import jsonschema
import pytest
import requests
import schemathesis

from gateway.app import create_app
from gateway.config import load_settings
from tests.api.full_gateway import full_gateway
from tests.api.test_openapi_fuzz import check_answer
from tests.packages import PackageCache
from tests.servers import run_app_in_thread

EXAMPLES = int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", "10"))
MINUTES = float(os.environ.get("FUZZ_MINUTES", "0"))  # 0: one round (the suite)
SEED = int(os.environ.get("FUZZ_SEED", "20261"))
KEY = "gw-stateful-fuzz-" + hashlib.sha256(str(os.getpid()).encode()).hexdigest()[:12]
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(packages: PackageCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    auth = {"keys": [hashlib.sha256(KEY.encode()).hexdigest()]}  # a bootstrap key: every scope
    with full_gateway(tmp_path_factory.mktemp("stateful"), packages, auth=auth) as (_, base_url):
        document = requests.get(base_url + "/openapi.json", headers=AUTH, timeout=10).json()
        yield schemathesis.openapi.from_dict(document), base_url


def test_stateful_sequences_give_no_server_error(served: tuple[Any, str]) -> None:
    schema, base_url = served
    failures: list[str] = []
    steps: list[str] = []
    session = requests.Session()
    session.headers.update(AUTH)

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url, "session": session, "timeout": 30}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            steps.append(f"{case.method} {case.operation.path} {response.status_code}")
            try:
                check_answer(case.operation, case, response)
            except (AssertionError, ValueError, jsonschema.ValidationError) as exc:
                failures.append(f"{case.method} {case.formatted_path}: {exc}")

    assert len(Machine.bundles) >= 20, sorted(Machine.bundles)  # the links inferred: sequences to draw
    deadline = time.monotonic() + MINUTES * 60
    rounds = 0
    with session:
        while rounds == 0 or time.monotonic() < deadline:
            settings = hypothesis.settings(
                max_examples=EXAMPLES,
                stateful_step_count=8,
                deadline=None,
                database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            hypothesis.seed(SEED + rounds)(Machine)  # each round draws other sequences, reproducibly
            Machine.run(settings=settings)
            rounds += 1
    chained = {step.rsplit(" ", 1)[0] for step in steps}
    print(f"{rounds} round(s), {len(steps)} calls over {len(chained)} operations")
    assert not failures, "\n".join(failures[:50])
    assert len(steps) >= EXAMPLES  # every scenario made at least one call


def test_health_503_body_matches_its_documented_schema(tmp_path: Path) -> None:
    settings = load_settings(
        {"store_uri": f"sqlite:///{tmp_path}/store.db", "workers": 1, "serving.preload": ["models:/absent@prod"]},
        environ={},
    )
    with run_app_in_thread(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as client:
        document = client.get("/openapi.json").json()
        health = client.get("/health")
    assert health.status_code == 503 and health.headers["retry-after"] == "1"
    documented = document["paths"]["/health"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    jsonschema.validate(health.json(), documented)
    assert health.json()["status"] == "unavailable" and "absent" in str(health.json())
