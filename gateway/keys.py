"""Gateway keys and the scope each route requires: who may call what.

Clients send ``Authorization: Bearer <key>``. Nothing here holds a key: the config's ``auth.keys`` are sha256
digests (bootstrap keys, holding every scope), and the keys created with ``gateway keys create`` or
``POST /api/keys`` live in the store as a digest and a display prefix (gateway/store/keys.py), read into this
process's map by gateway/key_admin.py (``KeySync``: every ``auth.refresh_interval_s``, and at once on a Redis
notification). Every route of the table declares the scope it requires (gateway/api/routes.py); with auth on
(``auth.keys`` set), a request to a route with a scope needs a key holding it: 401 without a valid key (or with
a revoked or expired one), 403 naming the scope it lacks, or the path or model its key is not allowed, unless the
scope is left open (``auth.open_routes``, and ``metrics`` while ``auth.public_metrics``). Routes without a scope
(/ping, /health, /version) are always open. With no ``auth.keys`` every route is open and no key is checked
(``gateway serve`` refuses that beyond loopback unless ``auth.allow_open``).

Lookup: the key's sha256 digest in a dict, then a constant-time comparison of the digests (``hmac.compare_digest``).
What a lookup's time could tell is about the digest, which says nothing about a key. No store is read per
request: a revoked key stops working when this process's map is refreshed.

A key's id (what spans and the trace store name, ``gateway.auth.key_id``) is 12 hex characters: for a bootstrap
key the start of its digest, for a stored key a random id that stays when the key is rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.errors import PermissionDenied, Unauthenticated
from gateway.llm.routes_config import SCOPES, AuthSettings

KEY_ID_CHARS = 12
ALL_SCOPES = frozenset(SCOPES)
BUDGET_PERIODS = ("day", "week", "month")


def key_id(digest: str) -> str:
    return digest[:KEY_ID_CHARS]


def digest_of(key: str) -> str:
    """The sha256 hex digest of a key (its UTF-8 bytes): what the config and the store hold instead of it."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class GatewayKey:
    """One key as this process checks it: what it may call (scopes, and optionally only some LLM ``models``
    and route-table ``routes``), its limits (requests and tokens per minute, a budget per period) and whether it
    still works. ``expires_at_ms`` and ``revoked`` are checked per request."""

    id: str
    name: str
    digest: str
    scopes: frozenset[str]
    models: frozenset[str] | None = None  # None: every route of llm.routes
    routes: frozenset[str] | None = None  # None: every path its scopes allow
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str = "month"
    expires_at_ms: int | None = None
    revoked: bool = False
    prefix: str = ""

    @property
    def limited(self) -> bool:
        """Whether its /v1 calls go through the limiter (rate limits or a budget)."""
        return self.rpm is not None or self.tpm is not None or self.budget_usd is not None

    @property
    def label(self) -> str:
        """How messages name the key: its name and id (never the key)."""
        return f"{self.name!r} ({self.id})"


def bootstrap_key(digest: str) -> GatewayKey:
    return GatewayKey(id=key_id(digest), name="bootstrap", digest=digest, scopes=ALL_SCOPES)


