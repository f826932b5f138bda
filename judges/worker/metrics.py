"""The judge workers' Prometheus metrics (gateway/metrics.py), by judge:

- ``gateway_judge_jobs_running``: jobs in hand now (this process);
- ``gateway_judge_jobs_total{judge, outcome}``: jobs finished: ``written`` (this run wrote the
  assessment), ``existing`` (it was already there: no call), ``duplicate`` (this run called the judge and
  found the row written by another run of the same job: a duplicate judge call), ``skipped`` (a judge
  call's own trace, never judged; a job of a cancelled or failed evaluation run), ``expired`` (past
  ``max_job_age_s``: an error assessment);
- ``gateway_judge_jobs_retried_total{judge, reason}``: ``transient`` (429, 5xx, timeouts: no attempt
  used), ``not_ready`` (the trace is not stored yet), ``failed`` (an attempt used);
- ``gateway_judge_duplicate_calls_total{judge, reason}``: judge calls that may repeat an earlier one:
  ``concurrent`` (the row was written by another run of the job while this one called the judge: two
  workers held it), ``redelivered`` (a job delivered again, its earlier holder gone, called the judge:
  the earlier one may have called it too and died before writing);
- ``gateway_judge_paused_total{judge}``: pauses for a configuration failure;
- ``gateway_judge_dead_letters_total{judge}``: jobs moved to the dead letters;
- ``gateway_judge_job_wait_seconds{judge}``: enqueue to start (each delivery);
- ``gateway_judge_job_seconds{judge}``: enqueue to done (the ack).
"""

from __future__ import annotations

from typing import Final

from gateway import metrics

LABEL_JUDGE: Final = "judge"
# Seconds from enqueue: a job may wait behind a backlog or a pause for minutes.
LATENCY_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

RUNNING = metrics.gauge("gateway_judge_jobs_running", "Judge jobs in hand in this process.", (LABEL_JUDGE,))
JOBS = metrics.counter(
    "gateway_judge_jobs_total",
    "Judge jobs finished, by outcome (written, existing, duplicate, skipped, expired).",
    (LABEL_JUDGE, "outcome"),
)
RETRIED = metrics.counter(
    "gateway_judge_jobs_retried_total",
    "Judge jobs handed back for later, by reason (transient, not_ready, failed).",
    (LABEL_JUDGE, "reason"),
)
DUPLICATE_CALLS = metrics.counter(
    "gateway_judge_duplicate_calls_total",
    "Judge calls that may repeat an earlier call of the same job, by reason (concurrent, redelivered).",
    (LABEL_JUDGE, "reason"),
)
PAUSED = metrics.counter(
    "gateway_judge_paused_total", "Judges paused for a configuration failure (401, unknown route).", (LABEL_JUDGE,)
)
DEAD_LETTERS = metrics.counter(
    "gateway_judge_dead_letters_total", "Judge jobs moved to the dead letters.", (LABEL_JUDGE,)
)
WAIT = metrics.histogram(
    "gateway_judge_job_wait_seconds",
    "Judge jobs' time from enqueue to start, seconds.",
    (LABEL_JUDGE,),
    buckets=LATENCY_BUCKETS,
)
DONE = metrics.histogram(
    "gateway_judge_job_seconds",
    "Judge jobs' time from enqueue to done (assessment committed, job acked), seconds.",
    (LABEL_JUDGE,),
    buckets=LATENCY_BUCKETS,
)
