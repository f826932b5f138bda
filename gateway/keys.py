"""Gateway keys and the scope each route requires: who may call what.

Clients send ``Authorization: Bearer <key>``; the config holds only sha256 digests (``auth.keys``). A key's
id is the first 12 hex characters of its digest: enough to tell keys apart in spans and the trace store,
useless for guessing the key. Every route of the table declares the scope it requires
(gateway/api/routes.py); with keys configured, a request to a route with a scope needs a key holding it
(401 without a valid key, 403 naming the scope it lacks), unless the scope is left open (``auth.open_routes``,
and ``metrics`` while ``auth.public_metrics``). Routes without a scope (/ping, /health, /version) are
always open. With no keys configured every route is open (``gateway serve`` warns beyond loopback).

The keys of ``auth.keys`` are bootstrap keys: they hold every scope. Lookup is a digest in a frozenset: the
time it takes says nothing about the key, and no store is read per request.
"""

from __future__ import annotations

import hashlib

from gateway.errors import PermissionDenied, Unauthenticated
from gateway.llm.routes_config import SCOPES, AuthSettings

KEY_ID_CHARS = 12
ALL_SCOPES = frozenset(SCOPES)


def key_id(digest: str) -> str:
    return digest[:KEY_ID_CHARS]


class GatewayKeys:
    """Checks a request's ``Authorization`` header against the configured digests and a route's scope."""

    __slots__ = ("_digests", "_open", "enabled")

    def __init__(self, settings: AuthSettings) -> None:
        self._digests = settings.key_hashes
        self._open = settings.open_scopes
        self.enabled = bool(self._digests)  # False: every route is open

    def authorize(self, scope: str | None, authorization: str | None) -> str | None:
        """The key id of the request's key when the route's ``scope`` needs one, else None; raises
        Unauthenticated (401) without a valid key and PermissionDenied (403) for a key without ``scope``."""
        if scope is None or not self._digests or scope in self._open:
            return None
        if not authorization:
            raise Unauthenticated(
                "Missing gateway key: send the header 'Authorization: Bearer <key>'.", reason="missing_api_key"
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthenticated("Malformed Authorization header: expected 'Bearer <key>'.", reason="invalid_api_key")
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest not in self._digests:
            raise Unauthenticated("Invalid gateway key.", reason="invalid_api_key")
        if scope not in ALL_SCOPES:  # bootstrap keys hold every scope; a scope no key can hold is a table bug
            raise PermissionDenied(f"This key does not hold the scope {scope!r} this route requires.")
        return key_id(digest)
