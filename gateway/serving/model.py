"""A loaded model version and the path of one ``/invocations`` request through it."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from opentelemetry.trace import Span

from gateway.config import ServingSettings
from gateway.errors import GatewayError
from gateway.json_depth import DEFAULT_MAX_JSON_DEPTH
from gateway.serving.batch_settings import BatchSettings, resolve_batch_settings
from gateway.serving.batcher import Batcher
from gateway.serving.enforcement import enforce_input, enforce_params
from gateway.serving.limits import DEFAULT_MAX_ROWS, DEFAULT_PARSE_OFFLOAD_BYTES, LARGE_BODIES
from gateway.serving.output import to_jsonable
from gateway.serving.package import ModelPackage, read_package, read_serving_input_example, resolve_source
from gateway.serving.payload import parse_request
from gateway.serving.runtimes._common import predict_error
from gateway.serving.runtimes.loading import load_runtime
from gateway.serving.signature import Signature, parse_signature
from gateway.serving.tick_batcher import TickBatcher
from gateway.serving.types import Frame, ParsedRequest, Runtime
from gateway.telemetry.semconv import GATEWAY_REQUEST_ROWS

logger = logging.getLogger("gateway.serving")


# A request with more rows than this always runs in the model's thread, however fast the model.
INLINE_MAX_ROWS = 64
_WARM_UP_RUNS = 7


def _rows(data: Any) -> int:
    if isinstance(data, Frame):
        return data.nrows
    if isinstance(data, np.ndarray):
        return int(data.shape[0]) if data.ndim else 1
    if isinstance(data, dict) and data:
        first = next(iter(data.values()))
        return len(first) if hasattr(first, "__len__") else 1
    return INLINE_MAX_ROWS + 1  # unknown shape: never inline


@dataclass(eq=False)
class LoadedModel:
    """One model version with its runtime, ready to answer requests.

    The runtime runs in a single executor thread of its own, so a slow model never stalls the
    event loop; its ``Batcher`` queues requests for that thread and joins concurrent ones into one
    call. The exception is a model whose warm-up calls took at most ``inline_max_us``: for such a
    model (such as the iris demo) the hop to a thread and back costs more than the call,
    so requests of up to ``INLINE_MAX_ROWS`` rows run inline on the loop and never queue.
    ``in_flight`` counts requests using it, so an evicted model is unloaded only once idle.
    """

    name: str
    version: int
    source: str
    package: ModelPackage
    signature: Signature | None
    runtime: Runtime
    loaded_at: float = field(default_factory=time.time)
    in_flight: int = 0
    evicted: bool = False
    unloading: bool = False
    run_inline: bool = False
    warm_up_us: float | None = None
    batch: BatchSettings = field(default_factory=BatchSettings)
    max_rows: int | None = DEFAULT_MAX_ROWS  # serving.max_rows
    parse_offload_bytes: int = DEFAULT_PARSE_OFFLOAD_BYTES  # serving.parse_offload_bytes
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH  # http.max_json_depth
    _executor: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.name}-{self.version}")
        self.batcher = Batcher(self._predict, self._executor, self.batch, name=self.name, version=self.version)
        # Inline requests of one loop iteration share a call when batching is on (see tick_batcher).
        self.tick_batcher = (
            TickBatcher(self._predict, to_jsonable, self.batch.max_batch_rows) if self.batch.batching else None
        )
        self.headers = {"X-Model-Name": self.name, "X-Model-Version": str(self.version)}
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        # A 200 answer's headers after content-length (the serving fast path sends them as they are).
        self.json_headers = [(b"content-type", b"application/json"), *self.raw_headers]
        signature = self.signature
        self._input_schema = signature.inputs if signature is not None else None
        self._param_specs = signature.params if signature is not None else None
        # Metric labels, built once (the request path only looks them up).
        self.metric_labels = (self.name, str(self.version))
        self.ok_labels = (self.name, str(self.version), "200")

    async def invoke(
        self,
        body: bytes,
        content_type: str | None,
        *,
        started: float | None = None,
        timeout_s: float | None = None,
        span: Span | None = None,
    ) -> tuple[Any, bool]:
        """Parse, check and predict; returns (jsonable prediction, unwrapped).

        ``started`` (``time.monotonic()`` when the request arrived) and ``timeout_s`` (the client's
        deadline) matter only to a request that queues: an inline one runs at once. ``span``, the
        request's SERVER span when spans are exported, learns how many rows the request holds.
        """
        if len(body) > self.parse_offload_bytes:  # seconds of parsing for a large one: off the loop
            try:
                return await self._invoke_large(body, content_type, started, timeout_s, span)
            finally:
                LARGE_BODIES.release_memory_soon()
        parsed, data, params = self._parse(body, content_type)
        rows = _rows(data)
        if span is not None:
            span.set_attribute(GATEWAY_REQUEST_ROWS, rows)
        if self.run_inline and rows <= INLINE_MAX_ROWS:
            tick = self.tick_batcher
            if tick is not None and params is None:
                joined = tick.join(data)
                if joined is not None:
                    return await joined, parsed.unwrapped  # shaped for JSON already
            prediction = self._predict(data, params)
        else:
            prediction = await self.batcher.submit(
                data, params, started=time.monotonic() if started is None else started, timeout_s=timeout_s
            )
        return to_jsonable(prediction), parsed.unwrapped

    def _parse(self, body: bytes, content_type: str | None) -> tuple[ParsedRequest, Any, dict[str, Any] | None]:
        """Parse and enforce the signature: the request's data and params, ready for the model."""
        # rows counted and nesting measured before conversion
        parsed = parse_request(body, content_type, self.signature, self.max_rows, self.max_json_depth)
        # MLflow enforces the schema on unified-LLM bodies (a dict) too.
        data = enforce_input(parsed.data, self._input_schema)
        params = enforce_params(parsed.params, self._param_specs)
        return parsed, data, params

    async def _invoke_large(
        self, body: bytes, content_type: str | None, started: float | None, timeout_s: float | None, span: Span | None
    ) -> tuple[Any, bool]:
        """A body over ``parse_offload_bytes``: parsed in a parser thread, then always run in the model's
        thread (never inline), its output shaped for JSON there too."""
        parsed, data, params = await LARGE_BODIES.run(lambda: self._parse(body, content_type))
        if span is not None:
            span.set_attribute(GATEWAY_REQUEST_ROWS, _rows(data))
        prediction = await self.batcher.submit(
            data, params, started=time.monotonic() if started is None else started, timeout_s=timeout_s
        )
        return await LARGE_BODIES.run(lambda: to_jsonable(prediction)), parsed.unwrapped

    def _predict(self, data: Any, params: dict[str, Any] | None) -> Any:
        try:
            return self.runtime.predict(data, params)
        except GatewayError:
            raise
        except Exception as exc:
            # Runtimes map model errors themselves; anything else is logged with its traceback.
            logger.exception("Model %s version %s raised while predicting", self.name, self.version)
            raise predict_error(exc) from exc

    def warm_up(self, inline_max_us: float) -> None:
        """Blocking: run the package's input example a few times (the first calls of a runtime are
        slow) and decide from the median call time whether small requests run inline."""
        body = read_serving_input_example(self.package)
        if body is None:
            logger.info("Model %s version %s has no input example: not warmed up", self.name, self.version)
            return
        signature = self.signature
        timings: list[float] = []
        try:
            parsed = parse_request(body, "application/json", signature)
            data = enforce_input(parsed.data, signature.inputs if signature is not None else None)
            params = enforce_params(parsed.params, signature.params if signature is not None else None)
            for _ in range(_WARM_UP_RUNS):
                started = time.perf_counter()
                self._predict(data, params)
                timings.append((time.perf_counter() - started) * 1e6)
        except GatewayError as exc:
            logger.warning(
                "Model %s version %s failed on its own input example: %s", self.name, self.version, exc.message
            )
            return
        # Drop the first (cold) call; the median of the rest is the steady cost.
        self.warm_up_us = sorted(timings[1:])[len(timings[1:]) // 2]
        self.run_inline = self.warm_up_us <= inline_max_us and _rows(data) <= INLINE_MAX_ROWS
        logger.info(
            "Model %s version %s warmed up: %.0f us per call on its input example; %s",
            self.name,
            self.version,
            self.warm_up_us,
            "small requests run inline" if self.run_inline else "runs in its own thread",
        )

    def unload(self) -> None:
        self._executor.shutdown(wait=True)
        self.runtime.unload()
        self.batcher.close()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "flavor": self.package.flavor,
            "loaded_at": self.loaded_at,
            "warm_up_us": None if self.warm_up_us is None else round(self.warm_up_us, 1),
            "execution": "inline" if self.run_inline else "thread",
            "inline_batching": (
                self.tick_batcher.stats.as_dict() if self.tick_batcher is not None and self.run_inline else None
            ),
            "batching": self.batch.describe(),
            **self.batcher.describe(),
        }


