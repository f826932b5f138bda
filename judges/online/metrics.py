"""The online judges' Prometheus counters (gateway/metrics.py).

- ``gateway_judge_jobs_enqueued_total{judge}``: online jobs the judge queue accepted;
- ``gateway_judge_jobs_dropped_total{reason}``: online jobs sampled but never queued, by reason:
  ``content_truncated`` (the call's captured content was cut to ``capture_max_chars``: a judge would
  grade half a conversation), ``buffer_full`` (the queue is slower than traffic: ``judges.online_buffer``
  jobs already wait), ``queue_unavailable`` (the queue refused or did not answer within
  ``judges.online_enqueue_timeout_s``, twice), ``queue_error`` (the queue raised something else: logged),
  ``shutdown`` (still buffered when the process stopped).
"""

from __future__ import annotations

from typing import Final

from gateway import metrics

LABEL_JUDGE: Final = "judge"
LABEL_REASON: Final = "reason"
CONTENT_TRUNCATED: Final = "content_truncated"
BUFFER_FULL: Final = "buffer_full"
QUEUE_UNAVAILABLE: Final = "queue_unavailable"
QUEUE_ERROR: Final = "queue_error"
SHUTDOWN: Final = "shutdown"

JOBS_ENQUEUED = metrics.counter(
    "gateway_judge_jobs_enqueued_total", "Online judge jobs the judge queue accepted, by judge.", (LABEL_JUDGE,)
)
JOBS_DROPPED = metrics.counter(
    "gateway_judge_jobs_dropped_total",
    "Online judge jobs sampled but not queued, by reason: content_truncated, buffer_full, queue_unavailable, "
    "queue_error, shutdown.",
    (LABEL_REASON,),
)
