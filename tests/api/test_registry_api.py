"""The registry admin API on a real gateway: models, versions, aliases, validation at registration,
and /invocations following an alias move without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.api.conftest import ServedGateway
from tests.packages import IRIS_COLUMNS, break_package, copy_package

BODY = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}


def test_model_lifecycle_and_alias_move(served: ServedGateway) -> None:
    client = served.client
    created = client.post("/api/registry/models", json={"name": "flowers", "description": "d", "tags": {"t": "1"}})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "flowers"
    again = client.post("/api/registry/models", json={"name": "flowers"})
    assert again.status_code == 409
    assert "flowers" in again.json()["message"]

    v1 = client.post(
        "/api/registry/models/flowers/versions",
        json={"source": str(served.packages["sklearn_skops"]), "description": "first"},
    )
    assert v1.status_code == 201, v1.text
    assert v1.json()["version"] == 1 and v1.json()["flavor"] == "python_function"
    v2 = client.post(
        "/api/registry/models/flowers/versions",
        json={"source": "file://" + str(served.packages["sklearn_proba"])},
    )
    assert v2.status_code == 201, v2.text
    assert v2.json()["version"] == 2

    assert client.put("/api/registry/models/flowers/aliases/prod", json={"version": 1}).status_code == 200
    first = client.post("/models/flowers@prod/invocations", json=BODY)
    assert first.status_code == 200, first.text
    assert first.headers["x-model-version"] == "1"
    assert first.json() == {"predictions": [0]}

    # Moving the alias needs no restart: version 1 answers until version 2 is loaded, then 2 does.
    assert client.put("/api/registry/models/flowers/aliases/prod", json={"version": 2}).status_code == 200
    deadline = time.monotonic() + 15
    second = client.post("/models/flowers@prod/invocations", json=BODY)
    while second.headers["x-model-version"] == "1" and time.monotonic() < deadline:
        assert second.status_code == 200, second.text
        time.sleep(0.02)
        second = client.post("/models/flowers@prod/invocations", json=BODY)
    assert second.status_code == 200, second.text
    assert second.headers["x-model-version"] == "2"
    assert len(second.json()["predictions"][0]) == 3  # predict_proba rows

    by_alias = client.get("/api/registry/models/flowers@prod")
    assert by_alias.status_code == 200 and by_alias.json()["version"] == 2
    model = client.get("/api/registry/models/flowers").json()
    assert [v["version"] for v in model["versions"]] == [1, 2]
    assert model["aliases"] == {"prod": 2}
    assert client.get("/api/registry/models/flowers/versions/1").json()["description"] == "first"
    assert "flowers" in [m["name"] for m in client.get("/api/registry/models").json()["models"]]

    assert client.delete("/api/registry/models/flowers/aliases/prod").status_code == 204
    gone = client.post("/models/flowers@prod/invocations", json=BODY)
    assert gone.status_code == 404
    assert "prod" in gone.json()["message"]
    missing = client.delete("/api/registry/models/flowers/aliases/prod")
    assert missing.status_code == 404


@pytest.mark.parametrize("alias", ["latest", "v3", "V12", "bad alias"])
def test_reserved_and_invalid_aliases(served: ServedGateway, alias: str) -> None:
    response = served.client.put(f"/api/registry/models/sklearn_skops/aliases/{alias}", json={"version": 1})
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert alias in response.json()["message"]


def test_alias_to_missing_version(served: ServedGateway) -> None:
    response = served.client.put("/api/registry/models/sklearn_skops/aliases/x", json={"version": 99})
    assert response.status_code == 404
    assert "99" in response.json()["message"]


def test_registration_validates_the_package(served: ServedGateway, tmp_path: Path) -> None:
    client = served.client
    root = served.packages["sklearn_skops"].parent
    assert client.post("/api/registry/models", json={"name": "broken"}).status_code == 201
    cases = {
        "no_mlmodel": "MLmodel",
        "unknown_flavor": "flavor",
        "missing_model_file": "model",
        "loader_not_installed": "gateway_test_missing_loader",
    }
    for how, word in cases.items():
        path = break_package(copy_package(served.packages["sklearn_skops"], root / f"broken_{how}"), how)  # type: ignore[arg-type]
        response = client.post("/api/registry/models/broken/versions", json={"source": str(path)})
        assert response.status_code == 400, (how, response.text)
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert word in response.json()["message"], (how, response.json()["message"])

    outside = copy_package(served.packages["sklearn_skops"], tmp_path / "outside")
    for source in (str(outside), str(root / ".." / ".." / outside.name), "s3://bucket/model"):
        response = client.post("/api/registry/models/broken/versions", json={"source": source})
        assert response.status_code == 400, response.text
    escape = root / "escape_link"
    escape.symlink_to(outside)
    response = client.post("/api/registry/models/broken/versions", json={"source": str(escape)})
    assert response.status_code == 400
    assert "outside the artifact roots" in response.json()["message"]

    assert client.get("/api/registry/models/broken").json()["versions"] == []
    nomodel = client.post(
        "/api/registry/models/nomodel/versions", json={"source": str(served.packages["sklearn_skops"])}
    )
    assert nomodel.status_code == 404
    assert "nomodel" in nomodel.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "words"),
    [
        ("POST", "/api/registry/models", {"description": "no name"}, ["name"]),
        ("POST", "/api/registry/models", {"name": "bad name!"}, ["bad name!"]),
        ("POST", "/api/registry/models", {"name": "t", "tags": {"a": 1}}, ["tags"]),
        ("POST", "/api/registry/models/sklearn_skops/versions", {}, ["source"]),
        ("PUT", "/api/registry/models/sklearn_skops/aliases/x", {}, ["version"]),
        ("PUT", "/api/registry/models/sklearn_skops/aliases/x", {"version": "one"}, ["one"]),
        ("GET", "/api/registry/models/sklearn_skops/versions/0", None, ["0"]),
    ],
)
def test_bad_admin_requests_name_the_field(
    served: ServedGateway, method: str, path: str, body: object, words: list[str]
) -> None:
    response = served.client.request(method, path, json=body)
    assert response.status_code == 400, response.text
    for word in words:
        assert word in response.json()["message"]


HUGE = 10**30  # past any 64-bit integer: once an OverflowError and a 500 from the store


@pytest.mark.parametrize(
    ("method", "path", "body", "words"),
    [
        # a JSON parser reads such a number as a float (1e+30): refused as not a whole number either way
        ("PUT", "/api/registry/models/sklearn_skops/aliases/a", {"version": HUGE}, ["1e+30", "up to"]),
        ("PUT", "/api/registry/models/sklearn_skops/aliases/a", {"version": 1.5}, ["1.5"]),  # once taken as 1
        ("PUT", "/api/registry/models/sklearn_skops/aliases/a", {"version": True}, ["True"]),
        ("GET", f"/api/registry/models/sklearn_skops/versions/{HUGE}", None, [str(HUGE)]),
        ("POST", f"/models/sklearn_skops/versions/{HUGE}/invocations", BODY, [str(HUGE)]),
        ("GET", "/api/registry/models/sklearn_skops/versions/\u00b2", None, ["\u00b2"]),  # isdigit(), not int()
        ("POST", "/api/registry/models/sklearn_skops/versions", {"source": "/models/a\u0000b"}, ["NUL"]),
        ("POST", "/api/registry/models/sklearn_skops/versions", {"source": "/x" * 2600}, ["5200 characters"]),
    ],
)
def test_out_of_range_input_is_a_400_and_the_connection_stays_usable(
    served: ServedGateway, method: str, path: str, body: object, words: list[str]
) -> None:
    response = served.client.request(method, path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    for word in words:
        assert word in response.json()["message"], response.json()["message"]
    assert len(response.json()["message"]) < 400  # a long source is not echoed whole
    assert served.client.get("/ping").status_code == 200  # the same kept-alive connection still answers


def test_a_source_name_too_long_for_the_file_system_is_a_400(served: ServedGateway) -> None:
    source = str(served.packages["sklearn_skops"].parent / ("a" * 300))  # inside the roots, one 300-byte name
    response = served.client.post("/api/registry/models/sklearn_skops/versions", json={"source": source})
    assert response.status_code == 400, response.text
    assert "File name too long" in response.json()["message"]
