"""What ``gateway eval run`` prints: the live progress (a bar redrawn in place on a terminal, a plain line
every few seconds otherwise), the summary table per judge (one column group per evaluation, so prompt
versions compared on one dataset stand side by side), and the JSON document of ``--json``. Plain ANSI
text: no terminal library.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

BAR_WIDTH = 30
PLAIN_EVERY_S = 5.0


@dataclass
class Progress:
    """Progress over every run of one command (runs compared side by side share one bar)."""

    out: TextIO = field(default_factory=lambda: sys.stderr)
    tty: bool | None = None
    started: float = field(default_factory=time.monotonic)
    _last_plain: float = 0.0
    _last_line: str = ""
    _drawn: bool = False

    def __post_init__(self) -> None:
        if self.tty is None:
            self.tty = self.out.isatty()

    def update(self, views: Sequence[Mapping[str, Any]], *, final: bool = False) -> None:
        done = sum(v["progress"]["done"] for v in views)
        errors = sum(v["progress"]["errors"] for v in views)
        total = sum(v["progress"]["total"] for v in views)
        line = progress_line(done, errors, total, time.monotonic() - self.started, tty=bool(self.tty))
        if self.tty:
            self.out.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self.out.flush()
            self._drawn = not final
            return
        now = time.monotonic()
        if final or (now - self._last_plain >= PLAIN_EVERY_S and line != self._last_line):
            self.out.write(line + "\n")
            self.out.flush()
            self._last_plain, self._last_line = now, line

    def clear(self) -> None:
        if self.tty and self._drawn:
            self.out.write("\r\x1b[2K")
            self.out.flush()
            self._drawn = False


def progress_line(done: int, errors: int, total: int, elapsed_s: float, *, tty: bool) -> str:
    """``[#####-----] 120/1000 items  2 errors  41.3 items/s  ETA 21 s`` (no bar when not a terminal)."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = f"ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else "ETA -"
    if done >= total:
        eta = f"took {_duration(elapsed_s)}"
    text = f"{done}/{total} items  {errors} error{'s' if errors != 1 else ''}  {rate:.1f} items/s  {eta}"
    if not tty:
        return "progress: " + text
    filled = int(BAR_WIDTH * done / total) if total else BAR_WIDTH
    error_color = "\x1b[31m" if errors else ""
    reset = "\x1b[0m" if errors else ""
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {error_color}{text}{reset}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def column_label(view: Mapping[str, Any]) -> str:
    """How a run is named in the table: its prompt version (``qa/3``), else its target route, else ``items``."""
    target = view["request"].get("target")
    if target:
        prompt = target.get("prompt")
        if prompt:
            return f"{prompt['name']}/{prompt['version']}"
        return f"route {target['route']}"
    return view["request"].get("name") or "evaluation"


def summary_table(views: Sequence[Mapping[str, Any]]) -> str:
    """One row per judge; per run: N (verdicts), ERR (errors), MEAN (mean score), PASS (share of true verdicts)."""
    judges: list[str] = []
    for view in views:
        judges.extend(name for name in view["judges"] if name not in judges)
    cells = ("N", "ERR", "MEAN", "PASS")
    widths = (5, 4, 6, 6)
    group_width = sum(widths) + len(widths) - 1
    name_width = max([len("JUDGE"), *map(len, judges)])
    lines: list[str] = []
    if len(views) > 1:
        labels = [column_label(v)[:group_width].center(group_width) for v in views]
        lines.append(" " * name_width + "  " + "   ".join(labels))
    header = "   ".join(" ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) for _ in views)
    lines.append("JUDGE".ljust(name_width) + "  " + header)
    for name in judges:
        groups = []
        for view in views:
            aggregate = view["aggregates"].get(name)
            values = _cells(aggregate) if aggregate is not None else ("-", "-", "-", "-")
            groups.append(" ".join(v.rjust(w) for v, w in zip(values, widths, strict=True)))
        lines.append(name.ljust(name_width) + "  " + "   ".join(groups))
    footer = []
    for view in views:
        progress = view["progress"]
        footer.append(f"{column_label(view)}: {view['status']}, {progress['done']}/{progress['total']} items, "
                      f"{progress['errors']} with errors (evaluation {view['id']})")  # fmt: skip
    return "\n".join([*lines, "", *footer])


def _cells(aggregate: Mapping[str, Any]) -> tuple[str, str, str, str]:
    mean, rate = aggregate["mean_score"], aggregate["pass_rate"]
    return (
        str(aggregate["count"]),
        str(aggregate["errors"]),
        "-" if mean is None else f"{mean:.3f}",
        "-" if rate is None else f"{rate:.0%}",
    )


def error_rate(views: Sequence[Mapping[str, Any]]) -> float:
    """Items with an error over every item of the runs (0 when there are none)."""
    total = sum(v["progress"]["total"] for v in views)
    return sum(v["progress"]["errors"] for v in views) / total if total else 0.0


def json_document(views: Sequence[Mapping[str, Any]], max_error_rate: float) -> dict[str, Any]:
    """``--json``: every run as ``GET /api/evaluations/{id}`` answers it, and the verdict of the command."""
    rate = error_rate(views)
    return {
        "evaluations": list(views),
        "error_rate": rate,
        "max_error_rate": max_error_rate,
        "passed": rate <= max_error_rate and all(v["status"] == "completed" for v in views),
    }
