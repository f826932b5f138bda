"""The LLM bench's own load client: paced requests, time to first SSE event, events per stream.

wrk measures whole responses; it cannot see when the first chunk of a stream arrives, and a
closed loop at saturation measures queueing more than a proxy's cost. This client does what
wrk cannot, on raw asyncio streams (uvloop when installed) with the request bytes built once:

- ``--rate R --duration D``: ``--conns`` keep-alive connections send ``R`` requests per second
  in total on a fixed schedule (each connection every ``conns / R`` s, connections staggered).
  Latency runs from the *scheduled* send time, so a server that stalls is charged for the
  requests it delayed (no coordinated omission); ``late`` counts requests sent more than 1 ms
  after their slot because the previous answer on that connection was still coming.
- otherwise a closed loop (each connection sends its next request when the answer is in) for
  ``--duration`` seconds, or until ``--requests N`` requests in total have been sent. This is
  the bench's fallback for wrk, and the way it sends a fixed number of streams.

Every answer is read to its end (``Content-Length`` or chunked). For ``text/event-stream``
answers it records the time to the first complete SSE event with a ``data:`` field (TTFC) and
counts the events (``[DONE]`` counted apart) and, among them, the tool-call deltas. With
``--first-event TYPE`` the TTFC is the time to the first event of that type instead (``event: TYPE``,
or ``"type": "TYPE"`` in its data): ``response.output_text.delta`` times the Responses API's first
output delta rather than its ``response.created``. Prints one
JSON object with percentiles in microseconds. Imports nothing from ``gateway``.

Usage: ``python loadtest/llm_client.py --url http://127.0.0.1:8080/v1/chat/completions
--body-file body.json --conns 32 --rate 500 --duration 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import re
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LATE_NS = 1_000_000
TOOL_DELTA = re.compile(rb'"tool_calls"\s*:\s*\[')  # a delta's list, not finish_reason "tool_calls"


@dataclass
class Stats:
    latencies_ns: list[int] = field(default_factory=list)
    ttfc_ns: list[int] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    tool_deltas: list[int] = field(default_factory=list)
    done_markers: int = 0
    status: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0
    timeouts: int = 0
    late: int = 0
    first_error: str = ""


@dataclass
class Answer:
    status: int
    close: bool
    first_event_ns: int = 0  # perf_counter_ns when the first data event completed; 0 if none
    events: int = 0
    tool_deltas: int = 0  # events whose delta carries tool_calls (a tool call's name or argument piece)
    done: bool = False
    body_start: bytes = b""


def build_request(host: str, port: int, path: str, body: bytes, headers: list[str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive", "Accept: */*"]
    head += ["Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class EventCounter:
    """Splits a de-chunked SSE body into events as bytes arrive; notes when the first data event (or the first
    event of type ``first_event``) ends."""

    def __init__(self, answer: Answer, first_event: bytes | None = None) -> None:
        self.answer = answer
        self.pending = b""
        self.marks = (b"event: " + first_event, b'"type":"' + first_event + b'"') if first_event else None

    def feed(self, data: bytes) -> None:
        self.pending = (self.pending + data).replace(b"\r\n", b"\n")
        *complete, self.pending = self.pending.split(b"\n\n")
        for event in complete:
            lines = [ln for ln in event.split(b"\n") if ln.startswith(b"data:")]
            if not lines:
                continue  # a comment or keep-alive, not an event with data
            if lines[0][5:].strip() == b"[DONE]":
                self.answer.done = True
                continue
            if not self.answer.first_event_ns and (self.marks is None or any(m in event for m in self.marks)):
                self.answer.first_event_ns = time.perf_counter_ns()
            self.answer.events += 1
            if TOOL_DELTA.search(lines[0]):
                self.answer.tool_deltas += 1


async def read_answer(reader: asyncio.StreamReader, first_event: bytes | None = None) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    answer = Answer(status=int(head[9:12]), close=False)
    length = -1
    chunked = sse = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            answer.close = True
        elif name == b"content-type" and b"text/event-stream" in value.lower():
            sse = True
    counter = EventCounter(answer, first_event) if sse else None
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            if counter is not None:
                counter.feed(data[:-2])
            if len(answer.body_start) < 300:
                answer.body_start += data[:-2][:300]
    elif length >= 0:
        data = await reader.readexactly(length)
        answer.body_start = data[:300]
        if counter is not None:
            counter.feed(data)
    else:
        data = await reader.read()
        answer.body_start = data[:300]
        answer.close = True
        if counter is not None:
            counter.feed(data)
    if counter is not None and counter.pending.strip():
        counter.feed(b"\n\n")  # a last event without its blank line still counts
    return answer


class ClosedLoop:
    """Hands out closed-loop turns until ``requests`` are used up (0 = no cap) or ``deadline`` passes."""

    def __init__(self, requests: int, deadline: float) -> None:
        self.left = requests if requests > 0 else -1
        self.deadline = deadline

    def __iter__(self) -> ClosedLoop:
        return self

    def __next__(self) -> int:
        if self.left == 0 or time.monotonic() >= self.deadline:
            raise StopIteration
        self.left -= 1
        return 0


async def _open(host: str, port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def connection(
    host: str, port: int, request: bytes, slots: Iterable[int], args: argparse.Namespace, stats: Stats
) -> None:
    """Send one request per slot (a perf_counter_ns schedule; 0 = as soon as possible)."""
    timeout: float = args.timeout
    first_event = args.first_event.encode() if args.first_event else None
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    with contextlib.suppress(OSError, TimeoutError):  # connect before the first slot; retried below if it failed
        reader, writer = await _open(host, port, timeout)
    for slot in slots:
        now = time.perf_counter_ns()
        if slot and slot > now:
            await asyncio.sleep((slot - now) / 1e9)
        elif slot and now - slot > LATE_NS:
            stats.late += 1
        try:
            if writer is None:
                reader, writer = await _open(host, port, timeout)
            assert reader is not None
            start = slot or time.perf_counter_ns()
            async with asyncio.timeout(timeout):
                writer.write(request)
                answer = await read_answer(reader, first_event)
            stats.latencies_ns.append(time.perf_counter_ns() - start)
            stats.status[answer.status] = stats.status.get(answer.status, 0) + 1
            if answer.status != 200 and not stats.first_error:
                stats.first_error = f"HTTP {answer.status}: {answer.body_start.decode(errors='replace')}"
            if answer.first_event_ns:
                stats.ttfc_ns.append(answer.first_event_ns - start)
            if answer.events or answer.done:
                stats.events.append(answer.events)
                stats.tool_deltas.append(answer.tool_deltas)
                stats.done_markers += answer.done
            if answer.close:
                writer.close()
                writer = None
        except TimeoutError:
            stats.timeouts += 1
            _drop(writer)
            writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            stats.socket_errors += 1
            stats.first_error = stats.first_error or repr(exc)
            _drop(writer)
            writer = None
            await asyncio.sleep(0.01)
    _drop(writer)


def _drop(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[index])


def _percentiles_us(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 50) / 1e3,
        "p90": percentile(ordered, 90) / 1e3,
        "p99": percentile(ordered, 99) / 1e3,
        "max": ordered[-1] / 1e3 if ordered else float("nan"),
    }


def paced_slots(conns: int, rate: float, duration: float, start_ns: int) -> list[list[int]]:
    """Per connection, its send times: ``rate`` per second in total, connections staggered."""
    total = max(1, round(rate * duration))
    step = 1e9 / rate
    return [[start_ns + round(i * step) for i in range(c, total, conns)] for c in range(conns)]


async def run(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body = open(args.body_file, "rb").read()  # noqa: SIM115
    request = build_request(host, port, url.path or "/", body, args.header)
    stats = Stats()
    gc.collect()
    gc.disable()  # no collector pauses inside the measured latencies; the run is bounded
    cpu0 = time.process_time()
    plans: list[Iterable[int]]
    if args.rate > 0:
        start = time.perf_counter_ns() + 200_000_000  # 200 ms to open the connections, also on a busy machine
        plans = list(paced_slots(args.conns, args.rate, args.duration, start))
    else:
        start = time.perf_counter_ns()
        shared = ClosedLoop(args.requests, time.monotonic() + (args.duration if args.requests <= 0 else 1e9))
        plans = [shared] * args.conns
    await asyncio.gather(*(connection(host, port, request, plan, args, stats) for plan in plans))
    elapsed = (time.perf_counter_ns() - start) / 1e9
    gc.enable()
    non200 = sum(n for code, n in stats.status.items() if code != 200)
    return {
        "generator": "llm_client.py",
        "requests": len(stats.latencies_ns),
        "duration_s": elapsed,
        "rps": len(stats.latencies_ns) / elapsed if elapsed > 0 else 0.0,
        "target_rate": args.rate,
        "late": stats.late,
        "status": {str(k): v for k, v in sorted(stats.status.items())},
        "non200": non200,
        "socket_errors": stats.socket_errors,
        "timeouts": stats.timeouts,
        "errors": non200 + stats.socket_errors + stats.timeouts,
        "first_error": stats.first_error[:300],
        "latency_us": _percentiles_us(stats.latencies_ns),
        "ttfc_us": _percentiles_us(stats.ttfc_ns),
        "streams": len(stats.events),
        "events_min": min(stats.events, default=0),
        "events_max": max(stats.events, default=0),
        "tool_deltas_min": min(stats.tool_deltas, default=0),
        "tool_deltas_max": max(stats.tool_deltas, default=0),
        "done_markers": stats.done_markers,
        "generator_cpu_s": time.process_time() - cpu0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="http://host:port/path (plain HTTP only)")
    parser.add_argument("--body-file", required=True, help="JSON request body (POST)")
    parser.add_argument("--header", action="append", default=[], help="extra request header 'Name: value'")
    parser.add_argument("--conns", type=int, default=1, help="concurrent keep-alive connections")
    parser.add_argument("--rate", type=float, default=0.0, help="total requests per second (paced mode)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of paced sending")
    parser.add_argument("--requests", type=int, default=0, help="closed loop: stop after this many requests")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as a timeout")
    parser.add_argument("--first-event", default=None, help="TTFC is to the first SSE event of this type")
    args = parser.parse_args(argv)
    if args.conns < 1 or args.duration <= 0 or (args.rate > 0 and args.requests > 0):
        parser.error("--conns must be >= 1, --duration > 0, and --rate and --requests cannot be combined")
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
