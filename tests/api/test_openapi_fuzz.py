"""Schemathesis over the generated OpenAPI document, against a real gateway (uvicorn on loopback, every kind of
route live: tests/api/full_gateway.py). For every operation, valid and invalid requests drawn from the document
with a fixed seed: no answer is a 5xx (but the documented 502/503/504 of an LLM route whose upstream is a closed
port), and every error body has the documented shape of the route's family.

Bounded in the suite (FUZZ_EXAMPLES cases per operation and generation mode, default 5); ``make fuzz`` runs
a longer one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import hypothesis
import hypothesis.errors
import jsonschema
import pytest
import requests
import schemathesis

from gateway.api.schemas import ANTHROPIC_ERROR, MLFLOW_ERROR, OPENAI_ERROR
from tests.api.full_gateway import full_gateway
from tests.packages import PackageCache

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
SEED = int(os.environ.get("FUZZ_SEED", "20260"))
ERROR_SCHEMAS = {"MlflowError": MLFLOW_ERROR, "OpenAIError": OPENAI_ERROR, "AnthropicError": ANTHROPIC_ERROR}
# A route to a closed loopback port answers these (documented); any other 5xx is a bug.
DEPENDENCY_STATUSES = {502, 503, 504}


@pytest.fixture(scope="module")
def served(packages: PackageCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with full_gateway(tmp_path_factory.mktemp("fuzz"), packages) as (_, base_url):
        document = requests.get(base_url + "/openapi.json", timeout=10).json()
        yield schemathesis.openapi.from_dict(document), base_url


def _error_schema(operation: Any) -> dict[str, Any]:
    """The error body schema the document gives this operation (its family's)."""
    for code, response in operation.definition.raw["responses"].items():
        if int(code) >= 400:
            ref: str = response["content"]["application/json"]["schema"]["$ref"]
            return dict(ERROR_SCHEMAS[ref.rsplit("/", 1)[1]])
    raise AssertionError(f"no error response documented for {operation.label}")


def check_answer(operation: Any, case: Any, response: requests.Response) -> None:
    """No 5xx but a documented dependency failure of an LLM route; an error body in its documented shape (the
    status's own schema when the document gives one, as /health's 503; else the family's error)."""
    status = response.status_code
    what = f"{case.method} {case.formatted_path} -> {status}: {response.text[:300]}"
    family_schema = _error_schema(operation)
    own = _own_error_schema(operation, status)
    if own is not None:
        jsonschema.validate(response.json(), own)
        return
    if status >= 500:
        assert family_schema in (dict(OPENAI_ERROR), dict(ANTHROPIC_ERROR)) and status in DEPENDENCY_STATUSES, what
    if status >= 400:
        body = response.json()
        try:
            jsonschema.validate(body, family_schema)
        except jsonschema.ValidationError:
            # A path or method no route takes is the router's answer, in MLflow's shape for every path.
            assert status in (404, 405), what
            jsonschema.validate(body, dict(MLFLOW_ERROR))


def _own_error_schema(operation: Any, status: int) -> dict[str, Any] | None:
    """The schema the document gives this error status when it is not a reference to an error family's."""
    response = operation.definition.raw["responses"].get(str(status))
    if status < 400 or response is None:
        return None
    schema = response["content"]["application/json"]["schema"]
    return None if "$ref" in schema else dict(schema)


def _fuzz(operation: Any, mode: Any, base_url: str, session: requests.Session, failures: list[str]) -> int:
    """Run ``EXAMPLES`` cases of ``operation`` in ``mode``; what fails is added to ``failures``."""
    calls = 0

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal calls
        calls += 1
        response = case.call(base_url=base_url, session=session, timeout=30)
        try:
            check_answer(operation, case, response)
        except (AssertionError, ValueError, jsonschema.ValidationError) as exc:
            failures.append(f"{mode.name} {operation.label}: {exc}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # Nothing to make invalid (no parameters and no body): the positive cases covered the operation.
        assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    return calls


def test_no_server_errors_and_documented_error_bodies(served: tuple[Any, str]) -> None:
    schema, base_url = served
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    failures: list[str] = []
    with requests.Session() as session:
        calls = sum(
            _fuzz(operation, mode, base_url, session, failures)
            for operation in operations
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
        )
    print(f"{calls} cases over {len(operations)} operations")
    assert not failures, "\n".join(failures)
    assert calls >= EXAMPLES * len(operations)
