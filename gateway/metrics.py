"""Process-wide metrics: cheap to update on the hot path, exposed in Prometheus text at ``/metrics``.

Why not prometheus-client's own metric classes: a labelled ``Counter.labels(...).inc()`` takes a lock
and a few microseconds, and its multiprocess mode writes an mmap file per update; an iris request costs
only microseconds in all, and metrics may cost at most 2% of throughput (docs/benchmarks.md has the
measured cost). Here an update is one dict operation
on a tuple key, and prometheus-client is used for what it does well: the exposition format.

Several uvicorn workers: each worker writes a snapshot of its metrics to ``<dir>/worker-<pid>.json``
about once a second (:func:`run_snapshot_writer`), and the worker that answers ``/metrics`` merges its own
live values with every other worker's last snapshot (:func:`exposition`). Counters and histograms are
summed over every file, so the counts of a worker that died are kept (they stay monotonic); gauges are
summed over live workers only. ``gateway serve`` points its workers at a fresh directory (env
``GATEWAY_METRICS_DIR``); the numbers of other workers are therefore at most one interval old.

Defining metrics: at module level, in the module that owns them::

    REQUESTS = metrics.counter("gateway_requests_total", "Requests by model and status.", ("model", "status"))
    REQUESTS.inc(("iris", "200"))

Label values are a tuple of strings in ``labelnames`` order; build it once and keep it where you can.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger("gateway.metrics")

METRICS_DIR_ENV = "GATEWAY_METRICS_DIR"
SNAPSHOT_INTERVAL_S = 1.0
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

# Latency buckets in seconds for HTTP requests and model calls: 100 us to 60 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

Labels = tuple[str, ...]


class Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)

    def samples(self) -> list[tuple[Labels, Any]]:
        raise NotImplementedError

    def clear(self) -> None:
        """Forget every series (tests; a model that was unloaded for good)."""
        raise NotImplementedError


class Counter(Metric):
    """A monotonic count per label tuple."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def get(self, labels: Labels = ()) -> float:
        return self.values.get(labels, 0.0)

    def samples(self) -> list[tuple[Labels, Any]]:
        return list(self.values.items())

    def clear(self) -> None:
        self.values.clear()


class Gauge(Metric):
    """A value that goes up and down; across workers, the sum over live workers."""

    kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[Labels, float] = {}

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def dec(self, labels: Labels = (), amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) - amount

    def remove(self, labels: Labels) -> None:
        self.values.pop(labels, None)

    def get(self, labels: Labels = ()) -> float:
        return self.values.get(labels, 0.0)

    def samples(self) -> list[tuple[Labels, Any]]:
        return list(self.values.items())

    def clear(self) -> None:
        self.values.clear()


class Histogram(Metric):
    """Per label tuple: a count per bucket (non-cumulative, plus one past the last bound) and the sum."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(name, help, labelnames)
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be strictly increasing, got {buckets!r}")
        self.buckets = bounds
        # labels -> [count in bucket 0, ..., count above the last bound, sum]
        self.values: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.values.get(labels)
        if counts is None:
            counts = self.values[labels] = [0.0] * (len(self.buckets) + 2)
        counts[bisect.bisect_left(self.buckets, value)] += 1
        counts[-1] += value

    def count(self, labels: Labels = ()) -> float:
        counts = self.values.get(labels)
        return sum(counts[:-1]) if counts else 0.0

    def samples(self) -> list[tuple[Labels, Any]]:
        return [(labels, list(counts)) for labels, counts in self.values.items()]

    def clear(self) -> None:
        self.values.clear()


_REGISTRY: dict[str, Metric] = {}
_COLLECT_HOOKS: list[Callable[[], None]] = []


def _register(metric: Metric) -> Any:
    existing = _REGISTRY.get(metric.name)
    if existing is not None:
        same = type(existing) is type(metric) and existing.labelnames == metric.labelnames
        if isinstance(existing, Histogram) and isinstance(metric, Histogram):
            same = same and existing.buckets == metric.buckets
        if not same:
            raise ValueError(f"metric {metric.name!r} is already defined with another kind, labels or buckets")
        return existing
    _REGISTRY[metric.name] = metric
    return metric


def counter(name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
    result: Counter = _register(Counter(name, help, labelnames))
    return result


def gauge(name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
    result: Gauge = _register(Gauge(name, help, labelnames))
    return result


def histogram(name: str, help: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float]) -> Histogram:
    result: Histogram = _register(Histogram(name, help, labelnames, buckets))
    return result


def add_collect_hook(hook: Callable[[], None]) -> Callable[[], None]:
    """``hook()`` runs before every snapshot and scrape, to set gauges that are cheaper to read than to
    track (e.g. how many versions are loaded). Returns a function that removes it."""
    _COLLECT_HOOKS.append(hook)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            _COLLECT_HOOKS.remove(hook)

    return remove


# --- snapshots and merging ------------------------------------------------------------------------


def snapshot() -> dict[str, Any]:
    """This process's metrics as plain data (what a worker writes to its snapshot file)."""
    for hook in list(_COLLECT_HOOKS):
        try:
            hook()
        except Exception:  # a broken hook must not break /metrics
            logger.exception("metrics collect hook failed")
    data: dict[str, Any] = {}
    for name, metric in list(_REGISTRY.items()):
        entry: dict[str, Any] = {
            "kind": metric.kind,
            "help": metric.help,
            "labelnames": list(metric.labelnames),
            "samples": [[list(labels), value] for labels, value in metric.samples()],
        }
        if isinstance(metric, Histogram):
            entry["buckets"] = list(metric.buckets)
        data[name] = entry
    return data


