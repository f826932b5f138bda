"""Judges' assessments logged to MLflow as feedback on the judged call's trace (``judges.export.mlflow``).

The gateway's spans reach MLflow through OTLP (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=<mlflow>/v1/traces``),
where a trace's id is ``tr-`` and the OTel trace id in hex. Each assessment a judge writes on a traced
call (``JudgeRunner`` hands it over with :meth:`MlflowFeedbackExporter.submit`) is posted to
``POST /api/3.0/mlflow/traces/tr-<trace id>/assessments``, the request ``mlflow.log_feedback`` makes:
the judge's name, its value (or, for an error assessment, MLflow's ``error`` with the error code and
message), its rationale, source ``LLM_JUDGE`` with the judge's prompt and version as ``source_id`` (``CODE``
and the function for a code judge), on
the judged span, with the gateway's assessment id, route, judge model and judge call's trace in its
metadata.

Off the judging path: ``submit`` appends to a bounded queue and returns (a full queue drops the
assessment, counted); one task posts up to ``concurrency`` at a time. MLflow refuses feedback on a trace
it does not hold yet (404: the spans are still in the exporter's batch), and may be down or slow: such an
assessment is tried again with backoff until ``trace_wait_s`` has passed since it was submitted, then
given up. Every outcome is counted in ``gateway_judge_mlflow_feedback_total{outcome}`` (``logged``,
``queue_full``, ``refused``: a 4xx other than 404, ``gave_up``, ``shutdown``); a failure is logged once
(per kind, until a post succeeds again), never raised into judging.

Nothing here ever writes to the store: the store's row is the record, MLflow a copy. A post whose answer
was lost may be repeated, so MLflow can hold a verdict twice; ``gateway.assessment_id`` in its metadata
tells them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from gateway import metrics
from gateway.judge_export_settings import MlflowFeedbackSettings
from gateway.store.assessments import LLM_JUDGE, Assessment

logger = logging.getLogger("judges.mlflow")

TRACE_ID_PREFIX: Final = "tr-"  # MLflow's id of an OTLP-ingested trace: tr-<32 hex digits>
ASSESSMENTS_PATH: Final = "/api/3.0/mlflow/traces/{trace_id}/assessments"
LOGGED: Final = "logged"
QUEUE_FULL: Final = "queue_full"
REFUSED: Final = "refused"
GAVE_UP: Final = "gave_up"
SHUTDOWN: Final = "shutdown"
_BACKOFF_START_S: Final = 0.5
_BACKOFF_MAX_S: Final = 10.0

FEEDBACK = metrics.counter(
    "gateway_judge_mlflow_feedback_total",
    "Assessments sent to MLflow as feedback (judges.export.mlflow), by outcome: logged, queue_full, "
    "refused (a 4xx answer), gave_up (no trace or no MLflow within trace_wait_s), shutdown.",
    ("outcome",),
)


def mlflow_trace_id(trace_id: str) -> str:
    """MLflow's id of the trace whose OTel trace id is ``trace_id`` (32 hex digits)."""
    return TRACE_ID_PREFIX + trace_id.lower()


def feedback_body(assessment: Assessment) -> dict[str, Any]:
    """The ``CreateAssessment`` body of an assessment (its ``trace_id`` must be set)."""
    assert assessment.trace_id is not None
    feedback: dict[str, Any] = {"value": assessment.value}
    if assessment.error_code is not None:
        error = {"error_code": assessment.error_code, "error_message": assessment.error_message or ""}
        feedback = {"value": None, "error": error}
    metadata = {"gateway.assessment_id": assessment.id}
    route = assessment.metadata.get("route")
    for key, value in (
        ("gateway.judge.route", route),
        ("gateway.judge.model", assessment.judge_model),
        ("gateway.judge.trace_id", assessment.judge_trace_id),
        ("gateway.evaluation_id", assessment.evaluation_id),
    ):
        if value is not None:
            metadata[key] = str(value)
    body: dict[str, Any] = {
        "assessment_name": assessment.name,
        "trace_id": mlflow_trace_id(assessment.trace_id),
        # MLflow's source types are ours: LLM_JUDGE, or CODE for a code judge (judges.code)
        "source": {
            "source_type": assessment.source_type or LLM_JUDGE,
            "source_id": assessment.source_id or assessment.name,
        },
        "feedback": feedback,
        "metadata": metadata,
    }
    if assessment.span_id is not None:
        body["span_id"] = assessment.span_id.lower()
    if assessment.rationale is not None:
        body["rationale"] = assessment.rationale
    return {"assessment": body}


