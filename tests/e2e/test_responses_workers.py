"""`gateway serve --workers 2` and the Responses API: a follow-up reaches the target that created its response
whichever worker takes it (the workers share their pins through a file in the server's shared directory)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from loadtest.fake_upstream import Recorder
from loadtest.fake_upstream import create_app as create_fake_app
from tests.servers import gateway_env, run_app_in_thread, run_gateway_process

KEY_ENV = "E2E_RESPONSES_PROVIDER_KEY"


def test_follow_ups_reach_their_target_from_either_worker(tmp_path: Path) -> None:
    recorder = Recorder()
    with run_app_in_thread(create_fake_app(recorder)) as upstream:
        config = tmp_path / "gateway.yaml"
        target = {"base_url": upstream + "/v1", "model": "fake-model", "api_key_env": KEY_ENV}
        config.write_text(json.dumps({"llm": {"routes": [{"name": "gpt-4o-mini", "targets": [target]}]}}))
        env = gateway_env(f"sqlite:///{tmp_path}/store.db", tmp_path, **{KEY_ENV: "sk-e2e"})
        with run_gateway_process(["--config", str(config), "--workers", "2"], env) as (base_url, _):
            created = []
            for n in range(12):  # a new connection per request: the kernel spreads them over both workers
                answer = httpx.post(base_url + "/v1/responses", json={"model": "gpt-4o-mini", "input": f"n{n}"})
                assert answer.status_code == 200, answer.text
                created.append(answer.json()["id"])
            for response_id in created:
                answer = httpx.get(f"{base_url}/v1/responses/{response_id}")
                assert answer.status_code == 200, answer.text
                assert answer.json()["id"] == response_id
    assert sum(r.method == "GET" for r in recorder.requests) == len(created)
