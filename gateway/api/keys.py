"""``/api/keys``: gateway keys for the ``admin`` scope, as ``gateway keys ...`` manages them (gateway/key_admin.py).

``POST /api/keys`` and ``POST /api/keys/{key}/rotate`` answer the key once, under ``"key"``; every other answer
shows the key's id, name, display prefix, scopes, limits and state, never the key or its digest. After a write,
this worker's key map is refreshed at once and the other workers and replicas are told through Redis when
``redis_url`` is set (else they read the change within ``auth.refresh_interval_s``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import InvalidParameter
from gateway.http import ORJSONResponse, read_json_object
from gateway.key_admin import create_key, key_spec, rotate_key
from gateway.store.keys import KeyStore, StoredKey


def _store(request: Request) -> KeyStore:
    store: KeyStore = request.app.state.key_store
    return store


async def _changed(request: Request) -> None:
    changed: Callable[[], Awaitable[None]] = request.app.state.keys_changed
    await changed()


def key_view(key: StoredKey, secret: str | None = None) -> dict[str, Any]:
    """A key as the API shows it: its row without the digest, its state, and the key itself only when just made."""
    data = key.to_dict()
    if key.revoked_at is not None:
        data["state"] = "revoked"
    elif key.expires_at is not None and key.expires_at <= time.time() * 1000:
        data["state"] = "expired"
    else:
        data["state"] = "active"
    if secret is not None:
        data["key"] = secret
    return data


def _key_param(request: Request) -> str:
    value: str = request.path_params["key"]
    if not value or len(value) > 255 or "\x00" in value:
        raise InvalidParameter("The key in the path must be a key id or name of 1 to 255 characters without NUL.")
    return value


async def create(request: Request) -> Response:
    body = await read_json_object(request)
    spec = key_spec(body, known_paths={route.path for route in request.app.route_table})
    store = _store(request)
    secret, stored = await asyncio.to_thread(create_key, store, spec)
    await _changed(request)
    return ORJSONResponse(key_view(stored, secret), status_code=201)


async def list_keys(request: Request) -> Response:
    keys = await asyncio.to_thread(_store(request).load)
    return ORJSONResponse({"keys": [key_view(key) for key in keys]})


async def get_key(request: Request) -> Response:
    key = _key_param(request)
    return ORJSONResponse(key_view(await asyncio.to_thread(_store(request).get, key)))


async def revoke(request: Request) -> Response:
    key = _key_param(request)
    await read_json_object(request)  # no body needed, but a JSON content type if one is sent
    stored = await asyncio.to_thread(_store(request).revoke, key)
    await _changed(request)
    return ORJSONResponse(key_view(stored))


async def rotate(request: Request) -> Response:
    key = _key_param(request)
    await read_json_object(request)
    secret, stored = await asyncio.to_thread(rotate_key, _store(request), key)
    await _changed(request)
    return ORJSONResponse(key_view(stored, secret))
