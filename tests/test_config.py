"""Settings precedence and validation: CLI > GATEWAY_* > config file > default."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson
import pytest

from gateway.config import DEFAULT_STORE_URI, ConfigError, load_settings, settings_from_dict, settings_to_dict
from gateway.judge_settings import JudgesSettings
from gateway.limit_settings import LimitsSettings


def test_defaults() -> None:
    settings = load_settings({}, environ={})
    assert settings.store_uri == DEFAULT_STORE_URI
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.workers == (os.cpu_count() or 1)
    assert settings.serving.refresh_interval_s == 2.0
    assert settings.artifact_roots == (Path("./models"),)


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "port: 9001\nhost: 0.0.0.0\nworkers: 3\nserving:\n  default_model: models:/iris@champion\n"
        "  refresh_interval_s: 5\n"
    )
    env = {"GATEWAY_PORT": "9002", "GATEWAY_WORKERS": "4"}
    settings = load_settings({"port": 9003}, environ=env, config_file=config)
    assert settings.port == 9003  # CLI
    assert settings.workers == 4  # env
    assert settings.host == "0.0.0.0"  # file
    assert settings.serving.refresh_interval_s == 5.0
    assert settings.serving.default_model == "models:/iris@champion"
    assert settings.serving.preload == ("models:/iris@champion",)  # the default model is always preloaded
    assert settings.store_uri == DEFAULT_STORE_URI  # default


def test_config_file_from_env_and_design_example_keys(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        """
store_uri: sqlite:///./.gateway/store.db
redis_url: redis://127.0.0.1:6379/0
artifact_roots: [./models]
serving:
  default_model: models:/iris@champion
  preload: [models:/iris@champion]
llm:
  routes:
    - name: gpt-4o-mini
      timeout_s: 60
      retries: 2
      targets:
        - base_url: https://api.openai.com/v1
          model: gpt-4o-mini
          api_key_env: OPENAI_API_KEY
auth:
  keys: []
