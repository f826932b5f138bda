"""Batching settings: env vars and config keys, precedence (per-model config > version tag > serving
default), tag validation naming the tag; and the ONNX thread plan (spinning off with several workers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings
from gateway.errors import InvalidPackage
from gateway.serving.batch_settings import BatchSettings, resolve_batch_settings
from gateway.serving.package import read_package
from gateway.serving.runtimes.onnx import SPINNING_ENTRIES, build_session_options
from tests.packages import PackageCache


def test_defaults() -> None:
    serving = load_settings({}, environ={}).serving
    assert (serving.batching, serving.max_batch_rows, serving.max_wait_ms) == (True, 256, 0.0)
    assert (serving.max_queue_rows, serving.max_queue_requests, serving.request_timeout_s) == (8192, 1024, 60.0)
    assert resolve_batch_settings("m", 1, {}, serving) == BatchSettings(
        sources={k: f"serving.{k}" for k in BatchSettings().describe()}
    )


def test_every_setting_has_an_env_var() -> None:
    serving = load_settings(
        {},
        environ={
            "GATEWAY_SERVING_BATCHING": "false",
            "GATEWAY_SERVING_MAX_BATCH_ROWS": "64",
            "GATEWAY_SERVING_MAX_WAIT_MS": "1.5",
            "GATEWAY_SERVING_MAX_QUEUE_ROWS": "100",
            "GATEWAY_SERVING_MAX_QUEUE_REQUESTS": "10",
            "GATEWAY_SERVING_REQUEST_TIMEOUT_S": "2.5",
            "GATEWAY_SERVING_MODELS": '{"iris": {"max_batch_rows": 8, "batching": true}}',
        },
    ).serving
    assert (serving.batching, serving.max_batch_rows, serving.max_wait_ms) == (False, 64, 1.5)
    assert (serving.max_queue_rows, serving.max_queue_requests, serving.request_timeout_s) == (100, 10, 2.5)
    assert serving.models == {"iris": {"max_batch_rows": 8, "batching": True}}


def test_models_mapping_from_a_yaml_config_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "serving:\n  max_wait_ms: 2\n  models:\n    iris:\n      max_wait_ms: 0\n      request_timeout_s: 5\n"
    )
    serving = load_settings({}, environ={}, config_file=config).serving
    assert serving.max_wait_ms == 2.0 and serving.models == {"iris": {"max_wait_ms": 0.0, "request_timeout_s": 5.0}}


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"GATEWAY_SERVING_MAX_BATCH_ROWS": "0"}, ["GATEWAY_SERVING_MAX_BATCH_ROWS", "out of range"]),
        ({"GATEWAY_SERVING_BATCHING": "maybe"}, ["GATEWAY_SERVING_BATCHING", "boolean"]),
        ({"GATEWAY_SERVING_REQUEST_TIMEOUT_S": "0"}, ["GATEWAY_SERVING_REQUEST_TIMEOUT_S", "> 0"]),
        ({"GATEWAY_SERVING_MODELS": "{iris: {max_batch_rows: lots}}"}, ["'iris'", "max_batch_rows", "'lots'"]),
        ({"GATEWAY_SERVING_MODELS": "{iris: {max_batch: 3}}"}, ["'iris'", "unknown setting", "max_batch"]),
        ({"GATEWAY_SERVING_MODELS": "{iris: 3}"}, ["'iris'", "mapping"]),
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, environ=environ)
    for word in words:
        assert word in str(info.value)


def test_precedence_model_config_over_tags_over_serving_defaults() -> None:
    serving = load_settings(
        {"serving.max_batch_rows": 128, "serving.max_queue_rows": 500,
         "serving.models": {"iris": {"max_batch_rows": 16, "request_timeout_s": 3}}},
        environ={},
    ).serving  # fmt: skip
    tags = {"gateway.max_batch_rows": "32", "gateway.max_wait_ms": "2", "gateway.batching": "true", "other": "x"}
    settings = resolve_batch_settings("iris", 3, tags, serving)
    assert settings.max_batch_rows == 16 and settings.sources["max_batch_rows"] == "serving.models.iris.max_batch_rows"
    assert settings.max_wait_ms == 2.0 and settings.sources["max_wait_ms"] == "tag gateway.max_wait_ms"
    assert settings.max_queue_rows == 500 and settings.sources["max_queue_rows"] == "serving.max_queue_rows"
    assert settings.request_timeout_s == 3.0
    described = settings.describe()
    assert described["batching"] == {"value": True, "source": "tag gateway.batching"}
    # Another model gets the tags of its own version and the server defaults.
    other = resolve_batch_settings("wine", 1, {"gateway.max_queue_requests": "7"}, serving)
    assert (other.max_batch_rows, other.max_queue_requests) == (128, 7)


@pytest.mark.parametrize(
    ("tag", "value"),
    [("gateway.max_batch_rows", "0"), ("gateway.max_wait_ms", "soon"), ("gateway.batching", "perhaps"),
     ("gateway.max_queue_rows", "1.5"), ("gateway.max_queue_requests", "-1")],
)  # fmt: skip
def test_an_invalid_tag_names_itself(tag: str, value: str) -> None:
    serving = load_settings({}, environ={}).serving
    with pytest.raises(InvalidPackage) as info:
        resolve_batch_settings("iris", 2, {tag: value}, serving)
    assert tag in info.value.message and repr(value) in info.value.message
    assert "'iris' version 2" in info.value.message


def test_several_workers_turn_onnx_spinning_off(packages: PackageCache) -> None:
    assert load_settings({"workers": 2}, environ={}).onnx_allow_spinning() is False
    assert load_settings({"workers": 1}, environ={}).onnx_allow_spinning() is True
    pkg = read_package(packages.get("onnx_classifier"))
    quiet = build_session_options(pkg, intra_op_num_threads=1, allow_spinning=False)
    assert quiet.intra_op_num_threads == 1
    for entry in SPINNING_ENTRIES:
        assert quiet.get_session_config_entry(entry) == "0"
    default = build_session_options(pkg, intra_op_num_threads=2, allow_spinning=True)
    assert default.intra_op_num_threads == 2
    with pytest.raises(RuntimeError, match="does not have configuration"):  # onnxruntime's default stays
        default.get_session_config_entry(SPINNING_ENTRIES[0])
