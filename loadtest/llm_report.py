"""The LLM bench's report: cells in, one markdown table (req/s, p50, p99, ratios) and verdicts out.

Rows (``PHASES`` × targets), medians over repeats:

- ``throughput``: closed loop (wrk) at ``--conns``; req/s ratios gateway ÷ bare and ÷ LiteLLM.
- ``latency``: paced at ``--rate`` req/s over ``--conns`` connections; the added latency of a
  proxy is, per repeat, its p50 (p99) minus the direct upstream's p50 (p99) in the same repeat,
  then the median over repeats. A difference of percentiles, not a percentile of differences.
- ``stream``: paced streaming requests; p50/p99 are the time to the first SSE event (TTFC),
  and the added TTFC is taken the same way.
- ``responses`` and ``responses_stream``: the same two paced cells with the request in the Responses
  API's form (``POST /v1/responses``); the stream's p50/p99 are the time to the first
  ``response.output_text.delta`` event (the first output, after ``response.created`` and the
  other opening events), and the events per stream are counted, direct and through each proxy.

Below the table: the tool-call stream's event counts, the span and summary accounting, and one
verdict line per issue target (met / MISSED / not measured, never assumed).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable
from typing import Any

PHASES = ("throughput", "latency", "stream", "responses", "responses_stream")
LABELS = {
    "direct": "fake upstream, direct",
    "bare": "bare starlette+httpx passthrough",
    "gateway": "gateway",
    "litellm": "LiteLLM proxy",
}
HEADER = (
    "| measurement | target | conns | req/s | p50 ms | p99 ms | errors | vs direct | vs bare | vs LiteLLM "
    "| server CPU µs/req |"
)
COLUMNS = 11


@dataclasses.dataclass
class Cell:
    """One measured cell, or one that failed (``failure`` says why)."""

    phase: str
    target: str
    rep: int
    conns: int
    rps: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    requests: int = 0
    errors: int = 0
    late: int = 0
    server_cpu_us_per_req: float = float("nan")
    generator: str = ""
    generator_cpu_frac: float = float("nan")
    failure: str = ""
    first_error: str = ""
    events_min: int = 0  # events per stream (streaming cells)
    events_max: int = 0


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def fmt(value: float, digits: int = 1, sign: bool = False) -> str:
    if value != value:
        return "–"
    return f"{value:+,.{digits}f}" if sign else f"{value:,.{digits}f}"


def ratio(a: float, b: float) -> float:
    return a / b if a == a and b == b and b else float("nan")


class Results:
    """Cells by (phase, target), with medians and per-repeat differences."""

    def __init__(self, cells: list[Cell]) -> None:
        self.cells = cells

    def ok(self, phase: str, target: str) -> list[Cell]:
        return [c for c in self.cells if c.phase == phase and c.target == target and not c.failure]

    def has(self, phase: str, target: str) -> bool:
        return any(c.phase == phase and c.target == target for c in self.cells)

    def med(self, phase: str, target: str, key: str) -> float:
        return median(getattr(c, key) for c in self.ok(phase, target))

    def added(self, phase: str, target: str, key: str, base: str = "direct") -> float:
        """Median over repeats of (target − base) for ``key``, pairing cells of the same repeat."""
        base_by_rep = {c.rep: getattr(c, key) for c in self.ok(phase, base)}
        return median(getattr(c, key) - base_by_rep[c.rep] for c in self.ok(phase, target) if c.rep in base_by_rep)

    def failure(self, phase: str, target: str) -> str:
        """Why ``phase`` has no figure for ``target`` (a target that never started fails in ``throughput``)."""
        for where in (phase, "throughput"):
            found = {c.failure for c in self.cells if c.phase == where and c.target == target and c.failure}
            if found:
                return "; ".join(sorted(found))
        return "not in this run"


def _phase_label(phase: str, conns: int, rate: float, stream_rate: float) -> str:
    if phase == "throughput":
        return "throughput, closed loop"
    if phase == "latency":
        return f"latency at {fmt(rate, 0)} req/s"
    if phase == "responses":
        return f"Responses API latency at {fmt(rate, 0)} req/s"
    if phase == "responses_stream":
        return f"Responses API stream, time to first delta at {fmt(stream_rate, 0)} req/s"
    return f"stream TTFC at {fmt(stream_rate, 0)} req/s"


def render(results: Results, targets: list[str], rate: float, stream_rate: float, notes: list[str]) -> str:
    lines = [HEADER, "|" + "---|" * COLUMNS]
    out_notes = list(notes)
    for phase in PHASES:
        for target in targets:
            if not results.has(phase, target):
                continue
            group = [c for c in results.cells if c.phase == phase and c.target == target]
            where = (
                f"| {_phase_label(phase, group[0].conns, rate, stream_rate)} | {LABELS[target]} | {group[0].conns} |"
            )
            ok = results.ok(phase, target)
            if not ok:
                lines.append(where + " – |" * (COLUMNS - 3))
                out_notes.append(f"{phase}, {LABELS[target]}: not measured: {results.failure(phase, target)[:300]}")
                continue
            rps_values = [c.rps for c in ok]
            rps = fmt(median(rps_values), 0)
            if len(ok) > 1:
                rps += f" ({fmt(min(rps_values), 0)}–{fmt(max(rps_values), 0)})"
            errors = sum(c.errors for c in ok)
            vs_direct = vs_bare = vs_litellm = "–"
            if phase == "throughput":
                mine = results.med(phase, target, "rps")
                if target != "direct":
                    vs_direct = _times(ratio(mine, results.med(phase, "direct", "rps")), 2)
                if target in ("gateway", "litellm"):
                    vs_bare = _times(ratio(mine, results.med(phase, "bare", "rps")), 2)
                if target == "gateway":
                    vs_litellm = _times(ratio(mine, results.med(phase, "litellm", "rps")), 1)
            else:
                if target != "direct":
                    vs_direct = _added(results, phase, target, "direct")
                if target == "gateway":
                    vs_bare = _added(results, phase, target, "bare")
            lines.append(
                f"{where} {rps} | {fmt(results.med(phase, target, 'p50_ms'), 2)} "
                f"| {fmt(results.med(phase, target, 'p99_ms'), 2)} | {errors} | {vs_direct} | {vs_bare} | {vs_litellm} "
                f"| {fmt(results.med(phase, target, 'server_cpu_us_per_req'), 0)} |"
            )
            late = sum(c.late for c in ok)
            if late:
                out_notes.append(f"{phase}, {LABELS[target]}: {late} request(s) sent > 1 ms after their slot")
            if errors:
                first = next((c.first_error for c in ok if c.first_error), "")
                out_notes.append(f"{phase}, {LABELS[target]}: {errors} error(s); first: {first[:200]}")
            if max(c.generator_cpu_frac for c in ok) > 0.9:
                out_notes.append(f"{phase}, {LABELS[target]}: the load generator used > 90% of a core")
    if out_notes:
        lines.append("")
        lines.extend(f"- {note}" for note in out_notes)
    return "\n".join(lines)


def _times(value: float, digits: int) -> str:
    return fmt(value, digits) + ("x" if value == value else "")


def _added(results: Results, phase: str, target: str, base: str) -> str:
    p50 = results.added(phase, target, "p50_ms", base)
    p99 = results.added(phase, target, "p99_ms", base)
    if p50 != p50:
        return "–"
    return f"{fmt(p50, 2, sign=True)} / {fmt(p99, 2, sign=True)} ms"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def verdicts(results: Results, tools: dict[str, Any], accounting: dict[str, Any], deltas: int) -> list[str]:
    """One line per issue target, from this run's figures only."""
    out: list[str] = []
    p50 = results.added("latency", "gateway", "p50_ms")
    p99 = results.added("latency", "gateway", "p99_ms")
    if p50 == p50:
        out.append(
            f"Added latency vs direct: p50 {fmt(p50, 2, sign=True)} ms (target <= 1 ms: {_verdict(p50 <= 1)}), "
            f"p99 {fmt(p99, 2, sign=True)} ms (target <= 5 ms: {_verdict(p99 <= 5)})"
        )
    else:
        out.append("Added latency: not measured (" + results.failure("latency", "gateway") + ")")
    gw = results.med("throughput", "gateway", "rps")
    bare = results.med("throughput", "bare", "rps")
    if gw == gw and bare == bare:
        r = ratio(gw, bare)
        out.append(f"Throughput vs bare passthrough: {fmt(r, 2)}x (target >= 0.8x: {_verdict(r >= 0.8)})")
    else:
        out.append("Throughput vs bare passthrough: not measured")
    litellm = results.med("throughput", "litellm", "rps")
    if gw == gw and litellm == litellm:
        r = ratio(gw, litellm)
        out.append(f"Throughput vs LiteLLM proxy: {fmt(r, 1)}x (target >= 5x: {_verdict(r >= 5)})")
    else:
        why = results.failure("throughput", "litellm")
        out.append(f"Throughput vs LiteLLM proxy: not measured ({why})")
    ttfc = results.added("stream", "gateway", "p99_ms")
    if ttfc == ttfc:
        out.append(f"Added TTFC p99 vs direct: {fmt(ttfc, 2, sign=True)} ms (target <= 2 ms: {_verdict(ttfc <= 2)})")
    else:
        out.append("Added TTFC: not measured (" + results.failure("stream", "gateway") + ")")
    out.extend(responses_verdicts(results))
    gw_tools = tools.get("gateway")
    if gw_tools and not gw_tools.get("failure"):
        counts = sorted({gw_tools["tool_deltas_min"], gw_tools["tool_deltas_max"]})
        ok = counts == [deltas] and gw_tools["streams"] == gw_tools["sent"] and not gw_tools["errors"]
        direct = tools.get("direct") or {}
        direct_counts = sorted({direct.get("tool_deltas_min", "–"), direct.get("tool_deltas_max", "–")}, key=str)
        out.append(
            f"{deltas}-delta tool-call stream through the gateway: {gw_tools['streams']} of {gw_tools['sent']} "
            f"stream(s), {'-'.join(map(str, counts))} tool-call delta events each "
            f"({gw_tools['events_min']}-{gw_tools['events_max']} events with data in all; upstream direct: "
            f"{'-'.join(map(str, direct_counts))} deltas, {direct.get('events_min', '–')}-"
            f"{direct.get('events_max', '–')} events) (target {deltas}: {_verdict(ok)})"
        )
    else:
        out.append(f"{deltas}-delta tool-call stream: not measured ({(gw_tools or {}).get('failure', 'no gateway')})")
    if accounting:
        out.append(span_verdict(accounting))
        out.append(summary_verdict(accounting))
    return out


