"""A real OTLP/HTTP trace and log receiver on loopback for tests.

It accepts ``POST /v1/traces`` and ``POST /v1/logs`` with ``application/x-protobuf`` (gzip or not),
decodes each body with ``opentelemetry-proto``'s ``ExportTraceServiceRequest`` or
``ExportLogsServiceRequest`` and keeps the spans and log records (events) for assertions. It can be
told to be slow (``delay_s``: each export waits before the answer) or down (``stop()``: the port
refuses connections; ``start()`` listens on the same port again). :func:`black_hole` is the other
kind of outage: a port that accepts connections and never answers.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

SERVER = Span.SpanKind.SPAN_KIND_SERVER
CLIENT = Span.SpanKind.SPAN_KIND_CLIENT
INTERNAL = Span.SpanKind.SPAN_KIND_INTERNAL


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span, with its resource's and scope's identity. Ids are lowercase hex ("" for no parent)."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: int
    start_ns: int
    end_ns: int

    @property
    def is_error(self) -> bool:
        return self.status_code == Status.StatusCode.STATUS_CODE_ERROR


@dataclass(frozen=True)
class ReceivedLogRecord:
    """One decoded log record (an event when ``event_name`` is set). Ids are lowercase hex ("" when absent);
    ``attribute_kinds`` names each attribute's OTLP ``AnyValue`` field (``double_value``, ``string_value``...)."""

    event_name: str
    trace_id: str
    span_id: str
    flags: int
    attributes: dict[str, Any]
    attribute_kinds: dict[str, str]
    resource: dict[str, Any]
    scope: str
    time_ns: int
    severity_number: int


def any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    if which == "bytes_value":
        return bytes(value.bytes_value)
    return getattr(value, which)


def attributes_of(pairs: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        result[pair.key] = any_value(pair.value)
    return result


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=span.kind,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=attributes_of(span.attributes),
                        resource=resource,
                        scope=scope_spans.scope.name,
                        status_code=span.status.code,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                )
    return spans


def decode_logs(body: bytes) -> list[ReceivedLogRecord]:
    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    records: list[ReceivedLogRecord] = []
    for resource_logs in request.resource_logs:
        resource = attributes_of(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                records.append(
                    ReceivedLogRecord(
                        event_name=record.event_name,
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                        flags=record.flags,
                        attributes=attributes_of(record.attributes),
                        attribute_kinds={kv.key: str(kv.value.WhichOneof("value")) for kv in record.attributes},
                        resource=resource,
                        scope=scope_logs.scope.name,
                        time_ns=record.time_unix_nano,
                        severity_number=record.severity_number,
                    )
                )
    return records


@dataclass(eq=False)
class OtlpReceiver:
    """Start with ``start()`` (or use :func:`otlp_receiver`); ``endpoint`` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    host: str = "127.0.0.1"
    port: int = 0
    delay_s: float = 0.0
    spans: list[ReceivedSpan] = field(default_factory=list)
    logs: list[ReceivedLogRecord] = field(default_factory=list)
    requests: int = 0  # trace exports
    log_requests: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _released: threading.Event = field(default_factory=threading.Event)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if self.path not in ("/v1/traces", "/v1/logs"):
                    self._answer(404, b"not found", "text/plain")
                    return
                if self.headers.get("content-type") != "application/x-protobuf":
                    self._answer(415, b"expected application/x-protobuf", "text/plain")
                    return
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/logs":
                    records = decode_logs(body)
                    answer = ExportLogsServiceResponse().SerializeToString()
                else:
                    spans = decode(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                if receiver.delay_s > 0:
                    receiver._released.wait(receiver.delay_s)
                with receiver._lock:
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                    if self.path == "/v1/logs":
                        receiver.log_requests += 1
                        receiver.logs.extend(records)
                    else:
                        receiver.requests += 1
                        receiver.spans.extend(spans)
                self._answer(200, answer, "application/x-protobuf")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._released.clear()
        self._thread = threading.Thread(target=server.serve_forever, name=f"otlp-receiver-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the port: exports now fail to connect. Slow exports in progress are answered at once."""
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def received(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 15.0) -> list[ReceivedSpan]:
        """The spans received once ``predicate`` holds for them; AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.received()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({s.name for s in spans})
                raise AssertionError(
                    f"OTLP receiver: condition not met within {timeout_s} s; got {len(spans)} spans {names}"
                )
            time.sleep(0.02)

    def received_logs(self) -> list[ReceivedLogRecord]:
        with self._lock:
            return list(self.logs)

    def wait_for_logs(
        self, predicate: Callable[[list[ReceivedLogRecord]], bool], timeout_s: float = 15.0
    ) -> list[ReceivedLogRecord]:
        """The log records received once ``predicate`` holds for them; AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            records = self.received_logs()
            if predicate(records):
                return records
            if time.monotonic() > deadline:
                names = sorted({r.event_name for r in records})
                raise AssertionError(
                    f"OTLP receiver: condition not met within {timeout_s} s; got {len(records)} log records {names}"
                )
            time.sleep(0.02)


@contextmanager
def otlp_receiver(delay_s: float = 0.0) -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(delay_s=delay_s)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@contextmanager
def black_hole() -> Iterator[str]:
    """An endpoint (``http://127.0.0.1:PORT``) whose port accepts TCP connections (the kernel completes
    them from the listen backlog) and never reads nor answers: an export to it hangs until its timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
