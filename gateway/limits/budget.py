"""Budget periods (UTC): a day from midnight, a week from Monday, a month from the 1st; and the spend one worker
counts for itself when there is no Redis.

Without Redis, a key's spend in this worker is what the store records for its calls that started before a recent
cutoff (the trace summaries, written by every replica, a second or so after each call), plus this worker's own
calls since that cutoff: exact for a single worker, and another replica's calls are seen within
``auth.refresh_interval_s`` and the cutoff's few seconds (``KeySync`` reads the store).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

# The store is asked for calls that started this long before its read: their summaries are written by then.
STORE_LAG_MS = 5_000


def period_bounds(period: str, now_ms: float | None = None) -> tuple[int, int]:
    """(start, end) in epoch ms of the ``day``, ``week`` or ``month`` (UTC) holding ``now_ms``."""
    moment = dt.datetime.fromtimestamp((time.time() * 1000 if now_ms is None else now_ms) / 1000, dt.UTC)
    day = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)
    if period == "day":
        start, end = day, day + dt.timedelta(days=1)
    elif period == "week":
        start = day - dt.timedelta(days=day.weekday())
        end = start + dt.timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class _KeySpend:
    period_start: int
    recorded: float = 0.0  # the store's sum over calls started in [period_start, cutoff)
    cutoff: int = 0
    own: list[tuple[int, float]] = field(default_factory=list)  # (call start ms, cost) of this worker's calls
    own_usd: float = 0.0  # their sum (a call's check reads it: no sum over the calls since the last sync)


class LocalSpend:
    """Per key and period: what this worker knows was spent (the store's record plus its own recent calls)."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeySpend] = {}

    def _entry(self, key_id: str, period_start: int) -> _KeySpend:
        entry = self._keys.get(key_id)
        if entry is None or entry.period_start != period_start:  # a new period starts from nothing
            entry = self._keys[key_id] = _KeySpend(period_start, cutoff=period_start)
        return entry

    def spent(self, key_id: str, period_start: int) -> float:
        entry = self._entry(key_id, period_start)
        return entry.recorded + entry.own_usd

    def add(self, key_id: str, period_start: int, started_ms: int, cost: float) -> None:
        entry = self._entry(key_id, period_start)
        entry.own.append((started_ms, cost))
        entry.own_usd += cost

    def record(self, key_id: str, period_start: int, recorded: float, cutoff: int) -> None:
        """The store's sum over this key's calls started in ``[period_start, cutoff)``: own calls before the
        cutoff are in it now."""
        entry = self._entry(key_id, period_start)
        entry.recorded = recorded
        entry.cutoff = cutoff
        entry.own = [(started, cost) for started, cost in entry.own if started >= cutoff]
        entry.own_usd = sum(cost for _, cost in entry.own)
