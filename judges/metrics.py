"""The judges' Prometheus metrics (gateway/metrics.py: one dict update each, merged over workers).

- ``gateway_judge_calls_total{judge, outcome}``: one per assessment a judge wrote, ``outcome`` ``ok``
  or the assessment's ``error_code`` (``missing_field``, ``timeout``, ``no_json``, ...);
- ``gateway_judge_duration_seconds{judge, outcome}``: the time its LLM call(s) took, repair included
  (not the wait for a slot of ``judges.route_concurrency``);
- ``gateway_judge_score{judge, gateway_llm_route, prompt_version}``: the scores of successful
  assessments (a yes/no judge's 1.0 / 0.0, a scale's value), so a new prompt version's scores can be
  compared with the old one's on a dashboard.

The judge calls' own upstream requests are counted by the LLM proxy's metrics, under their route.
"""

from __future__ import annotations

from typing import Final

from gateway import metrics
from gateway.telemetry import semconv as sc

LABEL_JUDGE: Final = "judge"
LABEL_OUTCOME: Final = "outcome"
LABEL_PROMPT_VERSION: Final = "prompt_version"
OK: Final = "ok"

# Seconds: a judge call is an LLM call, 0.05 s to its 60 s default bound and beyond.
DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# Scores: yes/no (0, 1), small scales (1-5, 1-10), shares (0-1), and a coarse tail for larger ones.
SCORE_BUCKETS: Final = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 100.0)

CALLS = metrics.counter(
    "gateway_judge_calls_total",
    "Judge assessments written, by judge and outcome (ok, or the assessment's error_code).",
    (LABEL_JUDGE, LABEL_OUTCOME),
)
DURATION = metrics.histogram(
    "gateway_judge_duration_seconds",
    "Time a judge's LLM calls (its repair request included), or a code judge's function, took per assessment, seconds.",
    (LABEL_JUDGE, LABEL_OUTCOME),
    buckets=DURATION_BUCKETS,
)
SCORES = metrics.histogram(
    "gateway_judge_score",
    "Scores of successful judge assessments, by judge, the LLM route that ran it and the judge's prompt version.",
    (LABEL_JUDGE, sc.LABEL_ROUTE, LABEL_PROMPT_VERSION),
    buckets=SCORE_BUCKETS,
)


def record(judge: str, outcome: str, duration_s: float, score: float | None, route: str | None, version: int) -> None:
    """One assessment written."""
    labels = (judge, outcome)
    CALLS.inc(labels)
    DURATION.observe(labels, duration_s)
    if score is not None:
        SCORES.observe((judge, route or "", str(version)), score)
