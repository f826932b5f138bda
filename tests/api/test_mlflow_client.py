"""MLflow's own client against a real gateway (uvicorn on loopback): ``MlflowClient(registry_uri=<gateway>)`` on
the model registry, ``mlflow.genai.register_prompt`` / ``load_prompt`` on the prompt registry, and what MLflow's
server answers when something is wrong (the error codes the client raises, the statuses on the wire)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.config import load_settings
from tests.packages import IRIS_COLUMNS, PackageCache, iris_frame

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from tests.servers import run_gateway_in_thread  # noqa: E402

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [ROW]}}
KEY = "gw-test-mlflow-key"
API = "/api/2.0/mlflow"


@dataclass
class Gateway:
    url: str
    http: httpx.Client
    packages: PackageCache

    def client(self) -> Any:
        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    def source(self, kind: str) -> str:
        return str(self.packages.get(kind))  # type: ignore[arg-type]


def _settings(root: Path, packages: PackageCache, **extra: Any) -> Any:
    return load_settings(
        {"store_uri": f"sqlite:///{root}/store.db", "artifact_roots": [str(packages.root)], "workers": 1, **extra},
        environ={},
    )


@pytest.fixture(scope="module")
def gateway(packages: PackageCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("mlflow-client")
    with (
        pytest.MonkeyPatch.context() as env,
        run_gateway_in_thread(_settings(root, packages)) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        # The fluent API (mlflow.genai.*, mlflow.pyfunc.load_model("models:/...")) reads these.
        env.setenv("MLFLOW_TRACKING_URI", url)
        env.setenv("MLFLOW_REGISTRY_URI", url)
        env.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield Gateway(url, http, packages)


def _error_code(call: Any) -> str:
    with pytest.raises(MlflowException) as caught:
        call()
    return str(caught.value.error_code)


def _serving_version(gateway: Gateway, ref: str, version: str) -> httpx.Response:
    """POST to /models/REF/invocations until the answer comes from ``version`` (bounded), then that answer."""
    deadline = time.monotonic() + 15
    while True:
        answer = gateway.http.post(f"/models/{ref}/invocations", json=BODY)
        if answer.headers.get("x-model-version") == version or time.monotonic() > deadline:
            return answer
        time.sleep(0.02)


# -- the model registry ---------------------------------------------------------------------------------------


def test_models_versions_and_aliases_through_mlflow_client(gateway: Gateway) -> None:
    client = gateway.client()
    created = client.create_registered_model("iris", tags={"team": "ml"}, description="Iris")
    assert (created.name, created.description, created.tags) == ("iris", "Iris", {"team": "ml"})
    assert created.creation_timestamp == created.last_updated_timestamp > 1_600_000_000_000  # epoch ms

    v1 = client.create_model_version("iris", gateway.source("onnx_classifier"), description="onnx", tags={"k": "1"})
    v2 = client.create_model_version("iris", "file://" + gateway.source("sklearn_skops"))
    assert (v1.version, v1.status, v1.current_stage, v1.description, v1.tags) == (
        "1",
        "READY",
        "None",
        "onnx",
        {"k": "1"},
    )
    assert (v2.version, v2.run_id, v2.run_link) == ("2", "", "")
    assert v2.source == gateway.source("sklearn_skops")

    client.set_registered_model_alias("iris", "champion", "1")
    assert client.get_model_version_by_alias("iris", "champion").version == "1"
    model = client.get_registered_model("iris")
    assert model.aliases == {"champion": "1"}
    assert [v.version for v in model.latest_versions] == ["2"]
    assert [v.version for v in client.get_latest_versions("iris")] == ["2"]

    # A version registered through MLflow's client serves at once, and follows the alias.
    first = _serving_version(gateway, "iris@champion", "1")
    assert first.status_code == 200 and first.json()["predictions"]["label"] == [0]
    client.set_registered_model_alias("iris", "champion", 2)
    second = _serving_version(gateway, "iris@champion", "2")
    assert second.status_code == 200 and second.json() == {"predictions": [0]}

    # mlflow.pyfunc resolves models:/iris@champion through the gateway (get-download-uri) to the same package.
    assert client.get_model_version_download_uri("iris", "2") == gateway.source("sklearn_skops")
    loaded = mlflow.pyfunc.load_model("models:/iris@champion")
    assert np.asarray(loaded.predict(iris_frame(slice(0, 1)))).tolist() == second.json()["predictions"]

    client.update_registered_model("iris", description="Iris, v2")
    client.update_model_version("iris", "2", description="sklearn")
    client.set_registered_model_tag("iris", "owner", "alice")
    client.delete_registered_model_tag("iris", "team")
    client.set_model_version_tag("iris", "2", "stage", "candidate")
    client.delete_model_version_tag("iris", "1", "k")
    model = client.get_registered_model("iris")
    assert (model.description, model.tags) == ("Iris, v2", {"owner": "alice"})
    assert client.get_model_version("iris", "2").description == "sklearn"
    assert client.get_model_version("iris", "2").tags == {"stage": "candidate"}
    assert client.get_model_version("iris", "1").tags == {}

    client.delete_registered_model_alias("iris", "champion")
    assert _error_code(lambda: client.get_model_version_by_alias("iris", "champion")) == "RESOURCE_DOES_NOT_EXIST"
    gone = gateway.http.post("/models/iris@champion/invocations", json=BODY)
    assert gone.status_code == 404 and "champion" in gone.json()["message"]
    # Our own registry API reads the same rows.
    ours = gateway.http.get("/api/registry/models/iris").json()
    assert ours["description"] == "Iris, v2" and [v["version"] for v in ours["versions"]] == [1, 2]


def test_search_with_the_filters_mlflow_sends(gateway: Gateway) -> None:
    client = gateway.client()
    for name, team in (("search-iris", "ml"), ("search-iris-b", "ml"), ("search-wine", "data")):
        client.create_registered_model(name, tags={"team": team})
        client.create_model_version(name, gateway.source("onnx_classifier"))
    client.create_model_version("search-iris", gateway.source("onnx_label_only"))

    def names(filter_string: str, **kwargs: Any) -> list[str]:
        return [m.name for m in client.search_registered_models(filter_string, **kwargs)]

    assert names("name='search-iris'") == ["search-iris"]
    assert names("name LIKE 'search-ir%'") == ["search-iris", "search-iris-b"]
    assert names("name ILIKE 'SEARCH-W%'") == ["search-wine"]
    assert names("name LIKE 'search-%' AND tags.team = 'ml'") == ["search-iris", "search-iris-b"]
    assert names("tags.`team` != 'ml' AND name LIKE 'search%'") == ["search-wine"]
    assert names("name LIKE 'search-%'", order_by=["name DESC"]) == ["search-wine", "search-iris-b", "search-iris"]
    first = client.search_registered_models("name LIKE 'search-%'", max_results=2)
    assert [m.name for m in first] == ["search-iris", "search-iris-b"] and first.token
    rest = client.search_registered_models("name LIKE 'search-%'", max_results=2, page_token=first.token)
    assert [m.name for m in rest] == ["search-wine"] and not rest.token

    versions = client.search_model_versions("name='search-iris'")
    assert [(v.name, v.version) for v in versions] == [("search-iris", "2"), ("search-iris", "1")]
    newer = client.search_model_versions("name LIKE 'search-%' AND version_number > 1")
    assert [(v.name, v.version) for v in newer] == [("search-iris", "2")]
    assert [v.name for v in client.search_model_versions("name IN ('search-wine', 'nope')")] == ["search-wine"]
    assert _error_code(lambda: client.search_registered_models("name ~ 'x'")) == "INVALID_PARAMETER_VALUE"
    assert _error_code(lambda: client.search_model_versions("owner = 'x'")) == "INVALID_PARAMETER_VALUE"


def test_errors_have_mlflow_codes_and_statuses(gateway: Gateway) -> None:
    client = gateway.client()
    assert _error_code(lambda: client.get_registered_model("no-such-model")) == "RESOURCE_DOES_NOT_EXIST"
    missing = gateway.http.get(f"{API}/registered-models/get", params={"name": "no-such-model"})
    assert missing.status_code == 404
    assert missing.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "Registered model 'no-such-model' not found.",
    }

    client.create_registered_model("errors")
    assert _error_code(lambda: client.create_registered_model("errors")) == "RESOURCE_ALREADY_EXISTS"
    again = gateway.http.post(f"{API}/registered-models/create", json={"name": "errors"})
    assert again.status_code == 400 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"  # MLflow's status
    assert _error_code(lambda: client.get_model_version("errors", "1")) == "RESOURCE_DOES_NOT_EXIST"
    assert _error_code(lambda: client.get_model_version("errors", "one")) == "INVALID_PARAMETER_VALUE"
    outside = _error_code(lambda: client.create_model_version("errors", "/etc/passwd"))
    assert outside == "INVALID_PARAMETER_VALUE"
    assert _error_code(lambda: client.set_registered_model_alias("errors", "latest", "1")) == "INVALID_PARAMETER_VALUE"

    no_name = gateway.http.post(f"{API}/registered-models/create", json={})
    assert no_name.status_code == 400
    assert no_name.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "Missing value for required parameter 'name'.",
    }
    form = gateway.http.post(
        f"{API}/registered-models/create", content=b"name=x", headers={"Content-Type": "text/plain"}
    )
    assert form.status_code == 415 and form.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
    # An MLflow endpoint not served here: MLflow's 404 ENDPOINT_NOT_FOUND, which the client raises as such.
    assert _error_code(lambda: client.rename_registered_model("errors", "renamed")) == "ENDPOINT_NOT_FOUND"
    unknown = gateway.http.post(f"{API}/model-versions/transition-stage", json={})
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    # MLflow's server reads a GET's JSON body when it has no query string; so do we.
    by_body = gateway.http.request("GET", f"{API}/registered-models/get", json={"name": "errors"})
    assert by_body.status_code == 200 and by_body.json()["registered_model"]["name"] == "errors"


def test_deleting_versions_and_models(gateway: Gateway) -> None:
    client = gateway.client()
    client.create_registered_model("doomed")
    for _ in range(2):
        client.create_model_version("doomed", gateway.source("sklearn_skops"))
    client.set_registered_model_alias("doomed", "prod", "2")
    assert _serving_version(gateway, "doomed@prod", "2").status_code == 200
    assert gateway.http.post("/models/doomed/versions/2/invocations", json=BODY).status_code == 200

    client.delete_model_version("doomed", "2")  # its alias goes with it; its number is never given again
    assert _error_code(lambda: client.get_model_version("doomed", "2")) == "RESOURCE_DOES_NOT_EXIST"
    assert client.get_registered_model("doomed").aliases == {}
    assert client.create_model_version("doomed", gateway.source("sklearn_skops")).version == "3"
    assert [v.version for v in client.search_model_versions("name = 'doomed'")] == ["3", "1"]
    deadline = time.monotonic() + 15
    while (status := gateway.http.post("/models/doomed/versions/2/invocations", json=BODY).status_code) == 200:
        assert time.monotonic() < deadline, "a deleted version kept serving"
        time.sleep(0.02)
    assert status == 404

    client.delete_registered_model("doomed")
    assert _error_code(lambda: client.get_registered_model("doomed")) == "RESOURCE_DOES_NOT_EXIST"
    assert gateway.http.post("/models/doomed/versions/1/invocations", json=BODY).status_code == 404
    # Registered again, it counts from 1 (as in MLflow) and serves its new package, not the old one.
    client.create_registered_model("doomed")
    assert client.create_model_version("doomed", gateway.source("sklearn_proba")).version == "1"
    fresh = gateway.http.post("/models/doomed/versions/1/invocations", json=BODY)
    assert fresh.status_code == 200 and len(fresh.json()["predictions"][0]) == 3  # predict_proba rows


# -- prompts ---------------------------------------------------------------------------------------------------


def test_register_prompt_then_load_prompt_equals_render(gateway: Gateway) -> None:
    registered = mlflow.genai.register_prompt(
        "mlflow-qa",
        "Answer {{ question }} in {{ style }} words.",
        commit_message="first",
        tags={"team": "support"},
        model_config={"model_name": "gpt-4o-mini", "temperature": 0.2},
        response_format={"type": "object", "properties": {"answer": {"type": "string"}}},
    )
    assert (registered.name, registered.version, registered.commit_message) == ("mlflow-qa", 1, "first")
    mlflow.genai.set_prompt_alias("mlflow-qa", "production", 1)
    mlflow.genai.register_prompt("mlflow-qa", "Say {{ question }}.", commit_message="second")

    loaded = mlflow.genai.load_prompt("prompts:/mlflow-qa@production", cache_ttl_seconds=0)
    assert loaded.version == 1 and loaded.template == "Answer {{ question }} in {{ style }} words."
    assert loaded.model_config == {"model_name": "gpt-4o-mini", "temperature": 0.2}
    assert loaded.response_format == {"type": "object", "properties": {"answer": {"type": "string"}}}
    values = {"question": "why is the sky blue", "style": "few"}
    rendered = gateway.http.post("/api/prompts/mlflow-qa@production/render", json={"variables": values})
    assert rendered.status_code == 200, rendered.text
    assert loaded.format(**values) == rendered.json()["text"] == "Answer why is the sky blue in few words."
    assert mlflow.genai.load_prompt("mlflow-qa", cache_ttl_seconds=0).version == 2  # no version: the latest
    assert mlflow.genai.load_prompt("prompts:/mlflow-qa/2").format(question="hi") == "Say hi."

    # The same rows our prompt API reads: versions, commit messages, tags, config, the alias.
    ours = gateway.http.get("/api/prompts/mlflow-qa").json()
    assert ours["tags"]["team"] == "support"
    assert [(v["version"], v["commit_message"]) for v in ours["versions"]] == [(1, "first"), (2, "second")]
    assert ours["versions"][0]["model_config"] == {"model_name": "gpt-4o-mini", "temperature": 0.2}
    assert ours["versions"][0]["tags"] == {"team": "support"}
    assert ours["aliases"] == {"production": 1}
    assert "mlflow-qa" in [p.name for p in mlflow.genai.search_prompts("name LIKE 'mlflow-%'")]
    assert [v.version for v in gateway.client().search_prompt_versions("mlflow-qa")] == [2, 1]
    # Prompts stay out of a model search that does not ask for them, as in MLflow's server.
    assert "mlflow-qa" not in [m.name for m in gateway.client().search_registered_models()]


def test_chat_prompts_and_prompts_made_by_our_api(gateway: Gateway) -> None:
    chat = [
        {"role": "system", "content": "You answer as {{ persona }}."},
        {"role": "user", "content": "{{ question }}"},
    ]
    mlflow.genai.register_prompt("mlflow-chat", chat)
    values = {"persona": "a pirate", "question": "where is the gold?"}
    rendered = gateway.http.post("/api/prompts/mlflow-chat/render", json={"variables": values}).json()
    assert mlflow.genai.load_prompt("prompts:/mlflow-chat/1").format(**values) == rendered["messages"]

    made_here = gateway.http.post("/api/prompts/ours/versions", json={"template": "Hello {{ name }}"})
    assert made_here.status_code == 201, made_here.text
    assert gateway.http.put("/api/prompts/ours/aliases/live", json={"version": 1}).status_code == 200
    assert mlflow.genai.load_prompt("prompts:/ours@live", cache_ttl_seconds=0).format(name="Ada") == "Hello Ada"


def test_prompt_rules(gateway: Gateway) -> None:
    client = gateway.client()
    client.create_registered_model("shared-name")
    with pytest.raises(MlflowException, match="same name as an existing model"):
        mlflow.genai.register_prompt("shared-name", "Hi")
    mlflow.genai.register_prompt("fixed", "Hi {{ name }}")
    assert _error_code(lambda: client.create_registered_model("fixed")) == "RESOURCE_ALREADY_EXISTS"
    # Versions are immutable here (MLflow would let these change).
    with pytest.raises(MlflowException, match="immutable") as caught:
        mlflow.genai.set_prompt_version_tag("fixed", 1, "k", "v")
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert _error_code(lambda: client.delete_prompt_version("fixed", "1")) == "INVALID_PARAMETER_VALUE"
    # A template this gateway refuses (Jinja control syntax) leaves no empty prompt behind: the client's
    # clean-up deletes the prompt it created, which is allowed while it has no version.
    with pytest.raises(MlflowException, match="Jinja2"):
        mlflow.genai.register_prompt("jinja", "{% if x %}yes{% endif %}")
    assert gateway.http.get("/api/prompts/jinja").status_code == 404
    assert (
        _error_code(lambda: mlflow.genai.load_prompt("prompts:/no-such-prompt@production")) == "RESOURCE_DOES_NOT_EXIST"
    )


def test_with_gateway_keys_the_client_sends_its_token(packages: PackageCache, tmp_path: Path) -> None:
    settings = _settings(tmp_path, packages, auth={"keys": [hashlib.sha256(KEY.encode()).hexdigest()]})
    with run_gateway_in_thread(settings) as url, pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        env.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        assert _error_code(lambda: client.create_registered_model("locked")) == "UNAUTHENTICATED"
        env.setenv("MLFLOW_TRACKING_TOKEN", KEY)  # sent as Authorization: Bearer <token>
        assert client.create_registered_model("locked").name == "locked"
        env.setenv("MLFLOW_TRACKING_URI", url)
        env.setenv("MLFLOW_REGISTRY_URI", url)
        mlflow.genai.register_prompt("locked-prompt", "Hi {{ name }}")
        assert mlflow.genai.load_prompt("prompts:/locked-prompt/1").format(name="Bo") == "Hi Bo"
