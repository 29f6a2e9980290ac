"""Warm list_cart of the 11-SKU cart with 600 ms product latency: product info comes from Memcached.

One cold list fills the shared product cache; then lists are timed one after another. A warm list must make
no product call at all (counted at the product service). Target: p99 ≤ 15 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time

from werkzeug.serving import make_server

from bench.common import free_port, percentile, report
from bench.list_cart import SKUS, Counting, Quiet
from bench.stack import shop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lists", type=int, default=500)
    args = parser.parse_args()
    os.environ.update({"PRODUCT_LATENCY_MS": "600"})
    from functions import devserver

    product_port = free_port()
    counting = Counting(devserver.service_app("product"))
    server = make_server("127.0.0.1", product_port, counting, threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        overrides = {
            "CART_PRODUCT_URL": f"http://127.0.0.1:{product_port}",
            "CART_PRODUCT_CACHE_TTL_SECONDS": "600",
        }
        with shop(("loms", "cart"), overrides, real_events=True) as running:
            port = int(running.url("cart").rsplit(":", 1)[1])
            cart = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

            def call(method: str, path: str, body: object = None) -> int:
                cart.request(method, path, None if body is None else json.dumps(body))
                response = cart.getresponse()
                response.read()
                return response.status

            for sku in SKUS:
                assert call("POST", f"/user/42/cart/{sku}", {"count": 1}) == 200
            started = time.perf_counter()
            assert call("GET", "/user/42/cart") == 200
            cold = time.perf_counter() - started
            counting.statuses.clear()
            latencies = []
            for _ in range(args.lists):
                started = time.perf_counter()
                assert call("GET", "/user/42/cart") == 200
                latencies.append((time.perf_counter() - started) * 1000)
            product_calls = sum(counting.statuses.values())
    finally:
        server.shutdown()
    report(
        "warm list_cart 11 SKUs, 600 ms product latency, Memcached",
        {
            "first list after the adds ms (adds fill the cache)": cold * 1000,
            "warm lists": len(latencies),
            "warm p50 ms": percentile(latencies, 50),
            "warm p99 ms": percentile(latencies, 99),
            "product calls during warm lists": product_calls,
            "target p99 ms": 15,
            "p99 / target": percentile(latencies, 99) / 15,
        },
    )


if __name__ == "__main__":
    main()
