"""The llm and auth config sections: design.md's keys work, a bad value names its key, the CLI exits 2."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_settings
from gateway.llm.routes_config import LlmSettings, parse_auth_settings, parse_llm_settings
from tests.servers import GATEWAY_BIN, free_port

DESIGN_EXAMPLE = """
llm:
  routes:
    - name: gpt-4o-mini
      timeout_s: 60
      retries: 2
      targets:
        - base_url: https://api.openai.com/v1
          model: gpt-4o-mini
          api_key_env: OPENAI_API_KEY
        - base_url: http://127.0.0.1:8001/v1
          model: llama-3.1-8b
auth:
  keys: []
"""


def test_design_example_parses(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(DESIGN_EXAMPLE)
    settings = load_settings(config_file=config, environ={})

    route = settings.llm.routes["gpt-4o-mini"]
    assert (route.timeout_s, route.retries, route.read_timeout_s, route.connect_timeout_s) == (60, 2, 60, 5)
    first, second = route.targets
    assert (first.base_url, first.model, first.api_key_env, first.provider) == (
        "https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY", "openai",
    )  # fmt: skip
    assert (first.host, first.port, second.host, second.port) == ("api.openai.com", 443, "127.0.0.1", 8001)
    assert second.api_key_env is None and not route.weighted and not route.capture_content
    assert settings.auth.key_hashes == frozenset()


def _route(**changes: Any) -> dict[str, Any]:
    route: dict[str, Any] = {"name": "r", "targets": [{"base_url": "http://127.0.0.1:1/v1", "model": "m"}]}
    route.update(changes)
    return {"routes": [route]}


@pytest.mark.parametrize(
    ("llm", "fragment"),
    [
        (_route(targets=[{"base_url": "http://a/v1", "model": "m"}, {"base_url": "ftp://x", "model": "m"}]),
         "llm.routes[0].targets[1].base_url: 'ftp://x' is not an http(s) URL"),
        (_route(targets=[{"base_url": "http://a/v1"}]), "llm.routes[0].targets[0].model: required"),
        (_route(targets=[]), "llm.routes[0].targets: expected a non-empty list"),
        (_route(timeout_s=0), "llm.routes[0].timeout_s: 0 must be a number > 0"),
        (_route(retries=-1), "llm.routes[0].retries: -1 is out of range; expected an integer >= 0"),
        (_route(retries=True), "llm.routes[0].retries: True is not an integer"),
        (_route(colour="blue"), "llm.routes[0]: unknown key(s) colour"),
        (_route(provider="Open AI"), "llm.routes[0].provider: 'Open AI' is not a gen_ai.provider.name"),
        (_route(targets=[{"base_url": "http://a/v1", "model": "m", "api_key_env": "sk-abc 123"}]),
         "llm.routes[0].targets[0].api_key_env: 'sk-abc 123' is not an environment variable name"),
        (_route(targets=[{"base_url": "http://user:pw@a/v1", "model": "m"}]), "must not carry credentials"),
        (_route(targets=[{"base_url": "http://a/v1", "model": "m", "weight": -1}]), "targets[0].weight: -1"),
        (_route(targets=[{"base_url": "http://a/v1", "model": "m", "weight": 0}]), "at least one weight must be > 0"),
        (_route(backoff_initial_s=2, backoff_max_s=1), "llm.routes[0].backoff_max_s: 1 is below"),
        ({"routes": [_route()["routes"][0], _route()["routes"][0]]}, "llm.routes[1].name: 'r' is already"),
        ({"routes": {"name": "r"}}, "llm.routes: expected a list of routes"),
        ({"route": []}, "llm: unknown key(s) route"),
        ({"capture_max_chars": 0}, "llm.capture_max_chars: 0 is out of range; expected an integer >= 1"),
        (_route(targets=[{"base_url": "http://a/v1", "model": "m", "input_price_per_mtok": 1}]),
         "llm.routes[0].targets[0].output_price_per_mtok: required with input_price_per_mtok"),
        (_route(targets=[{"base_url": "http://a/v1", "model": "m", "output_price_per_mtok": 1}]),
         "llm.routes[0].targets[0].input_price_per_mtok: required with output_price_per_mtok"),
        (_route(targets=[{"base_url": "http://a/v1", "model": "m", "input_price_per_mtok": -1,
                          "output_price_per_mtok": 1}]),
         "llm.routes[0].targets[0].input_price_per_mtok: -1 must be a number >= 0"),
        (_route(targets=[{"base_url": "http://a/v1", "model": "m", "input_price_per_mtok": 1,
                          "output_price_per_mtok": "free"}]),
         "llm.routes[0].targets[0].output_price_per_mtok: 'free' is not a number"),
        (_route(targets=[{"base_url": "http://a/v1", "model": "m", "input_price_per_mtok": "inf",
                          "output_price_per_mtok": 1}]),
         "llm.routes[0].targets[0].input_price_per_mtok: 'inf' is not a price"),
    ],
)  # fmt: skip
def test_bad_llm_values_name_their_key(llm: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_llm_settings(llm, environ={})
    assert fragment in str(caught.value)


def test_route_options_and_capture_defaults() -> None:
    llm = {
        "capture_max_chars": 100,
        "routes": [
            {
                "name": "r",
                "provider": "groq",
                "connect_timeout_s": 1.5,
                "read_timeout_s": 30,
                "capture_content": True,
                "targets": [
                    {"base_url": "http://a:9/v1/", "model": "m", "weight": 3},
                    {"base_url": "http://b/v1", "model": "m", "provider": "openai"},
                ],
            },
            {"name": "s", "targets": [{"base_url": "http://a/v1", "model": "m"}]},
        ],
    }
    settings = parse_llm_settings(llm, environ={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"})
    r, s = settings.routes["r"], settings.routes["s"]
    assert (r.connect_timeout_s, r.read_timeout_s, r.timeout_s) == (1.5, 30, 300)
    assert [t.provider for t in r.targets] == ["groq", "openai"]
    assert r.targets[0].base_url == "http://a:9/v1" and r.targets[0].label == "http://a:9/v1 m"
    assert r.weighted and r.targets[1].weight is None
    assert (r.capture_content, r.capture_max_chars, s.capture_content) == (True, 100, True)  # s: from the env
    assert not parse_llm_settings(llm | {"capture_content": False}, environ={}).routes["s"].capture_content
    assert (
        not parse_llm_settings(llm, environ={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "NO_CONTENT"})
        .routes["s"]
        .capture_content
    )


def test_target_prices_make_a_cost() -> None:
    priced = {"base_url": "http://a/v1", "model": "m", "input_price_per_mtok": 0.15, "output_price_per_mtok": "0.6"}
    settings = parse_llm_settings(_route(targets=[priced, {"base_url": "http://b/v1", "model": "m"}]), environ={})
    first, second = settings.routes["r"].targets
    assert (first.input_price_per_mtok, first.output_price_per_mtok) == (0.15, 0.6)
    assert first.cost_usd(1_000_000, 2_000_000) == pytest.approx(0.15 + 1.2)
    assert first.cost_usd(1000, None) == pytest.approx(0.15 / 1000)  # embeddings: input tokens only
    assert first.cost_usd(None, None) is None  # no usage: no cost
    assert second.input_price_per_mtok is None and second.cost_usd(10, 10) is None
    assert LlmSettings.from_dict(settings.to_dict()) == settings  # to worker processes, prices included


def test_auth_keys_must_be_sha256_digests() -> None:
    digest = hashlib.sha256(b"k").hexdigest()
    assert parse_auth_settings({"keys": [digest.upper()]}).key_hashes == {digest}
    with pytest.raises(ConfigError, match=r"auth.keys\[1\]: expected the sha256 hex digest of a key"):
        parse_auth_settings({"keys": [digest, "my-plain-key"]})
    with pytest.raises(ConfigError, match=r"auth: unknown key\(s\) admins"):
        parse_auth_settings({"admins": []})


def test_serve_with_a_bad_route_exits_2_naming_the_key(tmp_path: Path) -> None:
    import subprocess

    config = tmp_path / "bad.yaml"
    bad = {"llm": {"routes": [{"name": "r", "targets": [{"base_url": "http://a/v1", "model": "m"}, {"model": "m"}]}]}}
    config.write_text(yaml.safe_dump(bad))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_STORE_URI"] = f"sqlite:///{tmp_path}/store.db"
    result = subprocess.run(
        [GATEWAY_BIN, "serve", "--config", str(config), "--port", str(free_port()), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "llm.routes[0].targets[1].base_url: required" in result.stderr
