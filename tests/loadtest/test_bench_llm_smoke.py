"""The LLM bench in its quick mode, for real: fake upstream, bare passthrough, gateway, OTLP sink.

It checks the harness, not the speed: every expected row is in the table with figures and no
errors, the 500-delta tool-call stream is counted, and every span and summary is accounted for
(the sink got what the gateway says it exported, and the drop counters explain any shortfall).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.loadtest._kit import load, run_script

MEASUREMENTS = (
    "throughput, closed loop",
    "latency at",
    "stream TTFC at",
    "Responses API latency at",
    "Responses API stream, time to first delta at",
)
TARGETS = ("fake upstream, direct", "bare starlette+httpx passthrough", "gateway")


def _table(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(header, [c.strip() for c in ln.strip("|").split("|")], strict=True)) for ln in lines[2:]]


def _number(cell: str) -> float:
    return float(cell.split(" ")[0].replace(",", ""))


def test_quick_run_reports_every_row_and_accounts_for_every_span(tmp_path: Path) -> None:
    out, markdown = tmp_path / "bench-llm.json", tmp_path / "bench-llm.md"
    result = run_script(
        "bench_llm.py",
        "--quick",
        "--targets",
        "direct,bare,gateway",
        "--out",
        str(out),
        "--markdown",
        str(markdown),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = markdown.read_text()

    rows = _table(text)
    found = {(row["measurement"].split(" req/s")[0].rstrip("0123456789 ,"), row["target"]) for row in rows}
    expected = {(m.rstrip(), t) for m in MEASUREMENTS for t in TARGETS}
    assert found == expected, text
    for row in rows:
        assert _number(row["req/s"]) > 0, row
        assert _number(row["p50 ms"]) > 0 and _number(row["p99 ms"]) >= _number(row["p50 ms"]), row
        assert row["errors"] == "0", row
    gateway_rows = [r for r in rows if r["target"] == "gateway"]
    assert all(r["vs bare"] != "–" for r in gateway_rows), gateway_rows

    record = json.loads(out.read_text())
    tools = record["tool_streams"]["gateway"]
    assert (tools["tool_deltas_min"], tools["tool_deltas_max"], tools["streams"]) == (500, 500, tools["sent"])
    assert record["tool_streams"]["direct"]["events_max"] == tools["events_max"]

    acc = record["accounting"]
    assert acc["requests_source"] == "gateway_llm_requests_total", acc
    assert acc["requests"] >= acc["client_requests"] > 0, acc
    # Every span the gateway says it exported reached the sink; any request without a SERVER span
    # there is covered by the gateway's drop counter.
    assert acc["sink_spans"] == acc["gateway_exported"], acc
    assert acc["sink_server_spans"] == acc["requests"] or (
        acc["requests"] - acc["sink_server_spans"] <= acc["gateway_dropped"]
    ), acc
    assert acc["summaries_stored"] == acc["requests"] or (
        acc["requests"] - acc["summaries_stored"] <= acc["summaries_dropped"]
    ), acc
    assert "No span lost:" in text and "Summaries stored:" in text and "Throughput vs bare passthrough:" in text
    assert "Responses API stream events:" in text and "(target equal: met)" in text, text
    cells = [c for c in record["cells"] if c["phase"] == "responses_stream"]
    assert {c["target"] for c in cells} == {"direct", "bare", "gateway"}
    assert len({(c["events_min"], c["events_max"]) for c in cells}) == 1 and cells[0]["events_min"] > 0


def test_event_counter_splits_sse_across_chunk_boundaries() -> None:
    """The client counts what a browser would: events split by blank lines, wherever the bytes break."""
    client = load("llm_client")
    answer = client.Answer(status=200, close=False)
    counter = client.EventCounter(answer)
    stream = (
        b": keep-alive\r\n\r\n"
        b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]}\r\n\r\n'
        b'data: {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    for i in range(0, len(stream), 7):  # 7-byte pieces split "\r\n" pairs and "data:" prefixes
        counter.feed(stream[i : i + 7])
    assert (answer.events, answer.tool_deltas, answer.done) == (2, 1, True)
    assert answer.first_event_ns > 0


def test_event_counter_times_the_first_event_of_a_type() -> None:
    """With a type, the time to first event is that of the first event of that type (the Responses API's first
    output delta, not its response.created)."""
    client = load("llm_client")
    answer = client.Answer(status=200, close=False)
    counter = client.EventCounter(answer, b"response.output_text.delta")
    counter.feed(b'event: response.created\ndata: {"type":"response.created"}\n\n')
    assert answer.first_event_ns == 0 and answer.events == 1
    counter.feed(b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hi"}\n\n')
    assert answer.first_event_ns > 0 and answer.events == 2