def load_model(
    name: str,
    version: int,
    source: str,
    tags: Mapping[str, str] | None = None,
    *,
    artifact_roots: Sequence[Path],
    intra_op_num_threads: int | None,
    inline_max_us: float = 0.0,
    serving: ServingSettings | None = None,
    allow_spinning: bool | None = None,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> LoadedModel:
    """Blocking: resolve the package, build the runtime, warm it up. Raises InvalidPackage on a bad
    package or a bad ``gateway.*`` batching tag. ``serving`` holds the batching defaults and per-model
    overrides (none: the built-in defaults); ``allow_spinning=False`` stops onnxruntime's idle spin;
    ``max_json_depth`` is ``http.max_json_depth``, for the JSON bodies it is sent."""
    batch = resolve_batch_settings(name, version, tags or {}, serving or ServingSettings())
    path = resolve_source(source, artifact_roots)
    package = read_package(path)
    signature = parse_signature(package.signature)
    runtime = load_runtime(package, intra_op_num_threads=intra_op_num_threads, allow_spinning=allow_spinning)
    model = LoadedModel(
        name=name,
        version=version,
        source=source,
        package=package,
        signature=signature,
        runtime=runtime,
        batch=batch,
        max_rows=(serving or ServingSettings()).max_rows,
        parse_offload_bytes=(serving or ServingSettings()).parse_offload_bytes,
        max_json_depth=max_json_depth,
    )
    model.warm_up(inline_max_us)
    return model
