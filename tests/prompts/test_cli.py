"""``gateway prompts ...`` as a user runs it (a real process on a real store)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.servers import gateway_env, run_cli


def test_create_version_alias_show_render_list(tmp_path: Path) -> None:
    env = gateway_env(f"sqlite:///{tmp_path}/store.db", tmp_path)
    template = tmp_path / "qa.txt"
    template.write_text("Question: {{ question }}\nAnswer briefly.")
    out = run_cli(
        [
            "prompts",
            "create",
            "qa",
            "--template",
            str(template),
            "--description",
            "QA",
            "--tag",
            "team=search",
            "--commit-message",
            "first",
            "--alias",
            "production",
        ],
        env,
    ).stdout
    assert "Registered prompt 'qa' version 1 (variables: question)" in out
    out = run_cli(
        [
            "prompts",
            "version",
            "qa",
            "--message",
            "system:Answer in {{ lang }}.",
            "--message",
            "user:{{ question }}",
            "--model-config",
            '{"model_name": "gpt-4o-mini", "temperature": 0}',
        ],
        env,
    ).stdout
    assert "version 2 (variables: lang, question)" in out
    run_cli(["prompts", "alias", "qa", "staging", "2"], env)

    shown = json.loads(run_cli(["prompts", "show", "qa", "--json"], env).stdout)
    assert shown["description"] == "QA" and shown["tags"] == {"team": "search"}
    assert shown["aliases"] == {"production": 1, "staging": 2}
    assert shown["versions"][0]["template"] == "Question: {{ question }}\nAnswer briefly."
    version = json.loads(run_cli(["prompts", "show", "prompts:/qa@staging", "--json"], env).stdout)
    assert version["model_config"] == {"model_name": "gpt-4o-mini", "temperature": 0}
    assert run_cli(["prompts", "show", "qa/1"], env).stdout.startswith("qa version 1 (text; variables: question)")

    assert run_cli(["prompts", "render", "qa@production", "--var", "question=why?"], env).stdout == (
        "Question: why?\nAnswer briefly.\n"
    )
    messages = json.loads(
        run_cli(["prompts", "render", "qa@staging", "--var", "lang=fr", "--var", "question=q"], env).stdout
    )
    assert messages == [{"role": "system", "content": "Answer in fr."}, {"role": "user", "content": "q"}]

    listing = run_cli(["prompts", "list"], env).stdout.splitlines()
    assert listing[1].split() == ["qa", "2", "production=1,", "staging=2"]
    assert json.loads(run_cli(["prompts", "list", "--tag", "team=ads", "--json"], env).stdout) == []


def test_errors_are_one_line_and_exit_non_zero(tmp_path: Path) -> None:
    env = gateway_env(f"sqlite:///{tmp_path}/store.db", tmp_path)
    run_cli(["prompts", "version", "qa", "--template", "Hi {{ a }} {{ b }}"], env)
    cases = [
        (["prompts", "render", "qa@latest", "--var", "a=1"], "gateway: Missing variables: 'b' "),
        (["prompts", "create", "qa"], "gateway: Prompt 'qa' already exists."),
        (["prompts", "alias", "qa", "prod", "9"], "gateway: Prompt 'qa' has no version 9."),
        (["prompts", "alias", "qa", "latest", "1"], "gateway: Alias name 'latest' is reserved"),
        (["prompts", "show", "qa@prod"], "gateway: Prompt 'qa' has no alias 'prod'."),
        (["prompts", "show", "nope"], "gateway: Prompt 'nope' not found."),
        (
            ["prompts", "version", "qa", "--template", "x", "--model-config", "{"],
            "gateway: --model-config: not valid JSON",
        ),
        (["prompts", "version", "qa", "--message", "no-colon"], "gateway: --message 'no-colon': expected ROLE:TEXT"),
    ]
    for args, message in cases:
        result = run_cli(args, env, check=False)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith(message), (args, result.stderr)
