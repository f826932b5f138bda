"""A closed-loop HTTP/1.1 keep-alive load generator: the bench's fallback when ``wrk`` is absent.

Each of ``--conns`` connections sends one request, reads the whole response, records the
latency and sends the next, until ``--duration`` seconds have passed; requests in flight at the
deadline finish (bounded by ``--timeout``). Raw asyncio streams (uvloop when installed), the
request bytes built once, responses framed by ``Content-Length`` or chunked encoding: no HTTP
client library on the hot path (what one core drives: docs/benchmarks.md, "Caveats"). The bench
runs it in its own process, pinned away from the server's cores when there are spare ones.

Prints one JSON object: requests, status counts, errors (non-200 answers, socket errors,
timeouts), latency percentiles in microseconds, the measured duration and the generator's own
CPU seconds (if that approaches the duration, the generator is the bottleneck).

Usage: ``python loadtest/loadgen.py --url http://127.0.0.1:8080/invocations --body-file b.json
--conns 16 --duration 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Stats:
    latencies_ns: list[int] = field(default_factory=list)
    status: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0
    timeouts: int = 0
    last_done: float = 0.0


def build_request(method: str, host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive", "Accept: */*"]
    if body or method == "POST":
        head += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, server_wants_close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length >= 0:
        await reader.readexactly(length)
    else:
        await reader.read()  # no framing: the body runs to the end of the connection
        close = True
    return status, close


async def connection(host: str, port: int, request: bytes, deadline: float, timeout: float, stats: Stats) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                async with asyncio.timeout(timeout):
                    reader, writer = await asyncio.open_connection(host, port)
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert reader is not None
            start = time.perf_counter_ns()
            async with asyncio.timeout(timeout):
                writer.write(request)
                status, close = await read_response(reader)
            stats.latencies_ns.append(time.perf_counter_ns() - start)
            stats.status[status] = stats.status.get(status, 0) + 1
            stats.last_done = time.monotonic()
            if close:
                writer.close()
                writer = None
        except TimeoutError:
            stats.timeouts += 1
            _drop(writer)
            writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            stats.socket_errors += 1
            _drop(writer)
            writer = None
            await asyncio.sleep(0.01)  # bounded by the deadline; avoids a hot reconnect loop
    _drop(writer)


def _drop(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[index])


async def run(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    path = url.path or "/"
    body = open(args.body_file, "rb").read() if args.body_file else b""  # noqa: SIM115
    method = args.method or ("POST" if body else "GET")
    request = build_request(method, host, port, path, body, args.content_type)
    stats = Stats()
    gc.collect()
    gc.disable()  # no collector pauses inside the measured latencies; the run is bounded
    cpu0 = time.process_time()
    start = time.monotonic()
    deadline = start + args.duration
    tasks = [
        asyncio.create_task(connection(host, port, request, deadline, args.timeout, stats)) for _ in range(args.conns)
    ]
    await asyncio.gather(*tasks)
    gc.enable()
    elapsed = max(stats.last_done, deadline) - start
    lat = sorted(stats.latencies_ns)
    requests = len(lat)
    non200 = sum(n for code, n in stats.status.items() if code != 200)
    return {
        "generator": "loadgen.py",
        "requests": requests,
        "duration_s": elapsed,
        "rps": requests / elapsed if elapsed > 0 else 0.0,
        "status": {str(k): v for k, v in sorted(stats.status.items())},
        "non200": non200,
        "socket_errors": stats.socket_errors,
        "timeouts": stats.timeouts,
        "errors": non200 + stats.socket_errors + stats.timeouts,
        "latency_us": {
            "p50": percentile(lat, 50) / 1e3,
            "p90": percentile(lat, 90) / 1e3,
            "p99": percentile(lat, 99) / 1e3,
            "max": (lat[-1] / 1e3) if lat else float("nan"),
            "mean": (sum(lat) / len(lat) / 1e3) if lat else float("nan"),
        },
        "generator_cpu_s": time.process_time() - cpu0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="http://host:port/path (plain HTTP only)")
    parser.add_argument("--body-file", help="request body file (POST when given)")
    parser.add_argument("--method", help="HTTP method (default: POST with a body, else GET)")
    parser.add_argument("--content-type", default="application/json", help="Content-Type of the body")
    parser.add_argument("--conns", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to send requests")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a request counts as a timeout")
    args = parser.parse_args(argv)
    if args.conns < 1 or args.duration <= 0:
        parser.error("--conns must be >= 1 and --duration > 0")
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
