"""GatewayKeys.authenticate keeps the headers it verified (a client's next request skips the sha256): what it
keeps still answers to revocation, expiry and a replaced key map."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import pytest

from gateway.errors import Unauthenticated
from gateway.keys import GatewayKey, GatewayKeys
from gateway.llm.routes_config import AuthSettings

SECRET = "gw_check-" + "y" * 40
HEADER = f"Bearer {SECRET}".encode()


def _keys(**fields: Any) -> tuple[GatewayKeys, GatewayKey]:
    keys = GatewayKeys(AuthSettings(key_hashes=frozenset({hashlib.sha256(b"admin").hexdigest()})))
    key = GatewayKey(
        id="a1b2c3d4e5f6", name="check", digest=hashlib.sha256(SECRET.encode()).hexdigest(),
        scopes=frozenset({"invoke"}), **fields,
    )  # fmt: skip
    keys.update([key])
    return keys, key


def test_a_verified_header_is_refused_once_its_key_is_revoked_or_gone() -> None:
    keys, key = _keys()
    assert keys.authorize_key("invoke", HEADER) == key
    assert keys.authorize_key("invoke", HEADER) == key  # kept
    keys.update([dataclasses.replace(key, revoked=True)])
    with pytest.raises(Unauthenticated, match="revoked"):
        keys.authorize_key("invoke", HEADER)
    keys.update([])
    with pytest.raises(Unauthenticated, match="Invalid gateway key"):
        keys.authorize_key("invoke", HEADER)


def test_a_verified_header_is_refused_once_its_key_expires() -> None:
    keys, key = _keys(expires_at_ms=int(time.time() * 1000) + 300)
    assert keys.authorize_key("invoke", HEADER) == key
    while time.time() * 1000 < (key.expires_at_ms or 0):
        time.sleep(0.05)
    with pytest.raises(Unauthenticated, match="expired"):
        keys.authorize_key("invoke", HEADER)


def test_wrong_headers_are_refused_every_time() -> None:
    keys, key = _keys()
    for wrong in (b"Bearer gw_nope", b"Basic abc", HEADER + b"x"):
        for _ in range(2):
            with pytest.raises(Unauthenticated):
                keys.authorize_key("invoke", wrong)
    assert keys.authorize_key("invoke", HEADER.decode()) == key  # the header's text works as its bytes do