def responses_verdicts(results: Results) -> list[str]:
    """The Responses API cells against the chat path's targets (<= 1 ms added p50, <= 2 ms added time to the
    first delta at p99), beside the chat path's own figures, and its events in and out."""
    out: list[str] = []
    p50 = results.added("responses", "gateway", "p50_ms")
    if p50 == p50:
        chat = results.added("latency", "gateway", "p50_ms")
        out.append(
            f"Responses API added latency vs direct: p50 {fmt(p50, 2, sign=True)} ms (chat: {fmt(chat, 2, sign=True)} "
            f"ms; target <= 1 ms: {_verdict(p50 <= 1)})"
        )
    else:
        out.append("Responses API added latency: not measured (" + results.failure("responses", "gateway") + ")")
    ttfd = results.added("responses_stream", "gateway", "p99_ms")
    if ttfd == ttfd:
        chat = results.added("stream", "gateway", "p99_ms")
        out.append(
            f"Responses API added time to first delta p99 vs direct: {fmt(ttfd, 2, sign=True)} ms (chat TTFC: "
            f"{fmt(chat, 2, sign=True)} ms; target <= 2 ms: {_verdict(ttfd <= 2)})"
        )
    else:
        out.append(
            "Responses API time to first delta: not measured (" + results.failure("responses_stream", "gateway") + ")"
        )
    direct, gateway = results.ok("responses_stream", "direct"), results.ok("responses_stream", "gateway")
    if direct and gateway:
        counts_in = sorted({c.events_min for c in direct} | {c.events_max for c in direct})
        counts_out = sorted({c.events_min for c in gateway} | {c.events_max for c in gateway})
        out.append(
            f"Responses API stream events: {'-'.join(map(str, counts_out))} per stream through the gateway, "
            f"{'-'.join(map(str, counts_in))} direct (target equal: {_verdict(counts_in == counts_out)})"
        )
    return out