"""
    )
    settings = load_settings({}, environ={"GATEWAY_CONFIG": str(config)})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.llm.routes["gpt-4o-mini"].targets[0].api_key_env == "OPENAI_API_KEY"
    assert settings.auth.key_hashes == frozenset()
    assert settings.serving.preload == ("models:/iris@champion",)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"GATEWAY_PORT": "eighty"}, ["GATEWAY_PORT", "'eighty'"]),
        ({"GATEWAY_PORT": "70000"}, ["GATEWAY_PORT", "'70000'"]),
        ({"GATEWAY_WORKERS": "0"}, ["GATEWAY_WORKERS", "'0'"]),
        ({"GATEWAY_STORE_URI": "mysql://x/y"}, ["GATEWAY_STORE_URI", "mysql://x/y"]),
        ({"GATEWAY_SERVING_REFRESH_INTERVAL_S": "-1"}, ["GATEWAY_SERVING_REFRESH_INTERVAL_S", "'-1'"]),
        (
            {"GATEWAY_SERVING_DEFAULT_MODEL": "models:/a/b/c"},
            ["GATEWAY_SERVING_DEFAULT_MODEL", "models:/a/b/c"],
        ),
        ({"GATEWAY_LOG_LEVEL": "loud"}, ["GATEWAY_LOG_LEVEL", "'loud'"]),
        ({"GATEWAY_ACCESS_LOG": "maybe"}, ["GATEWAY_ACCESS_LOG", "'maybe'"]),
    ],
)
def test_bad_values_name_key_and_value(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, environ=env)
    for name in names:
        assert name in str(info.value)


def test_unknown_and_malformed_config_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("prot: 8080\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings({}, environ={}, config_file=config)
    config.write_text("serving:\n  max_wait: 3\n")
    with pytest.raises(ConfigError, match="serving.max_wait"):
        load_settings({}, environ={}, config_file=config)
    config.write_text("port: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings({}, environ={}, config_file=config)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings({}, environ={}, config_file=tmp_path / "missing.yaml")


def test_roundtrip_for_worker_processes() -> None:
    settings = load_settings(
        {"serving.preload": ["models:/a@b", "models:/c/2"], "artifact_roots": ["/x", "/y"]}, environ={}
    )
    assert settings_from_dict(settings_to_dict(settings)) == settings
    assert settings.serving.default_model == "models:/a@b"


def test_typed_sections_survive_the_json_that_reaches_worker_processes() -> None:
    """`gateway serve --workers N` hands Settings to each worker as JSON (SETTINGS_ENV in gateway/app.py)."""
    target = {"base_url": "http://127.0.0.1:8001/v1", "model": "llama", "api_key_env": "K", "weight": 2}
    settings = load_settings(
        {
            "workers": 2,
            "serving.models": {"iris": {"max_batch_rows": 8, "max_wait_ms": 1.5}},
            "llm": {
                "capture_max_chars": 100,
                "routes": [
                    {"name": "a", "retries": 0, "targets": [target, {"base_url": "https://b/v1", "model": "m"}]},
                    {
                        "name": "b",
                        "provider": "groq",
                        "timeout_s": 2.5,
                        "targets": [{"base_url": "http://c", "model": "m"}],
                    },
                ],
            },
            "auth": {"keys": [hashlib.sha256(b"one").hexdigest(), hashlib.sha256(b"two").hexdigest()]},
            "judges": {"route": "a", "call_timeout_s": "2.5", "route_concurrency": 3, "max_trace_items": 50},
            "limits": {"reserve_tokens": 64, "redis_failure": "closed", "redis_timeout_s": 0.5},
        },
        environ={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"},
    )
    assert settings.llm.routes["a"].capture_content  # the default from the environment, resolved once here
    assert settings.llm.routes["b"].targets[0].port == 80 and len(settings.auth.key_hashes) == 2
    in_worker = settings_from_dict(orjson.loads(orjson.dumps(settings_to_dict(settings))))
    assert in_worker == settings
    assert isinstance(in_worker.llm.routes["a"].targets, tuple)
    assert isinstance(in_worker.auth.key_hashes, frozenset)
    assert in_worker.judges == JudgesSettings(route="a", call_timeout_s=2.5, route_concurrency=3, max_trace_items=50)
    assert in_worker.limits == LimitsSettings(reserve_tokens=64, redis_failure="closed", redis_timeout_s=0.5)
    assert settings_from_dict(orjson.loads(orjson.dumps(settings_to_dict(load_settings({}, environ={}))))) == (
        load_settings({}, environ={})
    )


def test_a_bad_llm_or_auth_section_stops_load_settings() -> None:
    with pytest.raises(ConfigError, match=r"^llm\.routes\[0\]\.targets: expected a non-empty list"):
        load_settings({"llm": {"routes": [{"name": "r", "targets": []}]}}, environ={})
    with pytest.raises(ConfigError, match=r"^auth\.keys\[0\]: expected the sha256 hex digest"):
        load_settings({}, environ={"GATEWAY_AUTH": '{"keys": ["plain-key"]}'})
    with pytest.raises(ConfigError, match=r"^GATEWAY_LLM \(environment\): expected a mapping, got list\.$"):
        load_settings({}, environ={"GATEWAY_LLM": "[1, 2]"})


def test_the_judges_section_has_defaults_and_names_a_bad_key() -> None:
    assert load_settings({}, environ={}).judges == JudgesSettings(
        route=None, call_timeout_s=60.0, route_concurrency=8, concurrency=16, max_trace_items=1000
    )
    from_env = load_settings({}, environ={"GATEWAY_JUDGES": '{"route": "judge", "concurrency": "4"}'}).judges
    assert (from_env.route, from_env.concurrency) == ("judge", 4)
    with pytest.raises(ConfigError, match=r"^judges: unknown key\(s\) timeout; known keys: route, call_timeout_s"):
        load_settings({"judges": {"timeout": 3}}, environ={})
    with pytest.raises(ConfigError, match=r"^judges\.call_timeout_s: 0 must be a number > 0"):
        load_settings({"judges": {"call_timeout_s": 0}}, environ={})
    with pytest.raises(ConfigError, match=r"^judges\.route_concurrency: 0 is out of range"):
        load_settings({"judges": {"route_concurrency": 0}}, environ={})
    with pytest.raises(ConfigError, match=r"^judges\.route: 3 must be the name of an LLM route"):
        load_settings({"judges": {"route": 3}}, environ={})


def test_the_limits_section_has_defaults_and_names_a_bad_value() -> None:
    assert load_settings({}, environ={}).limits == LimitsSettings(
        reserve_tokens=1000, redis_failure="open", redis_timeout_s=0.25
    )
    with pytest.raises(ConfigError, match=r"^limits\.redis_failure: 'maybe' is not one of open, closed"):
        load_settings({}, environ={"GATEWAY_LIMITS": '{"redis_failure": "maybe"}'})
    with pytest.raises(ConfigError, match=r"^limits: unknown key\(s\) rpm"):
        load_settings({"limits": {"rpm": 3}}, environ={})
    with pytest.raises(ConfigError, match=r"^auth\.refresh_interval_s: 0 must be a number > 0"):
        load_settings({"auth": {"refresh_interval_s": 0}}, environ={})


def test_open_beyond_loopback_only_on_purpose() -> None:
    from gateway.llm.routes_config import AuthSettings, refuse_open_by_accident

    with pytest.raises(ConfigError, match=r"auth\.allow_open"):
        refuse_open_by_accident(AuthSettings(), "0.0.0.0")
    refuse_open_by_accident(AuthSettings(), "127.0.0.1")  # loopback: open is fine
    refuse_open_by_accident(AuthSettings(key_hashes=frozenset({"a" * 64})), "0.0.0.0")
    allowed = load_settings({"auth": {"allow_open": True}}, environ={}).auth
    assert allowed.allow_open
    refuse_open_by_accident(allowed, "0.0.0.0")


def test_registry_section_mlflow_from_the_environment_and_the_file(tmp_path: Path) -> None:
    default = load_settings({}, environ={})
    assert default.registry.kind == "store"
    assert default.registry.cache_dir == Path(".gateway/mlflow-cache")
    # MLflow's own variable names the server when registry.tracking_uri is not set.
    settings = load_settings(
        {"store_uri": f"sqlite:///{tmp_path}/store.db"},
        environ={"GATEWAY_REGISTRY_KIND": "mlflow", "MLFLOW_TRACKING_URI": "http://mlflow:5000/"},
    )
    assert settings.registry.kind == "mlflow"
    assert settings.registry.tracking_uri == "http://mlflow:5000"
    assert settings.registry.cache_dir == tmp_path / "mlflow-cache"  # beside the SQLite store
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "registry:\n  kind: mlflow\n  tracking_uri: https://mlflow.example\n  cache_dir: /var/cache/models\n"
    )
    from_file = load_settings({}, environ={"MLFLOW_TRACKING_URI": "http://other:5000"}, config_file=config)
    assert from_file.registry.tracking_uri == "https://mlflow.example"  # the setting wins over the variable
    assert from_file.registry.cache_dir == Path("/var/cache/models")
    assert settings_from_dict(orjson.loads(orjson.dumps(settings_to_dict(from_file)))) == from_file


def test_registry_section_refusals_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"registry.kind: 'mlflow' needs the MLflow server's address"):
        load_settings({"registry.kind": "mlflow"}, environ={})
    with pytest.raises(ConfigError, match=r"^GATEWAY_REGISTRY_KIND \(environment\): 'unity' is not a registry kind"):
        load_settings({}, environ={"GATEWAY_REGISTRY_KIND": "unity"})
    with pytest.raises(ConfigError, match=r"^registry.tracking_uri \(command line\): 'file:///tmp/mlruns' is not an"):
        load_settings({"registry.tracking_uri": "file:///tmp/mlruns"}, environ={})
    with pytest.raises(ConfigError, match=r"^MLFLOW_TRACKING_URI \(environment\): 'databricks' is not an MLflow"):
        load_settings({"registry.kind": "mlflow"}, environ={"MLFLOW_TRACKING_URI": "databricks"})
    # Our own store ignores MLflow's variable, whatever it names.
    assert load_settings({}, environ={"MLFLOW_TRACKING_URI": "databricks"}).registry.tracking_uri is None