@dataclass(order=True)
class _Pending:
    due: float  # monotonic: when to try it (next)
    seq: int
    body: dict[str, Any] = field(compare=False)
    deadline: float = field(compare=False)  # monotonic: give up after this
    backoff_s: float = field(compare=False, default=_BACKOFF_START_S)


class MlflowFeedbackExporter:
    """Posts assessments to one MLflow server as feedback, off the judging path (the module docstring).

    ``start`` in the event loop that judges; ``submit`` from it; ``close`` at shutdown."""

    def __init__(self, settings: MlflowFeedbackSettings, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        token = env.get(settings.token_env)
        self.settings = settings
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._heap: list[_Pending] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._warned: set[str] = set()
        self._closing = False

    @property
    def pending(self) -> int:
        """Assessments waiting to be sent (or sent again)."""
        return len(self._heap)

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.settings.tracking_uri, headers=self._headers, timeout=self.settings.timeout_s
        )
        self._task = asyncio.create_task(self._run(), name="judges-mlflow-feedback")

    def submit(self, assessment: Assessment) -> None:
        """Queue ``assessment`` for MLflow, when it is about a trace (else nothing); never blocks or raises."""
        if assessment.trace_id is None:
            return
        if self._closing:  # judging is over by then; counted all the same
            FEEDBACK.inc((SHUTDOWN,))
            return
        if len(self._heap) >= self.settings.queue_size:
            FEEDBACK.inc((QUEUE_FULL,))
            self._warn_once(QUEUE_FULL, "the queue holds judges.export.mlflow.queue_size assessments already")
            return
        now = time.monotonic()
        entry = _Pending(now, next(self._seq), feedback_body(assessment), now + self.settings.trace_wait_s)
        heapq.heappush(self._heap, entry)
        self._wake.set()

    async def close(self, timeout_s: float) -> None:
        """Send what is ready for at most ``timeout_s``; what is left is dropped (counted as ``shutdown``)."""
        self._closing = True
        task = self._task
        if task is not None:
            deadline = time.monotonic() + timeout_s
            while self._heap and time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._heap:
            FEEDBACK.inc((SHUTDOWN,), len(self._heap))
            logger.warning("%d assessment(s) not sent to MLflow at shutdown", len(self._heap))
            self._heap.clear()
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            ready: list[_Pending] = []
            while self._heap and self._heap[0].due <= now and len(ready) < self.settings.concurrency:
                ready.append(heapq.heappop(self._heap))
            if not ready:
                self._wake.clear()
                wait_s = self._heap[0].due - now if self._heap else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)
                continue
            await asyncio.gather(*(self._send(entry) for entry in ready))

    async def _send(self, entry: _Pending) -> None:
        assert self._client is not None
        trace_id = entry.body["assessment"]["trace_id"]
        try:
            answer = await self._client.post(ASSESSMENTS_PATH.format(trace_id=trace_id), json=entry.body)
        except httpx.HTTPError as exc:
            self._retry(entry, "unreachable", f"MLflow at {self.settings.tracking_uri} is unreachable ({exc!r})")
            return
        status = answer.status_code
        if status < 300:
            FEEDBACK.inc((LOGGED,))
            if self._warned:
                logger.info("Assessments reach MLflow at %s again", self.settings.tracking_uri)
                self._warned.clear()
        elif status == 404:  # the trace is not in MLflow yet (its spans are on their way), or never will be
            self._retry(entry, "no_trace", f"MLflow does not hold trace {trace_id} (yet)")
        elif status == 429 or status >= 500:
            self._retry(entry, "unavailable", f"MLflow answered {status}: {answer.text[:200]}")
        else:
            FEEDBACK.inc((REFUSED,))
            self._warn_once(REFUSED, f"MLflow refused feedback on trace {trace_id}: {status} {answer.text[:200]}")

    def _retry(self, entry: _Pending, kind: str, reason: str) -> None:
        now = time.monotonic()
        if self._closing:
            FEEDBACK.inc((SHUTDOWN,))
            return
        if now + entry.backoff_s > entry.deadline:
            FEEDBACK.inc((GAVE_UP,))
            self._warn_once(f"{GAVE_UP}:{kind}", f"{reason}; gave up after judges.export.mlflow.trace_wait_s")
            return
        entry.due = now + entry.backoff_s
        entry.backoff_s = min(entry.backoff_s * 2, _BACKOFF_MAX_S)
        heapq.heappush(self._heap, entry)

    def _warn_once(self, kind: str, message: str) -> None:
        """Log a failure the first time its kind happens (again after a post succeeds)."""
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning("Judge feedback to MLflow: %s (logged once: gateway_judge_mlflow_feedback_total)", message)
