"""get_order on a cache hit through the dev server: requests/s and latency percentiles.

A throwaway shop (its own PostgreSQL, the orders service under gunicorn as `make run` serves it) with a real
Memcached; one order stored through the service (so it is warm in Memcached), then --clients keep-alive
clients read it for --seconds. Figures are printed, never asserted. Target: p99 at most 10 ms.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, percentile, report  # noqa: E402
from bench.stack import shop  # noqa: E402
from shared_lib.devtools.memcached_server import MemcachedServer  # noqa: E402

SAMPLE = ROOT / "functions" / "orders" / "data" / "wb-order-sample.json"
UID = "b563feb7b2b84b6test"
CE = {
    "ce-specversion": "1.0",
    "ce-id": "partition:0/offset:0",
    "ce-source": "/kafka/orders",
    "ce-type": "dev.knative.kafka.event",
    "Content-Type": "application/json",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    memcached = MemcachedServer(free_port())
    memcached.start()
    try:
        with shop(("orders",), overrides={"ORDERS_MEMCACHED": memcached.address}) as bench_shop:
            host, port = bench_shop.url("orders").removeprefix("http://").split(":")
            setup = http.client.HTTPConnection(host, int(port), timeout=10)
            setup.request("POST", "/events/ingest_order", body=SAMPLE.read_bytes(), headers=CE)
            assert setup.getresponse().read() is not None
            latencies: list[list[float]] = [[] for _ in range(args.clients)]
            caches: dict[str, int] = {}
            stop = time.monotonic() + args.seconds
            lock = threading.Lock()

            def client(mine: list[float]) -> None:
                connection = http.client.HTTPConnection(host, int(port), timeout=10)
                seen: dict[str, int] = {}
                while time.monotonic() < stop:
                    started = time.perf_counter()
                    connection.request("GET", f"/order/{UID}")
                    response = connection.getresponse()
                    response.read()
                    mine.append(time.perf_counter() - started)
                    tag = f"{response.status} {response.getheader('X-Cache')}"
                    seen[tag] = seen.get(tag, 0) + 1
                with lock:
                    for tag, n in seen.items():
                        caches[tag] = caches.get(tag, 0) + n

            threads = [threading.Thread(target=client, args=(latencies[i],)) for i in range(args.clients)]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - began
    finally:
        memcached.stop()
    every = [x * 1000 for mine in latencies for x in mine]
    report(
        "get_order on a cache hit through the dev server",
        {
            "clients (keep-alive)": args.clients,
            "requests": len(every),
            "answers": ", ".join(f"{tag}: {n}" for tag, n in sorted(caches.items())),
            "requests/s": len(every) / elapsed,
            "p50 ms": percentile(every, 50),
            "p95 ms": percentile(every, 95),
            "p99 ms": percentile(every, 99),
            "max ms": max(every),
            "target p99 ms": 10,
        },
    )


if __name__ == "__main__":
    main()
