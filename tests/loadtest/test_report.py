"""The bench report: medians, ratios and target verdicts computed from cells of one run."""

from __future__ import annotations

from tests.loadtest._kit import load

report = load("report")


def cell(target: str, model: str, conns: int, rps: float, p50: float, p99: float, rep: int = 0, rows: int = 1):
    label = {"gateway-on": "gateway batching on", "gateway-off": "gateway batching off"}.get(target, target)
    return report.Cell(target, label, model, rows, 1, conns, rep, rps=rps, p50_ms=p50, p99_ms=p99, requests=1000)


def test_ratios_and_medians_come_from_the_same_run() -> None:
    cells = [
        cell("gateway-on", "mlp", 64, 2000, 30, 40, rep=0),
        cell("gateway-on", "mlp", 64, 2400, 25, 35, rep=1),
        cell("gateway-on", "mlp", 64, 2200, 28, 38, rep=2),
        cell("gateway-off", "mlp", 64, 1000, 60, 90),
        cell("bare", "mlp", 64, 1100, 55, 80),
        cell("hello", "mlp", 64, 20000, 3, 5),
        cell("mlflow", "mlp", 64, 50, 900, 1500),
    ]
    rows = report.summarise(cells)
    order = [(1, "mlp", 1, 64, t) for t in ("gateway-on", "gateway-off", "bare", "hello", "mlflow")]
    table = report.parse_table(report.render(rows, order, []))
    by_target = {r["target"]: r for r in table}
    on = by_target["gateway batching on"]
    assert on["req/s"] == "2,200 (2,000–2,400)"  # the median, and the range of the three runs
    assert on["on/off req/s · p50 · p99"] == "2.20 · 0.47 · 0.42"
    assert on["vs bare"] == "2.00"
    assert on["vs mlflow"] == "44.0"
    assert on["vs hello"] == "0.11"
    assert by_target["gateway batching off"]["on/off req/s · p50 · p99"] == "–"
    assert by_target["bare"]["vs bare"] == "–"


def test_targets_report_missed_as_well_as_met() -> None:
    cells = [
        cell("gateway-on", "mlp", 64, 1500, 30, 95),
        cell("gateway-off", "mlp", 64, 1000, 60, 90),
        cell("gateway-on", "iris", 1, 9000, 0.107, 0.3),
        cell("gateway-off", "iris", 1, 9000, 0.100, 0.3),
        cell("gateway-on", "iris", 64, 15000, 4, 8),
        cell("mlflow", "iris", 64, 300, 200, 400),
        cell("hello", "iris", 64, 30000, 2, 4),
    ]
    lines = report.check_targets(report.summarise(cells))
    mlp = next(line for line in lines if line.startswith("mlp"))
    assert "1.50x req/s (target >= 1.8x: MISSED)" in mlp
    assert "(target lower: MISSED)" in mlp
    one_conn = next(line for line in lines if "1 conn(s)" in line)
    assert "7.0% (target <= +5%: MISSED)" in one_conn
    assert any("50.0x mlflow serve (target >= 40x: met)" in line for line in lines)
    assert any("0.50x bare hello-world (target >= 0.6x: MISSED)" in line for line in lines)


def test_a_target_that_failed_is_listed_with_its_reason() -> None:
    failed = report.Cell("mlflow", "mlflow serve", "iris", 1, 1, 64, 0, failure="did not start: exited with 1")
    rows = report.summarise([failed, cell("gateway-on", "iris", 64, 15000, 4, 8)])
    text = report.render(rows, [(1, "iris", 1, 64, "gateway-on"), (1, "iris", 1, 64, "mlflow")], [])
    table = report.parse_table(text)
    assert table[1]["req/s"] == "–"
    assert table[0]["vs mlflow"] == "–"
    assert "- mlflow serve, iris, w=1: did not start: exited with 1" in text
