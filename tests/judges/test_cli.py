"""``gateway judges ...`` as a user runs it (a real process on a real store)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.servers import gateway_env, run_cli


def test_create_list_show(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "llm:\n  routes:\n    - name: judge\n      targets: [{base_url: 'http://127.0.0.1:9/v1', model: m}]\n"
        "judges:\n  route: judge\n"
    )
    env = gateway_env(f"sqlite:///{tmp_path}/store.db", tmp_path, GATEWAY_CONFIG=str(config))
    instructions = tmp_path / "tone.txt"
    instructions.write_text("Rate the tone of {{ outputs }} from 1 (rude) to 5 (warm).")

    listed = json.loads(run_cli(["judges", "list", "--json"], env).stdout)  # seeded on first use
    assert [j["name"] for j in listed] == [
        "conciseness", "correctness", "groundedness", "guidelines", "relevance_to_query", "safety",
    ]  # fmt: skip
    assert all(j["route"] == "judge" and j["prompt_version"] == 1 for j in listed)

    out = run_cli(["judges", "create", "tone", "--instructions", str(instructions), "--route", "judge",
                   "--value-kind", "int:1..5", "--description", "Tone"], env).stdout  # fmt: skip
    assert out.strip() == "Judge 'tone': prompt judges.tone version 1 (alias production), int 1..5, route judge"
    labels = '{"type": "categorical", "labels": ["warm", "cold"]}'
    out = run_cli(["judges", "create", "tone", "--instructions", "Is {{ outputs }} warm?", "--route", "judge",
                   "--value-kind", labels, "--json"], env).stdout  # fmt: skip
    edited = json.loads(out)
    assert edited["prompt_version"] == 2 and edited["value_kind"] == {"type": "categorical", "labels": ["warm", "cold"]}

    shown = run_cli(["judges", "show", "tone"], env).stdout
    assert "prompt:   judges.tone version 2" in shown and "value:    categorical warm,cold" in shown
    shown = json.loads(run_cli(["judges", "show", "correctness", "--json"], env).stdout)
    assert shown["required_fields"][-1] == "expectations.expected_response | expectations.expected_facts"
    assert "tone" in run_cli(["judges", "list"], env).stdout

    refused = run_cli(["judges", "create", "ctx", "--instructions", "{{ outputs }} vs {{ context }}",
                       "--route", "judge", "--value-kind", "bool"], env, check=False)  # fmt: skip
    assert refused.returncode == 1 and "'context'" in refused.stderr
    refused = run_cli(["judges", "create", "x", "--instructions", "{{ outputs }}", "--route", "elsewhere",
                       "--value-kind", "bool"], env, check=False)  # fmt: skip
    assert refused.returncode == 1 and "'elsewhere' is not an LLM route" in refused.stderr
    refused = run_cli(["judges", "create", "x", "--instructions", "{{ outputs }}", "--route", "judge",
                       "--value-kind", "int:1-5"], env, check=False)  # fmt: skip
    assert refused.returncode == 1 and "--value-kind 'int:1-5'" in refused.stderr
    missing = run_cli(["judges", "show", "nope"], env, check=False)
    assert missing.returncode == 1 and "No judge 'nope'" in missing.stderr
