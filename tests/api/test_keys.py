"""Gateway keys in the store (issue 13, item 1): ``gateway keys create|list|show|revoke|rotate`` and ``/api/keys``.

The key is printed (answered) once; the store holds its digest and a short prefix, never the key; a rotated key's
old secret stops working and its id stays; a revoked key is refused; every refused field is named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from gateway.app import GatewayApp
from tests.api.full_gateway import full_gateway
from tests.packages import PackageCache
from tests.servers import gateway_env, run_cli

ADMIN = "gw-test-keys-admin"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, packages: PackageCache) -> Iterator[tuple[GatewayApp, str]]:
    auth = {"keys": [hashlib.sha256(ADMIN.encode()).hexdigest()]}
    with full_gateway(tmp_path_factory.mktemp("keys"), packages, auth) as (app, base_url):
        yield app, base_url


def _admin(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"})


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_create_rotate_revoke_over_the_api(served: tuple[GatewayApp, str]) -> None:
    app, base_url = served
    with _admin(base_url) as admin:
        made = admin.post(
            "/api/keys",
            json={"name": "app-a", "scopes": ["llm", "invoke"], "models": ["gpt-4o-mini"], "rpm": 600, "tpm": 200000,
                  "budget_usd": 50, "budget_period": "month", "expires_at": "2099-06-30"},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        key = made.json()
        secret = key["key"]
        assert secret.startswith("gw_") and key["prefix"] == secret[:10] and "digest" not in key
        assert (key["rpm"], key["tpm"], key["budget_usd"], key["state"]) == (600, 200000, 50.0, "active")
        assert key["expires_at"] == 4_086_547_200_000  # 2099-07-01T00:00Z: the key works through June 30
        assert (
            admin.post("/invocations", headers=_bearer(secret), json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}).status_code
            == 200
        )
        assert admin.post("/v1/chat/completions", headers=_bearer(secret), json=CHAT).status_code == 200

        listed = admin.get("/api/keys").json()["keys"]
        assert [k["name"] for k in listed] == ["app-a"] and "key" not in listed[0]
        assert admin.get(f"/api/keys/{key['id']}").json()["name"] == "app-a"
        assert admin.get("/api/keys/app-a").json()["id"] == key["id"]

        rotated = admin.post("/api/keys/app-a/rotate").json()
        assert rotated["id"] == key["id"] and rotated["key"] != secret and rotated["rotated_at"] is not None
        old = admin.post("/v1/chat/completions", headers=_bearer(secret), json=CHAT)
        assert old.status_code == 401 and old.json()["error"]["code"] == "invalid_api_key"
        assert admin.post("/v1/chat/completions", headers=_bearer(rotated["key"]), json=CHAT).status_code == 200

        assert admin.post(f"/api/keys/{key['id']}/revoke").json()["state"] == "revoked"
        refused = admin.post("/v1/chat/completions", headers=_bearer(rotated["key"]), json=CHAT)
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
        assert admin.post("/api/keys/app-a/rotate").status_code == 404  # a revoked key is not brought back

        # The store holds the digest and prefix, never a key.
        with app.state.key_store.engine.connect() as conn:
            stored = [tuple(row) for row in conn.execute(sa.text("SELECT * FROM gateway_keys"))]
        text = repr(stored)
        assert secret not in text and rotated["key"] not in text
        assert hashlib.sha256(rotated["key"].encode()).hexdigest() in text


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"scopes": ["llm"]}, "'name'"),
        ({"name": "x y", "scopes": ["llm"]}, "'name'"),
        ({"name": "a"}, "'scopes'"),
        ({"name": "a", "scopes": ["root"]}, "'root'"),
        ({"name": "a", "scopes": ["llm"], "rpm": 0}, "'rpm'"),
        ({"name": "a", "scopes": ["llm"], "tpm": 1.5}, "'tpm'"),
        ({"name": "a", "scopes": ["llm"], "budget_usd": -1}, "'budget_usd'"),
        ({"name": "a", "scopes": ["llm"], "budget_usd": 1, "budget_period": "year"}, "'budget_period'"),
        ({"name": "a", "scopes": ["llm"], "budget_period": "day"}, "'budget_period'"),
        ({"name": "a", "scopes": ["llm"], "expires_at": "2001-01-01"}, "'expires_at'"),
        ({"name": "a", "scopes": ["llm"], "expires_at": "soon"}, "'expires_at'"),
        ({"name": "a", "scopes": ["llm"], "models": []}, "'models'"),
        ({"name": "a", "scopes": ["llm"], "owner": "me"}, "owner"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(served: tuple[GatewayApp, str], body: dict[str, object], named: str) -> None:
    _, base_url = served
    with _admin(base_url) as admin:
        answer = admin.post("/api/keys", json=body)
    assert answer.status_code == 400, answer.text
    assert named in answer.json()["message"]


def test_names_are_unique_and_writes_want_json(served: tuple[GatewayApp, str]) -> None:
    _, base_url = served
    with _admin(base_url) as admin:
        assert admin.post("/api/keys", json={"name": "twice", "scopes": ["llm"]}).status_code == 201
        again = admin.post("/api/keys", json={"name": "twice", "scopes": ["llm"]})
        assert again.status_code == 409 and "'twice'" in again.json()["message"]
        plain = admin.post("/api/keys/twice/revoke", content=b"x", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415
        assert admin.get("/api/keys/twice").json()["state"] == "active"
        assert admin.get("/api/keys/nope").status_code == 404


def test_the_cli_prints_the_key_once(packages: PackageCache, tmp_path: Path) -> None:
    env = gateway_env(f"sqlite:///{tmp_path}/store.db", packages.root)
    made = run_cli(
        ["keys", "create", "--name", "app-a", "--scope", "llm", "--scope", "invoke", "--models", "gpt-4o-mini",
         "--rpm", "600", "--tpm", "200000", "--budget-usd", "50", "--budget-period", "month",
         "--expires", "2099-06-30", "--json"],
        env,
    )  # fmt: skip
    key = json.loads(made.stdout)
    secret = key["key"]
    assert secret.startswith("gw_") and key["scopes"] == ["llm", "invoke"] and key["models"] == ["gpt-4o-mini"]
    assert (key["rpm"], key["tpm"], key["budget_usd"], key["budget_period"]) == (600, 200000, 50.0, "month")
    listing = run_cli(["keys", "list"], env).stdout
    assert "app-a" in listing and key["prefix"] in listing and secret not in listing
    shown = run_cli(["keys", "show", "app-a"], env).stdout
    assert key["id"] in shown and "active" in shown and secret not in shown
    rotated = run_cli(["keys", "rotate", key["id"]], env).stdout
    new_secret = rotated.split("store it now:\n", 1)[1].split("\n", 1)[0]
    assert new_secret.startswith("gw_") and new_secret != secret
    assert "revoked" in run_cli(["keys", "revoke", "app-a"], env).stdout
    bad = run_cli(["keys", "create", "--name", "b", "--scope", "llm", "--rpm", "0"], env, check=False)
    assert bad.returncode == 1 and "'rpm'" in bad.stderr
    assert "app-a" in run_cli(["keys", "list", "--json"], env).stdout


def test_usage_refuses_what_it_does_not_know(served: tuple[GatewayApp, str]) -> None:
    _, base_url = served
    with _admin(base_url) as admin:
        assert admin.get("/api/usage", params={"group_by": "week"}).json()["message"].startswith("group_by must be")
        assert admin.get("/api/usage", params={"status": "ok"}).status_code == 400
        assert admin.get("/api/usage", params={"from": "yesterday"}).status_code == 400
        answer = admin.get("/api/usage", params={"key": "app-a", "group_by": "route"})
        assert answer.status_code == 200 and set(answer.json()) == {"group_by", "groups", "total"}
