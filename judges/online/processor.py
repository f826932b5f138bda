"""The span processor that turns a finished LLM call into judge jobs, off the request path.

Registered on the app's TracerProvider beside the trace-summary sink (gateway/telemetry/store_sink.py).
``on_end`` runs on the thread that ends the span (the event loop, after the client has its answer, as
the call is recorded): for the proxy's SERVER span of an LLM call (``is_llm_summary_span``) whose
route has online rules, it matches the rules, samples (judges/online/sampling.py) and appends one
``JudgeJob(kind="online")`` per sampled judge to the bounded :class:`JobBuffer`. No I/O, no waiting:
the shipper (judges/online/shipper.py) carries the jobs to the queue.

Never sampled: a judge's own call (its top span carries ``gateway.judge.*``: judges/runner.py), even
when the judge's route has online rules (the worker checks again when the job runs); an INTERNAL span
(an in-process call); a call that failed (no answer to grade). A call whose captured content was cut
(``gateway.llm.content_truncated``) is skipped, its sampled jobs counted as dropped (``content_truncated``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from gateway.telemetry import semconv as sc
from gateway.telemetry.store_sink import is_llm_summary_span
from judges.online import metrics
from judges.online.buffer import JobBuffer
from judges.online.rules import OnlineRules
from judges.online.sampling import sample_point, sampled_judges
from judges.queue.jobs import ONLINE, JudgeJob

logger = logging.getLogger("judges.online")

# The gateway.judge.* attributes a judge's call carries (judges/runner.py sets them all; any one is enough).
JUDGE_ATTRIBUTES: Final = (
    sc.GATEWAY_JUDGE_NAME,
    sc.GATEWAY_JUDGE_PROMPT_NAME,
    sc.GATEWAY_JUDGE_PROMPT_VERSION,
    sc.GATEWAY_JUDGE_TARGET_TRACE_ID,
    sc.GATEWAY_JUDGE_TARGET_SPAN_ID,
)


def is_judge_call(attributes: Mapping[str, Any]) -> bool:
    """A judge's own LLM call: its top span carries a ``gateway.judge.*`` attribute (five lookups, not a
    scan of every attribute: this runs on the span's end)."""
    return any(name in attributes for name in JUDGE_ATTRIBUTES)


class OnlineJudgeProcessor(SpanProcessor):
    """Samples finished LLM calls against ``rules`` and appends their judge jobs to ``buffer``."""

    def __init__(self, rules: OnlineRules, buffer: JobBuffer) -> None:
        self.rules = rules
        self.buffer = buffer

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.kind is not SpanKind.SERVER or not is_llm_summary_span(span):
            return
        try:
            self._sample(span)
        except Exception:  # telemetry never breaks a request: say so in the log
            logger.exception("Could not sample span %s for online judges", span.name)

    def _sample(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        rates = self.rules.rates_for(attributes)
        if not rates or is_judge_call(attributes) or span.status.status_code is StatusCode.ERROR:
            return
        status = attributes.get(sc.HTTP_RESPONSE_STATUS_CODE)
        if isinstance(status, int) and status >= 400:
            return
        context = span.context
        if context is None:
            return
        trace_id = format(context.trace_id, "032x")
        judges = sampled_judges(rates, sample_point(trace_id))
        if not judges:
            return
        if attributes.get(sc.GATEWAY_LLM_CONTENT_TRUNCATED) is True:
            metrics.JOBS_DROPPED.inc((metrics.CONTENT_TRUNCATED,), len(judges))
            return
        span_id = format(context.span_id, "016x")
        now = time.time()
        self.buffer.put([JudgeJob(ONLINE, judge, now, trace_id=trace_id, span_id=span_id) for judge in judges])

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
