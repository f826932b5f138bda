"""How long a large /invocations body holds its worker: the longest gap between answers to ``GET /ping``
sent back to back on another connection while one large CSV body is posted, and the worker's RSS
before, at the peak and after.

Run against a running one-worker gateway serving a model with iris-like columns::

    python loadtest/large_bodies.py --url http://127.0.0.1:8080 --model iris@champion --rows 300000 --pid PID

Only ever targets 127.0.0.1 (refuses other hosts); one large request per round, ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--model", default="iris@champion")
    parser.add_argument("--columns", default=",".join(COLUMNS), help="CSV header (comma-separated)")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pid", type=int, help="the worker's pid, for its RSS")
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loadtest/large_bodies.py only targets loopback")
    columns = args.columns.split(",")
    data = np.random.default_rng(0).uniform(0.1, 7.0, size=(args.rows, len(columns))).round(2)
    body = ("\n".join([",".join(columns), *(",".join(map(str, row)) for row in data.tolist())])).encode()
    print(f"body {len(body) / 1e6:.1f} MB, {args.rows:,} rows; RSS before {_rss_mb(args.pid)} MB")
    with (
        httpx.Client(base_url=args.url, timeout=300) as large_client,
        httpx.Client(base_url=args.url, timeout=300) as pings,
    ):
        for round_number in range(args.rounds):
            result: dict[str, object] = {}

            def post(result: dict[str, object] = result) -> None:
                started = time.perf_counter()
                response = large_client.post(
                    f"/models/{args.model}/invocations", content=body, headers={"Content-Type": "text/csv"}
                )
                result["status"], result["seconds"] = response.status_code, time.perf_counter() - started

            thread = threading.Thread(target=post)
            thread.start()
            longest, count, peak = 0.0, 0, 0.0
            last = time.perf_counter()
            while thread.is_alive():
                pings.get("/ping")
                now = time.perf_counter()
                longest, last, count = max(longest, now - last), now, count + 1
                peak = max(peak, _rss_mb(args.pid) or 0.0)
            thread.join()
            print(
                f"round {round_number + 1}: large request {result['status']} in {result['seconds']:.2f} s; "
                f"{count} pings meanwhile, longest gap {longest * 1000:.0f} ms; RSS peak {peak:.0f} MB"
            )
        time.sleep(2)  # the heap trim runs shortly after the last large request
        print(f"RSS 2 s after the last round: {_rss_mb(args.pid)} MB")


if __name__ == "__main__":
    main()