class GatewayKeys:
    """Checks a request's ``Authorization`` header against the known digests and a route's scope.

    ``enabled`` is False without ``auth.keys``: every route is open and nothing is checked."""

    __slots__ = ("_bootstrap", "_keys", "_open", "_verified", "enabled", "loaded")

    def __init__(self, settings: AuthSettings) -> None:
        self._bootstrap = _by_digest(bootstrap_key(digest) for digest in settings.key_hashes)
        # raw sha256 digest -> (the same, the key): what a request's key is looked up and compared with
        self._keys: Mapping[bytes, tuple[bytes, GatewayKey]] = self._bootstrap
        self._open = settings.open_scopes
        # Authorization headers that passed the digest comparison against the current map -> their key, so that a
        # client's next request skips the sha256 (a kept map is what a new one replaces: update() starts it empty).
        self._verified: dict[bytes, GatewayKey] = {}
        self.enabled = bool(self._bootstrap)
        self.loaded = False  # True once update() brought the store's keys

    def update(self, stored: Iterable[GatewayKey]) -> None:
        """Replace the stored keys (the bootstrap keys stay, and win over a stored key of the same digest)."""
        keys = _by_digest(stored)
        keys.update(self._bootstrap)
        self._keys = keys  # one assignment: a request sees the old map or the new one, never a mix
        self._verified = {}
        self.loaded = True

    def stored(self) -> list[GatewayKey]:
        """The keys read from the store (not the bootstrap ones)."""
        return [key for digest, (_, key) in self._keys.items() if digest not in self._bootstrap]

    def authorize(self, scope: str | None, authorization: str | bytes | None, path: str | None = None) -> str | None:
        """The key id of the request's key when the route's ``scope`` needs one, else None (see ``authorize_key``)."""
        key = self.authorize_key(scope, authorization, path)
        return key.id if key is not None else None

    def authorize_key(
        self, scope: str | None, authorization: str | bytes | None, path: str | None = None
    ) -> GatewayKey | None:
        """The request's key when the route's ``scope`` needs one, else None. Raises Unauthenticated (401)
        without a valid key (missing, unknown, revoked, expired) and PermissionDenied (403) for a key without
        ``scope`` or, when it is limited to some routes, without ``path`` (the route's path in the table)."""
        if scope is None or not self.enabled or scope in self._open:
            return None
        key = self.authenticate(authorization)
        if scope not in key.scopes:
            raise PermissionDenied(
                f"The key {key.label} does not hold the scope {scope!r} this route requires "
                f"(it holds: {', '.join(sorted(key.scopes)) or 'none'})."
            )
        if path is not None and key.routes is not None and path not in key.routes:
            raise PermissionDenied(
                f"The key {key.label} may not call {path}; its routes are: {', '.join(sorted(key.routes))}."
            )
        return key

    def authenticate(self, authorization: str | bytes | None) -> GatewayKey:
        """The key an ``Authorization: Bearer <key>`` header names (its text, or its raw bytes as the ASGI scope
        holds them), if it works; Unauthenticated otherwise. The key's bytes are hashed as they came."""
        if not authorization:
            raise Unauthenticated(
                "Missing gateway key: send the header 'Authorization: Bearer <key>'.", reason="missing_api_key"
            )
        raw = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
        verified = self._verified
        key = verified.get(raw)  # by the whole header (a per-process randomized hash): only ones that passed below
        if key is None:
            key = self._digest_lookup(raw)
            if len(verified) >= _VERIFIED_MAX:
                verified.clear()
            verified[raw] = key
        if key.expires_at_ms is not None and time.time() * 1000 >= key.expires_at_ms:
            expired = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.expires_at_ms / 1000))
            raise Unauthenticated(f"The gateway key {key.label} expired at {expired}.", reason="invalid_api_key")
        return key

    def _digest_lookup(self, raw: bytes) -> GatewayKey:
        """The key of a Bearer header's secret: its sha256 looked up and compared in constant time; Unauthenticated
        for a malformed header, an unknown or a revoked key."""
        scheme, _, secret = raw.partition(b" ")
        secret = secret.strip()
        if scheme.lower() != b"bearer" or not secret:
            raise Unauthenticated("Malformed Authorization header: expected 'Bearer <key>'.", reason="invalid_api_key")
        digest = hashlib.sha256(secret).digest()
        found = self._keys.get(digest)
        if found is None or not hmac.compare_digest(found[0], digest):
            raise Unauthenticated("Invalid gateway key.", reason="invalid_api_key")
        key = found[1]
        if key.revoked:
            raise Unauthenticated(f"The gateway key {key.label} was revoked.", reason="invalid_api_key")
        return key


_VERIFIED_MAX = 10_000  # distinct verified headers kept per worker (then it starts over)


def _by_digest(keys: Iterable[GatewayKey]) -> dict[bytes, tuple[bytes, GatewayKey]]:
    by_digest: dict[bytes, tuple[bytes, GatewayKey]] = {}
    for key in keys:
        raw = bytes.fromhex(key.digest)
        by_digest[raw] = (raw, key)
    return by_digest


def check_model(key: GatewayKey | None, model: str) -> None:
    """PermissionDenied (403) naming ``model`` when ``key`` is limited to other LLM models."""
    if key is not None and key.models is not None and model not in key.models:
        raise PermissionDenied(
            f"The key {key.label} may not use the model {model!r}; its models are: {', '.join(sorted(key.models))}."
        )
