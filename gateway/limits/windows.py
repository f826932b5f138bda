"""Sliding-minute windows: what one check answers, and the counts one worker keeps for itself without Redis.

A key's requests and tokens per minute are sliding windows, kept as a log: each admitted call is an entry (its
time and amount: 1 request; the tokens it reserved, corrected to its real usage when it ends) that counts for
exactly 60 s. So a key with ``rpm: 20`` never has more than 20 calls admitted in any 60 s, and a refused call is
told when the oldest entries it must wait for leave the window (Retry-After). gateway/limits/redis_counts.py keeps
the same log in Redis with one Lua script per check; ``LocalCounts`` keeps it in this process.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from gateway.limits.budget import LocalSpend

WINDOW_S = 60.0

# Why a check refused a call.
REQUESTS, TOKENS, TOO_LARGE, BUDGET = "requests", "tokens", "too_large", "budget"


@dataclass(slots=True)
class Verdict:
    """One check's answer: ``refused`` is None (admitted) or why; the counts are after the call was admitted."""

    refused: str | None
    requests_used: int = 0
    requests_reset_s: float = 0.0  # until the window holds no request (OpenAI's "resets to its initial state")
    tokens_used: int = 0
    tokens_reset_s: float = 0.0
    retry_after_s: float = 0.0  # refused: until the call would fit
    spent_usd: float = 0.0


@dataclass(slots=True)
class Ticket:
    """What a check asks, and then what its call settles: the subject (a key's id, or ``route:<name>`` for a
    route's own limits) and its limits, the tokens reserved, its budget period, and the backend's handles on the
    reservation."""

    key_id: str
    call_id: str
    rpm: int
    tpm: int
    reserved: int
    budget_usd: float | None
    period_start: int
    period_end: int
    started_ms: int
    handle: Any = None  # the token entry
    request_handle: Any = None  # the request entry (given back when another limit refuses the call)


class Window:
    """One limit's last minute: entries ``[time, amount, counted]``, oldest first, and their total."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[list[Any]] = deque()
        self.total = 0

    def trim(self, now: float) -> None:
        entries, edge = self.entries, now - WINDOW_S
        while entries and entries[0][0] <= edge:
            entry = entries.popleft()
            entry[2] = False
            self.total -= entry[1]

    def add(self, now: float, amount: int) -> list[Any]:
        entry = [now, amount, True]
        self.entries.append(entry)
        self.total += amount
        return entry

    def correct(self, entry: list[Any], amount: int, now: float) -> None:
        """The entry's real amount; an entry that already left the window is counted again from now."""
        if entry[2]:
            self.total += amount - entry[1]
            entry[1] = amount
        elif amount > 0:
            self.add(now, amount)

    def wait_for(self, need: int, now: float) -> float:
        """Seconds until entries totalling ``need`` have left the window."""
        freed = 0
        for started, amount, _ in self.entries:
            freed += amount
            if freed >= need:
                return max(0.0, float(started) + WINDOW_S - now)
        return WINDOW_S

    def reset_after(self, now: float) -> float:
        return float(self.entries[-1][0]) + WINDOW_S - now if self.entries else 0.0


class LocalCounts:
    """Per key (and per route with limits of its own): its two windows and its spend, in this process (documented
    as per worker without Redis)."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[Window, Window]] = {}
        self.spend = LocalSpend()

    def admit(self, ticket: Ticket) -> Verdict:
        spent = 0.0
        if ticket.budget_usd is not None:
            spent = self.spend.spent(ticket.key_id, ticket.period_start)
            if spent >= ticket.budget_usd:
                return Verdict(BUDGET, spent_usd=spent)
        windows = self._windows.get(ticket.key_id)
        if windows is None:
            windows = self._windows[ticket.key_id] = (Window(), Window())
        requests, tokens = windows
        now = time.monotonic()
        refused: str | None = None
        retry = 0.0
        if ticket.rpm:
            requests.trim(now)
            if requests.total >= ticket.rpm:
                refused, retry = REQUESTS, requests.wait_for(requests.total - ticket.rpm + 1, now)
        if ticket.tpm:
            tokens.trim(now)
            if refused is None and tokens.total + ticket.reserved > ticket.tpm:
                if ticket.reserved > ticket.tpm:
                    refused, retry = TOO_LARGE, 0.0
                else:
                    refused, retry = TOKENS, tokens.wait_for(tokens.total + ticket.reserved - ticket.tpm, now)
        if refused is None:
            if ticket.rpm:
                ticket.request_handle = requests.add(now, 1)
            if ticket.tpm:
                ticket.handle = tokens.add(now, ticket.reserved)
        return Verdict(
            refused,
            requests.total,
            requests.reset_after(now),
            tokens.total,
            tokens.reset_after(now),
            retry,
            spent,
        )

    def refund(self, ticket: Ticket) -> None:
        """Give back an admitted call's request and tokens (another of its limits refused it)."""
        windows = self._windows.get(ticket.key_id)
        if windows is None:
            return
        now = time.monotonic()
        if ticket.request_handle is not None:
            windows[0].correct(ticket.request_handle, 0, now)
        if ticket.handle is not None:
            windows[1].correct(ticket.handle, 0, now)

    def settle(self, ticket: Ticket, tokens_used: int | None, cost_usd: float | None) -> None:
        if ticket.tpm and tokens_used is not None and ticket.handle is not None:
            self._windows[ticket.key_id][1].correct(ticket.handle, tokens_used, time.monotonic())
        if cost_usd and ticket.budget_usd is not None:
            self.spend.add(ticket.key_id, ticket.period_start, ticket.started_ms, cost_usd)
