"""The bench's report: cells in, one markdown table of req/s, latency and ratios out, plus the targets.

One row per (workers, model, rows, conns, target): medians over repeats (with the min-max range
of req/s), summed errors, server CPU per request. Ratios compare rows of the same run at the same
workers, model, rows and conns: batching on/off (req/s, p50, p99), the gateway against the bare
ONNX ceiling, against ``mlflow models serve`` and against the bare hello-world. Below the table,
each issue target is checked against this run's figures (met / missed, never assumed).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable
from typing import Any

HEADER = (
    "| model | rows | workers | conns | target | req/s | p50 ms | p99 ms | errors "
    "| on/off req/s · p50 · p99 | vs bare | vs mlflow | vs hello | server CPU µs/req |"
)
COLUMNS = 14


@dataclasses.dataclass
class Cell:
    """One measured load cell (or a target that could not be measured: ``failure`` says why)."""

    target: str
    label: str
    model: str
    rows: int
    workers: int
    conns: int
    rep: int
    rps: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    requests: int = 0
    errors: int = 0
    non2xx: int = 0
    socket_errors: int = 0
    server_cpu_us_per_req: float = float("nan")
    worker_cpu_shares: list[float] = dataclasses.field(default_factory=list)
    generator: str = ""
    generator_cpu_frac: float = float("nan")
    failure: str = ""


def _median(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def summarise(cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per (workers, model, rows, conns, target): medians over repeats, summed errors."""
    groups: dict[tuple[int, str, int, int, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.workers, cell.model, cell.rows, cell.conns, cell.target), []).append(cell)
    rows: list[dict[str, Any]] = []
    for (workers, model, body_rows, conns, target), group in groups.items():
        ok = [c for c in group if not c.failure]
        rps = [c.rps for c in ok]
        rows.append(
            {
                "target": target,
                "label": group[0].label,
                "model": model,
                "rows": body_rows,
                "workers": workers,
                "conns": conns,
                "runs": len(ok),
                "rps": _median(rps),
                "rps_min": min(rps) if rps else float("nan"),
                "rps_max": max(rps) if rps else float("nan"),
                "p50_ms": _median(c.p50_ms for c in ok),
                "p99_ms": _median(c.p99_ms for c in ok),
                "errors": sum(c.errors for c in ok),
                "server_cpu_us_per_req": _median(c.server_cpu_us_per_req for c in ok),
                "worker_cpu_shares": [c.worker_cpu_shares for c in ok],
                "stuck_runs": sum(
                    1
                    for c in ok
                    if workers > 1 and conns >= workers and c.worker_cpu_shares and c.worker_cpu_shares[0] > 0.85
                ),
                "generator_cpu_frac": max((c.generator_cpu_frac for c in ok), default=float("nan")),
                "failure": "; ".join(sorted({c.failure for c in group if c.failure})),
            }
        )
    return rows


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # nan
        return "–"
    return f"{value:,.{digits}f}"


def _ratio(a: float, b: float) -> float:
    return a / b if a == a and b == b and b else float("nan")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:300]


