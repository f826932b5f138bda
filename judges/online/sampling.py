"""Which judges grade a trace: one number ``u`` in [0, 1) per trace, from a keyed BLAKE2b hash of its
trace id, and every judge whose rate exceeds ``u`` runs.

``u`` depends on the trace id alone (never on Python's ``hash()``, which is salted per process by
``PYTHONHASHSEED``), so every replica, every worker process and a replay decide alike. And since a
judge at rate r runs exactly when ``u < r``, the traces a judge at 0.05 grades are a subset of those
a judge at 0.2 grades: rates compose, and a judge added at a higher rate sees the lower ones' traces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final

# The hash key: fixed, so decisions are stable across processes, restarts and releases. Changing it
# re-draws every trace's number (a different, equally uniform sample).
SAMPLING_KEY: Final = b"gateway.judges.online.v1"
_SCALE: Final = float(1 << 53)  # 53 bits: every u is a float below 1.0 exactly


def sample_point(trace_id: str) -> float:
    """``u`` in [0, 1) for a trace id (32 hex digits, as stored; any text works): the top 53 bits of
    its 8-byte keyed BLAKE2b digest, as a fraction of 2**53."""
    digest = hashlib.blake2b(trace_id.encode("ascii", "replace"), digest_size=8, key=SAMPLING_KEY).digest()
    return (int.from_bytes(digest, "big") >> 11) / _SCALE


def sampled_judges(rates: Mapping[str, float], u: float) -> list[str]:
    """The judges whose rate exceeds ``u`` (rate 1 always runs, rate 0 never), in ``rates`` order."""
    return [name for name, rate in rates.items() if rate > u]


def sampled_share(trace_ids: Iterable[str], rate: float) -> float:
    """The share of ``trace_ids`` a judge at ``rate`` grades (for checks and benchmarks)."""
    ids = list(trace_ids)
    return sum(1 for trace_id in ids if sample_point(trace_id) < rate) / len(ids) if ids else 0.0
