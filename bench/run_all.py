"""`make bench`: every benchmark in turn, each printing its figures (bench/results/*.json keeps the last run).

Runs for several minutes: each benchmark starts its own PostgreSQL (and Kafka, Memcached where it needs
them) on free ports, so `make run` may keep running beside it. Pass names to run only some:
`python -m bench.run_all cold_start list_cart`.
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = [
    "cold_start",
    "list_cart",
    "create_order",
    "relay_throughput",
    "event_latency",
    "warm_list_cart",
    "notifications_cache",
    "ingest",
    "get_order",
    "instrumentation_overhead",
]


def main(argv: list[str]) -> int:
    chosen = argv or BENCHMARKS
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmarks: {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    for index, name in enumerate(chosen, 1):
        print(f"\n[{index}/{len(chosen)}] bench.{name} …", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        sys.argv = [f"bench.{name}"]
        module.main()
        print(f"[{index}/{len(chosen)}] bench.{name} took {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