def span_verdict(acc: dict[str, Any]) -> str:
    sink, exported, dropped = acc["sink_spans"], acc["gateway_exported"], acc["gateway_dropped"]
    requests, server = acc["requests"], acc["sink_server_spans"]
    if exported is None:
        return f"No span lost: not measurable (the gateway's /metrics has no gateway_spans_exported_total); sink {sink}"
    consistent = sink == exported
    all_there = server == requests and dropped == 0
    explained = (requests - server) <= dropped and dropped > 0
    ok = consistent and (all_there or explained)
    state = "met" if ok and all_there else ("met (drops counted)" if ok else "MISSED")
    return (
        f"No span lost: sink received {sink} span(s) ({server} SERVER) for {requests} LLM request(s); the gateway "
        f"says exported {exported}, dropped {dropped} {acc['gateway_dropped_by_reason']} ({state})"
    )


def summary_verdict(acc: dict[str, Any]) -> str:
    stored, requests, dropped = acc["summaries_stored"], acc["requests"], acc["summaries_dropped"]
    if stored is None:
        return f"Summaries stored: not measurable ({acc.get('summaries_note', 'no store')})"
    ok = stored == requests or (requests - stored) <= (dropped or 0)
    return (
        f"Summaries stored: {stored} for {requests} LLM request(s); the gateway says dropped {dropped} ({_verdict(ok)})"
    )
