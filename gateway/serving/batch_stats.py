"""The counters ``GET /models`` shows for a version's batchers (per worker): ``BatchStats`` for the
queued ``Batcher``, ``TickStats`` for the inline ``TickBatcher``; both are ``BatchCounters``."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class BatchCounters:
    """Integer counters, each a field, shown by name in field order."""

    def as_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(slots=True)
class BatchStats(BatchCounters):
    """Counters of the queued ``Batcher``, shown by ``GET /models`` under ``stats``."""

    requests: int = 0
    runs: int = 0
    rows: int = 0
    batched_runs: int = 0  # runs that served more than one request or chunk
    largest_batch_requests: int = 0
    largest_batch_rows: int = 0
    split_requests: int = 0
    bisections: int = 0
    rejected_queue_full: int = 0
    expired: int = 0


@dataclass(slots=True)
class TickStats(BatchCounters):
    """Counters of the inline ``TickBatcher``, shown by ``GET /models`` under ``inline_batching``."""

    flushes: int = 0
    joined_calls: int = 0  # model calls that served more than one request
    joined_requests: int = 0  # requests answered by such calls
    largest_joined_requests: int = 0
    largest_joined_rows: int = 0
    reruns: int = 0  # joined calls that failed or misaligned and were rerun request by request
