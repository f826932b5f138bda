"""A minimal OTLP/HTTP trace receiver for the LLM bench: it counts what the gateway exports.

``POST /v1/traces`` takes an ``ExportTraceServiceRequest`` in protobuf (gzip or not), decodes it
with opentelemetry-proto and counts the spans: in total, by kind (SERVER, CLIENT, ...) and by
name. ``GET /count`` answers those counts as JSON; ``POST /reset`` zeroes them; ``GET /ping`` is
readiness. Nothing is stored beyond the counters, so a long run costs no memory.

Run: ``python loadtest/otlp_sink.py --port 4318`` and point the gateway at it with
``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318``. Imports nothing from ``gateway``.
"""

from __future__ import annotations

import argparse
import gzip
import zlib
from collections import Counter

import orjson
import uvicorn
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_OK = ExportTraceServiceResponse().SerializeToString()
KIND_NAMES = {value: name.removeprefix("SPAN_KIND_") for name, value in Span.SpanKind.items()}


class SpanCounts:
    """Running totals of what arrived: spans, export calls, and spans by kind and by name."""

    def __init__(self) -> None:
        self.spans = 0
        self.exports = 0
        self.rejected = 0
        self.by_kind: Counter[str] = Counter()
        self.by_name: Counter[str] = Counter()

    def add(self, request: ExportTraceServiceRequest) -> None:
        self.exports += 1
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans += 1
                    self.by_kind[KIND_NAMES.get(span.kind, str(span.kind))] += 1
                    self.by_name[span.name] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "spans": self.spans,
            "exports": self.exports,
            "rejected": self.rejected,
            "by_kind": dict(self.by_kind),
            "by_name": dict(self.by_name),
        }


counts = SpanCounts()


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


async def traces(request: Request) -> Response:
    body = await request.body()
    if not request.headers.get("content-type", "").startswith(PROTOBUF):
        counts.rejected += 1
        message = f"expected Content-Type {PROTOBUF}, got {request.headers.get('content-type')!r}"
        return Response(orjson.dumps({"message": message}), status_code=415, media_type=JSON)
    try:
        decoded = ExportTraceServiceRequest.FromString(
            _decompress(body, request.headers.get("content-encoding", "").lower())
        )
    except (DecodeError, OSError, zlib.error) as exc:
        counts.rejected += 1
        return Response(orjson.dumps({"message": f"undecodable body: {exc}"}), status_code=400, media_type=JSON)
    counts.add(decoded)
    return Response(_OK, media_type=PROTOBUF)


async def count(request: Request) -> Response:
    return Response(orjson.dumps(counts.as_dict()), media_type=JSON)


async def reset(request: Request) -> Response:
    global counts
    counts = SpanCounts()
    return Response(orjson.dumps(counts.as_dict()), media_type=JSON)


async def ping(request: Request) -> Response:
    return Response(b"\n", media_type=JSON)


app = Starlette(
    routes=[
        Route("/v1/traces", traces, methods=["POST"]),
        Route("/count", count, methods=["GET"]),
        Route("/reset", reset, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
    ]
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args(argv)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
