"""Creating, rotating and revoking gateway keys, and keeping every worker's key map current.

Shared by ``gateway keys ...`` (gateway/keys_cli.py, on the store directly) and ``/api/keys`` (gateway/api/keys.py):
``key_spec`` reads what a key may do and its limits field by field (every refusal an InvalidParameter naming the
field), ``create_key`` and ``rotate_key`` make the secret (``gw_`` and 43 random URL-safe characters, 256 bits)
and store only its sha256 digest and first characters. The secret is returned once, to be shown once.

``KeySync`` is the worker's side: it reads the keys table into ``GatewayKeys`` (gateway/keys.py) at start, every
``auth.refresh_interval_s``, and when a Redis notification says a key changed (gateway/app.py listens), and hands
the budgeted keys' recorded spend to the limiter (gateway/limits/). A store that cannot be read leaves the last
map in place (logged once): a key revoked meanwhile works until the store answers again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.error_text import first_line, json_type
from gateway.errors import InvalidParameter
from gateway.keys import ALL_SCOPES, BUDGET_PERIODS, GatewayKey, GatewayKeys, digest_of
from gateway.llm.routes_config import SCOPES
from gateway.store.keys import KeyStore, StoredKey

logger = logging.getLogger("gateway.keys")

KEY_PREFIX = "gw_"
PREFIX_CHARS = 10  # "gw_" and 7 characters of the secret: enough to tell keys apart in a listing
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_FIELDS = ("name", "scopes", "models", "routes", "rpm", "tpm", "budget_usd", "budget_period", "expires_at")
MAX_LIST = 256


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A key to create: its name, scopes, and optional model and route lists, limits and expiry (epoch ms)."""

    name: str
    scopes: tuple[str, ...]
    models: tuple[str, ...] | None = None
    routes: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    expires_at: int | None = None


def key_spec(data: Mapping[str, Any], *, known_paths: Collection[str] | None = None) -> KeySpec:
    """A KeySpec from JSON-like ``data`` (the API's body; the CLI builds the same mapping from its flags).
    ``known_paths`` are the route table's paths a ``routes`` entry must be one of (None: not checked)."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise InvalidParameter(f"Unknown field(s) {', '.join(unknown)}; a key has {', '.join(_FIELDS)}.")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidParameter(
            f"Field 'name' must be 1-128 letters, digits, '.', '_', ':' or '-' (starting with a letter or digit), "
            f"got {_shown(name)}."
        )
    scopes = _names(data, "scopes", required=True)
    assert scopes is not None
    bad = [scope for scope in scopes if scope not in ALL_SCOPES]
    if bad:
        raise InvalidParameter(f"Field 'scopes': {bad[0]!r} is not a scope; the scopes are: {', '.join(SCOPES)}.")
    routes = _names(data, "routes")
    if routes is not None and known_paths is not None:
        bad = [path for path in routes if path not in known_paths]
        if bad:
            raise InvalidParameter(
                f"Field 'routes': {bad[0]!r} is not a path of this gateway's route table "
                "(give it as the table writes it, e.g. /v1/chat/completions or /api/prompts/{name})."
            )
    budget_usd = data.get("budget_usd")
    if budget_usd is not None:
        if isinstance(budget_usd, bool) or not isinstance(budget_usd, int | float) or not math.isfinite(budget_usd):
            raise InvalidParameter(f"Field 'budget_usd' must be a number of US dollars, got {json_type(budget_usd)}.")
        if budget_usd <= 0:
            raise InvalidParameter(f"Field 'budget_usd' must be more than 0, got {budget_usd}.")
    period = data.get("budget_period")
    if period is not None and period not in BUDGET_PERIODS:
        raise InvalidParameter(
            f"Field 'budget_period' must be one of {', '.join(BUDGET_PERIODS)}, got {_shown(period)}."
        )
    if period is not None and budget_usd is None:
        raise InvalidParameter("Field 'budget_period' needs 'budget_usd' (the budget that resets every period).")
    return KeySpec(
        name=name,
        scopes=scopes,
        models=_names(data, "models"),
        routes=routes,
        rpm=_positive_int(data, "rpm"),
        tpm=_positive_int(data, "tpm"),
        budget_usd=float(budget_usd) if budget_usd is not None else None,
        budget_period=(period or "month") if budget_usd is not None else None,
        expires_at=expiry(data.get("expires_at")),
    )


def expiry(value: Any, field: str = "expires_at", now: dt.datetime | None = None) -> int | None:
    """Epoch ms from epoch ms, an ISO 8601 time (UTC without a zone) or a date (the key works through that day,
    UTC); in the future, or InvalidParameter naming ``field``."""
    if value is None:
        return None
    now = now or dt.datetime.now(dt.UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                day = dt.date.fromisoformat(text) + dt.timedelta(days=1)
                parsed = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            else:
                parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=dt.UTC)
        except ValueError:
            raise InvalidParameter(
                f"Field {field!r} must be a date (2027-06-30: the key works through that day, UTC), an ISO 8601 "
                f"time or epoch milliseconds, got {_shown(value)}."
            ) from None
        moment = int(parsed.timestamp() * 1000)
    else:
        raise InvalidParameter(f"Field {field!r} must be a date, an ISO 8601 time or epoch ms, got {json_type(value)}.")
    if moment <= now.timestamp() * 1000:
        raise InvalidParameter(f"Field {field!r} must be in the future, got {_shown(value)}.")
    if moment > 253_402_300_799_999:
        raise InvalidParameter(f"Field {field!r} must be before the year 10000, got {_shown(value)}.")
    return moment


def new_secret() -> tuple[str, str, str]:
    """(the key, its sha256 hex digest, its display prefix)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, digest_of(secret), secret[:PREFIX_CHARS]