def _merge(into: dict[str, Any], other: dict[str, Any], *, gauges: bool) -> None:
    for name, entry in other.items():
        if entry["kind"] == "gauge" and not gauges:
            continue
        target = into.get(name)
        if target is None:
            target = into[name] = {**entry, "samples": {}}
        elif target["kind"] != entry["kind"] or target.get("buckets") != entry.get("buckets"):
            continue  # a worker of another build: its series cannot be added to ours
        samples: dict[tuple[str, ...], Any] = target["samples"]
        for labels, value in entry["samples"]:
            key = tuple(labels)
            if entry["kind"] == "histogram":
                current = samples.get(key)
                samples[key] = list(value) if current is None else [a + b for a, b in zip(current, value, strict=True)]
            else:
                samples[key] = samples.get(key, 0.0) + value


def merged(directory: Path | None) -> dict[str, Any]:
    """This process's live metrics plus every other worker's last snapshot in ``directory``."""
    result: dict[str, Any] = {}
    _merge(result, snapshot(), gauges=True)
    if directory is None:
        return result
    own = _snapshot_path(directory, os.getpid())
    for path in sorted(directory.glob("worker-*.json")):
        if path == own:
            continue
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue  # being replaced right now, or gone: its next snapshot counts
        _merge(result, data, gauges=_alive(_pid_of(path)))
    return result


def _pid_of(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _snapshot_path(directory: Path, pid: int) -> Path:
    return directory / f"worker-{pid}.json"


def write_snapshot(directory: Path) -> None:
    """Atomically replace this worker's snapshot file."""
    path = _snapshot_path(directory, os.getpid())
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(snapshot()))
    os.replace(tmp, path)


def metrics_dir() -> Path | None:
    """The shared snapshot directory of this server's workers, if there is one."""
    value = os.environ.get(METRICS_DIR_ENV)
    return Path(value) if value else None


def prepare_metrics_dir(directory: Path) -> None:
    """Create ``directory`` and remove the snapshots of a previous run (called by ``gateway serve``)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("worker-*.*"):
        with contextlib.suppress(OSError):
            path.unlink()


async def run_snapshot_writer(directory: Path, interval_s: float = SNAPSHOT_INTERVAL_S) -> None:
    """Background task of each worker: write its snapshot every ``interval_s`` (and once more when cancelled)."""
    try:
        while True:
            try:
                await asyncio.to_thread(write_snapshot, directory)
            except OSError as exc:
                logger.warning("Cannot write the metrics snapshot to %s: %s", directory, exc)
            await asyncio.sleep(interval_s)
    finally:
        with contextlib.suppress(OSError):
            write_snapshot(directory)


# --- exposition -----------------------------------------------------------------------------------


def exposition(directory: Path | None = None, shared: Mapping[str, Any] | None = None) -> bytes:
    """Prometheus text format (version 0.0.4) of every worker's metrics, merged; plus ``shared`` gauges, read
    once at this scrape from something every worker shares (the judge queue's depth): ``{name: {"help",
    "labelnames", "samples": {labels: value}}}``, never summed over workers."""
    from prometheus_client.exposition import generate_latest

    data = merged(directory)
    for name, entry in (shared or {}).items():
        data[name] = {"kind": "gauge", **entry}
    return generate_latest(_Collected(data))


class _Collected:
    """A prometheus-client collector over merged data (used only to write the exposition format)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        for name in sorted(self.data):
            entry = self.data[name]
            labelnames = entry["labelnames"]
            samples: dict[tuple[str, ...], Any] = entry["samples"]
            family: Any
            if entry["kind"] == "counter":
                family = CounterMetricFamily(name, entry["help"], labels=labelnames)
                for labels, value in sorted(samples.items()):
                    family.add_metric(list(labels), value)
            elif entry["kind"] == "gauge":
                family = GaugeMetricFamily(name, entry["help"], labels=labelnames)
                for labels, value in sorted(samples.items()):
                    family.add_metric(list(labels), value)
            else:
                family = HistogramMetricFamily(name, entry["help"], labels=labelnames)
                for labels, counts in sorted(samples.items()):
                    family.add_metric(list(labels), _cumulative(entry["buckets"], counts), counts[-1])
            yield family


def _cumulative(bounds: Iterable[float], counts: list[float]) -> list[tuple[str, float]]:
    result = []
    total = 0.0
    for bound, count in zip(bounds, counts, strict=False):
        total += count
        result.append((_format_bound(bound), total))
    result.append(("+Inf", total + counts[-2]))
    return result


def _format_bound(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]
