"""What ``gateway eval run`` prints: the bar redrawn in place on a terminal, plain lines otherwise, the table."""

from __future__ import annotations

import io
from typing import Any

from judges.eval_display import Progress, progress_line, summary_table


def view(done: int, errors: int, total: int, **extra: Any) -> dict[str, Any]:
    return {"progress": {"done": done, "errors": errors, "pending": total - done, "total": total}, **extra}


def test_a_terminal_gets_one_line_redrawn_in_place() -> None:
    out = io.StringIO()
    progress = Progress(out=out, tty=True)
    progress.update([view(10, 1, 40), view(10, 0, 40)])
    progress.update([view(40, 1, 40), view(40, 0, 40)], final=True)
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[#######-----------------------] \x1b[31m20/80 items  1 error" in text
    assert "80/80 items" in text and "took" in text


def test_elsewhere_plain_lines() -> None:
    out = io.StringIO()
    progress = Progress(out=out, tty=False)
    progress.update([view(0, 0, 10)])
    progress.update([view(5, 0, 10)])  # within PLAIN_EVERY_S of the last line: not printed
    progress.update([view(10, 2, 10)], final=True)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("progress: 0/10 items  0 errors")
    assert lines[-1].startswith("progress: 10/10 items  2 errors") and len(lines) == 2
    assert "\x1b" not in out.getvalue()


def test_eta_and_rate() -> None:
    assert progress_line(50, 0, 100, 10.0, tty=False) == "progress: 50/100 items  0 errors  5.0 items/s  ETA 10 s"
    assert progress_line(0, 0, 100, 1.0, tty=False).endswith("ETA -")


def test_side_by_side_table() -> None:
    aggregate = {"count": 20, "errors": 0, "mean_score": 0.25, "pass_rate": 0.25, "labels": {}}
    better = {**aggregate, "mean_score": 1.0, "pass_rate": 1.0}
    runs = [
        view(20, 0, 20, id="a", status="completed", judges=["safety"], aggregates={"safety": aggregate},
             request={"target": {"route": "chat", "prompt": {"name": "qa", "version": 1}}}),
        view(20, 0, 20, id="b", status="completed", judges=["safety"], aggregates={"safety": better},
             request={"target": {"route": "chat", "prompt": {"name": "qa", "version": 2}}}),
    ]  # fmt: skip
    lines = summary_table(runs).splitlines()
    assert "qa/1" in lines[0] and lines[0].index("qa/1") < lines[0].index("qa/2")
    assert lines[1].split() == ["JUDGE", "N", "ERR", "MEAN", "PASS", "N", "ERR", "MEAN", "PASS"]
    assert lines[2].split() == ["safety", "20", "0", "0.250", "25%", "20", "0", "1.000", "100%"]
    assert "qa/2: completed, 20/20 items, 0 with errors (evaluation b)" in lines