class Index:
    """Rows by (workers, model, rows, conns, target) for ratio look-ups."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = {(r["workers"], r["model"], r["rows"], r["conns"], r["target"]): r for r in rows}

    def get(self, row: dict[str, Any], target: str) -> dict[str, Any] | None:
        found = self.rows.get((row["workers"], row["model"], row["rows"], row["conns"], target))
        return found if found and found["runs"] else None

    def rps(self, row: dict[str, Any], target: str) -> float:
        other = self.get(row, target)
        return other["rps"] if other else float("nan")


def render(rows: list[dict[str, Any]], order: list[tuple[int, str, int, int, str]], unavailable: list[str]) -> str:
    """The markdown table in ``order`` (workers, model, rows, conns, target key), then notes."""
    index = Index(rows)
    lines = [HEADER, "|" + "---|" * COLUMNS]
    notes: list[str] = []
    blank = " – |" * (COLUMNS - 5)
    for key in order:
        row = index.rows.get(key)
        if row is None:
            continue
        where = f"| {row['model']} | {row['rows']} | {row['workers']} | {row['conns']} | {row['label']} |"
        if not row["runs"]:
            lines.append(where + blank)
            notes.append(f"{row['label']}, {row['model']}, w={row['workers']}: {_last_line(row['failure'])}")
            continue
        on_off = "–"
        if row["target"] == "gateway-on" and (off := index.get(row, "gateway-off")):
            on_off = " · ".join(fmt(_ratio(row[k], off[k]), 2) for k in ("rps", "p50_ms", "p99_ms"))
        is_gateway = row["target"].startswith("gateway")
        vs_bare = _ratio(row["rps"], index.rps(row, "bare")) if row["target"] != "bare" else float("nan")
        vs_mlflow = _ratio(row["rps"], index.rps(row, "mlflow")) if is_gateway else float("nan")
        vs_hello = _ratio(row["rps"], index.rps(row, "hello")) if row["target"] != "hello" else float("nan")
        rps = fmt(row["rps"], 0) + ("†" if row["stuck_runs"] else "")
        if row["runs"] > 1:
            rps += f" ({fmt(row['rps_min'], 0)}–{fmt(row['rps_max'], 0)})"
        lines.append(
            f"{where} {rps} | {fmt(row['p50_ms'], 2)} | {fmt(row['p99_ms'], 2)} | {row['errors']} | {on_off} "
            f"| {fmt(vs_bare, 2)} | {fmt(vs_mlflow, 1)} | {fmt(vs_hello, 2)} | {fmt(row['server_cpu_us_per_req'], 0)} |"
        )
        if row["stuck_runs"]:
            notes.append(
                f"{row['label']}, {row['model']}, {row['rows']} row(s), w={row['workers']}, c={row['conns']}: in "
                f"{row['stuck_runs']} of {row['runs']} run(s) one process did over 85% of the server's work "
                "(the kernel handed every connection to one worker), marked †"
            )
        if row["generator_cpu_frac"] > 0.9:
            notes.append(
                f"{row['label']}, {row['model']}, {row['rows']} row(s), w={row['workers']}, c={row['conns']}: the "
                f"load generator used {row['generator_cpu_frac']:.0%} of a core; req/s may be generator-bound"
            )
    notes.extend(unavailable)
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in dict.fromkeys(notes))
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def check_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, checked on this run's rows; one line per comparison that could be made."""
    index = Index(rows)
    out: list[str] = []
    for row in rows:
        if row["target"] != "gateway-on" or not row["runs"] or not (off := index.get(row, "gateway-off")):
            continue
        where = f"{row['model']}, {row['rows']} row(s), w={row['workers']}, {row['conns']} conn(s)"
        if row["model"] == "mlp" and row["conns"] == 64:
            gain = _ratio(row["rps"], off["rps"])
            out.append(
                f"{where}: batching on/off {fmt(gain, 2)}x req/s (target >= 1.8x: {_verdict(gain >= 1.8)}); "
                f"p99 {fmt(row['p99_ms'], 2)} vs {fmt(off['p99_ms'], 2)} ms "
                f"(target lower: {_verdict(row['p99_ms'] < off['p99_ms'])})"
            )
        if row["conns"] == 1:
            cost = _ratio(row["p50_ms"], off["p50_ms"])
            out.append(
                f"{where}: p50 with batching on {fmt(row['p50_ms'], 3)} ms vs off {fmt(off['p50_ms'], 3)} ms = "
                f"{fmt((cost - 1) * 100, 1)}% (target <= +5%: {_verdict(cost <= 1.05)})"
            )
    for row in rows:
        if not (row["target"].startswith("gateway") and row["model"] == "iris" and row["rows"] == 1):
            continue
        if row["conns"] != 64 or not row["runs"]:
            continue
        where = f"iris, 1 row, w={row['workers']}, 64 conns, {row['label']}"
        if (mlflow := index.rps(row, "mlflow")) == mlflow:
            ratio = _ratio(row["rps"], mlflow)
            out.append(f"{where}: {fmt(ratio, 1)}x mlflow serve (target >= 40x: {_verdict(ratio >= 40)})")
        if (hello := index.rps(row, "hello")) == hello:
            ratio = _ratio(row["rps"], hello)
            out.append(f"{where}: {fmt(ratio, 2)}x bare hello-world (target >= 0.6x: {_verdict(ratio >= 0.6)})")
    return out


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of the first markdown table in ``text`` as dicts keyed by header (what tests and tools read)."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    if len(lines) < 2:
        return []
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(header, [c.strip() for c in ln.strip("|").split("|")], strict=True)) for ln in lines[2:]]
