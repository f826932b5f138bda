"""The LLM bench's accounting: after the load, spans at the sink and summaries in the store vs requests.

The gateway says on ``GET /metrics`` how many spans it exported (``gateway_spans_exported_total``)
and dropped, by reason (``gateway_spans_dropped_total``), and how many trace summaries it dropped
(``gateway_trace_summaries_dropped_total``). The sink (``otlp_sink.py``) says how many spans
arrived, by kind; the SQLite store says how many summaries were written. ``accounting`` waits,
bounded, until those stop moving, and returns them side by side. Imports nothing from ``gateway``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from llm_servers import HttpServer

GATEWAY_REQUEST_METRICS = ("gateway_llm_requests_total",)


def get_text(url: str, timeout: float = 10.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError):
        return None


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text → {metric name: {label text: value}} (enough for counters)."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        with contextlib.suppress(ValueError):
            out.setdefault(name.strip(), {})[labels.rstrip("}")] = float(value)
    return out


def count_summaries(db: Path) -> tuple[int | None, str]:
    if not db.exists():
        return None, f"{db} does not exist"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return int(conn.execute("SELECT count(*) FROM trace_summaries").fetchone()[0]), ""
    except sqlite3.Error as exc:
        return None, f"cannot count trace_summaries in {db}: {exc}"


def accounting(
    gateway: HttpServer, sink: HttpServer, store_db: Path, client_requests: int, wait_s: float
) -> dict[str, Any]:
    """Wait (bounded) until spans and summaries stop moving, then compare them with the requests."""
    deadline = time.monotonic() + wait_s
    last: tuple[Any, ...] | None = None
    unchanged = 0
    while True:
        time.sleep(1.0)
        sink_counts = json.loads(get_text(sink.base + "/count") or "{}")
        metrics = parse_metrics(get_text(gateway.base + "/metrics") or "")
        stored, note = count_summaries(store_db)
        exported = sum(metrics.get("gateway_spans_exported_total", {}).values()) if metrics else None
        dropped_by_reason = metrics.get("gateway_spans_dropped_total", {})
        requests_metric = next((m for m in GATEWAY_REQUEST_METRICS if m in metrics), None)
        requests = int(sum(metrics[requests_metric].values())) if requests_metric else client_requests
        acc: dict[str, Any] = {
            "requests": requests,
            "requests_source": requests_metric or "client-side count (wrk leaves up to --conns requests uncounted)",
            "client_requests": client_requests,
            "sink_spans": sink_counts.get("spans", 0),
            "sink_server_spans": sink_counts.get("by_kind", {}).get("SERVER", 0),
            "sink_by_kind": sink_counts.get("by_kind", {}),
            "sink_by_name": sink_counts.get("by_name", {}),
            "sink_rejected": sink_counts.get("rejected", 0),
            "gateway_exported": int(exported)
            if exported is not None and "gateway_spans_exported_total" in metrics
            else None,
            "gateway_dropped": int(sum(dropped_by_reason.values())),
            "gateway_dropped_by_reason": {k: int(v) for k, v in dropped_by_reason.items() if v},
            "summaries_stored": stored,
            "summaries_note": note,
            "summaries_dropped": int(sum(metrics.get("gateway_trace_summaries_dropped_total", {}).values())),
        }
        state = (acc["sink_spans"], acc["gateway_exported"], acc["gateway_dropped"], stored, requests)
        settled = (
            acc["sink_spans"] == acc["gateway_exported"]
            and acc["sink_server_spans"] + acc["gateway_dropped"] >= requests
        )
        unchanged = unchanged + 1 if state == last else 0
        # Done when everything is accounted for, or nothing moved for 3 polls (> the 1 s export delay).
        if (settled and stored == requests) or unchanged >= 3 or time.monotonic() > deadline:
            return acc
        last = state