def create_key(store: KeyStore, spec: KeySpec) -> tuple[str, StoredKey]:
    """Store a new key for ``spec``: (the key, shown once; its row)."""
    secret, digest, prefix = new_secret()
    stored = store.create(
        secrets.token_hex(6), spec.name, digest, prefix, spec.scopes,
        models=spec.models, routes=spec.routes, rpm=spec.rpm, tpm=spec.tpm, budget_usd=spec.budget_usd,
        budget_period=spec.budget_period, expires_at=spec.expires_at,
    )  # fmt: skip
    return secret, stored


def rotate_key(store: KeyStore, id_or_name: str) -> tuple[str, StoredKey]:
    """A new secret for the key (the old one stops working): (the new key, shown once; its row)."""
    secret, digest, prefix = new_secret()
    return secret, store.rotate(id_or_name, digest, prefix)


def gateway_key(stored: StoredKey) -> GatewayKey:
    """The stored row as the per-request check holds it."""
    return GatewayKey(
        id=stored.id,
        name=stored.name,
        digest=stored.digest,
        scopes=frozenset(stored.scopes),
        models=frozenset(stored.models) if stored.models is not None else None,
        routes=frozenset(stored.routes) if stored.routes is not None else None,
        rpm=stored.rpm,
        tpm=stored.tpm,
        budget_usd=stored.budget_usd,
        budget_period=stored.budget_period or "month",
        expires_at_ms=stored.expires_at,
        revoked=stored.revoked_at is not None,
        prefix=stored.prefix,
    )


# Given the budgeted keys and the store's spend query (``KeyStore.spend_since``), brings the limiter's spend
# up to the store's record (gateway/limits/limiter.py: ``KeyLimiter.sync_spend``).
SpendSync = Callable[[list[GatewayKey], Callable[..., dict[str, float]]], Awaitable[None]]


class KeySync:
    """Keeps one worker's ``GatewayKeys`` equal to the store's keys table, and (``on_loaded``) the limiter's
    spend of the budgeted keys up to the store's record."""

    def __init__(self, store: KeyStore, keys: GatewayKeys, on_loaded: SpendSync | None = None) -> None:
        self.store = store
        self.keys = keys
        self.on_loaded = on_loaded
        self._lock = asyncio.Lock()
        self._failing = False

    def refresh_sync(self) -> None:
        """Read the table now (at start, before the worker serves: a store error stops the start)."""
        self.keys.update(gateway_key(row) for row in self.store.load())

    async def refresh(self) -> None:
        """Read the table again; a store error keeps the last map (logged once per outage)."""
        async with self._lock:
            try:
                rows = await asyncio.to_thread(self.store.load)
            except Exception as exc:
                if not self._failing:
                    logger.warning(
                        "Cannot read the gateway keys from the store, keeping the last ones: %s", first_line(exc)
                    )
                self._failing = True
                return
            if self._failing:
                logger.info("Gateway keys readable again")
            self._failing = False
            self.keys.update(gateway_key(row) for row in rows)
            if self.on_loaded is not None:
                budgeted = [key for key in self.keys.stored() if key.budget_usd is not None and not key.revoked]
                try:
                    await self.on_loaded(budgeted, self.store.spend_since)
                except Exception as exc:  # the store's record is read again at the next refresh
                    logger.warning("Cannot read the budgeted keys' spend from the store: %s", first_line(exc))

    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.refresh()


def _names(data: Mapping[str, Any], field: str, *, required: bool = False) -> tuple[str, ...] | None:
    """A list of distinct non-empty strings (None when absent, unless ``required``)."""
    value = data.get(field)
    if value is None:
        if required:
            raise InvalidParameter(f"Field {field!r} is required: a non-empty list of strings.")
        return None
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        raise InvalidParameter(f"Field {field!r} must be a list of 1 to {MAX_LIST} strings, got {json_type(value)}.")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item or len(item) > 255 or "\x00" in item:
            raise InvalidParameter(
                f"Field {field!r}: every item must be a non-empty string of at most 255 characters, got {_shown(item)}."
            )
        if item not in names:
            names.append(item)
    return tuple(names)


def _positive_int(data: Mapping[str, Any], field: str) -> int | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise InvalidParameter(f"Field {field!r} must be an integer from 1 to {2**31 - 1}, got {_shown(value)}.")
    return value


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
