"""list_cart of the 11-SKU cart with 600 ms injected product latency, through the dev server.

1. One list at a time: the latency of a cold list (product cache off). Target ≤ 1.9 s; with 5 calls in
   flight the floor is 3 waves × 600 ms = 1.8 s.
2. 50 lists at once: the product service runs its own limit of 10 requests/s (burst 2) and counts every 429
   it answers; the cart's limiter, shared through PostgreSQL, must keep that count at zero.
The product function runs in this process behind a counting WSGI wrapper; cart and loms are dev-server
processes calling it over HTTP.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

from bench.common import free_port, percentile, report
from bench.stack import shop

SKUS = [1076963, 1148162, 1625903, 2618151, 2956315, 2958025, 3596599, 3618852, 4288068, 4465995, 30816475]


class Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # hundreds of lines of access log otherwise
        pass


class Counting:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: Counter[int] = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def counted(status: str, headers: Any, exc_info: Any = None) -> Any:
            with self.lock:
                self.statuses[int(status.split()[0])] += 1
            return start_response(status, headers, exc_info)

        return self.app(environ, counted)


def request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as response:
            payload = response.read()
            return response.status, json.loads(payload) if payload else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def main() -> None:
    os.environ.update(
        {"PRODUCT_LATENCY_MS": "600", "PRODUCT_RATE_LIMIT_RPS": "10", "PRODUCT_RATE_LIMIT_BURST": "2"}
    )
    from functions import devserver

    product_port = free_port()
    counting = Counting(devserver.service_app("product"))
    server = make_server("127.0.0.1", product_port, counting, threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    overrides = {
        "CART_PRODUCT_URL": f"http://127.0.0.1:{product_port}",
        "CART_PRODUCT_CACHE_TTL_SECONDS": "0",
        "CART_POOL_SIZE": "32",
    }
    try:
        with shop(("loms", "cart"), overrides) as running:
            cart = running.url("cart")
            for user in range(1, 51):
                for sku in SKUS:
                    status, body = request("POST", f"{cart}/user/{user}/cart/{sku}", {"count": 1})
                    assert status == 200, (status, body)
            time.sleep(1.5)  # let the limiter's schedule drain after the adds
            counting.statuses.clear()

            singles = []
            for _ in range(5):
                started = time.perf_counter()
                status, body = request("GET", f"{cart}/user/1/cart")
                singles.append(time.perf_counter() - started)
                assert status == 200 and len(body["items"]) == 11, (status, body)
            report(
                "list_cart 11 SKUs, 600 ms product latency, one at a time",
                {
                    "runs": len(singles),
                    "min s": min(singles),
                    "median s": statistics.median(singles),
                    "max s": max(singles),
                    "target s": 1.9,
                    "median / target": statistics.median(singles) / 1.9,
                    "product 429s": counting.statuses[429],
                },
            )

            counting.statuses.clear()
            started = time.perf_counter()
            with ThreadPoolExecutor(50) as pool:
                timed = list(pool.map(lambda u: _timed(f"{cart}/user/{u}/cart"), range(1, 51)))
            elapsed = time.perf_counter() - started
            codes = Counter(code for code, _ in timed)
            latencies = [seconds for _, seconds in timed]
            calls = sum(counting.statuses.values())
            report(
                "list_cart 11 SKUs, 50 concurrent lists, product limit 10 rps",
                {
                    "lists": len(timed),
                    "lists answered 200": codes[200],
                    "product calls": calls,
                    "product 429s": counting.statuses[429],
                    "product calls per s": calls / elapsed,
                    "wall s": elapsed,
                    "list p50 s": percentile(latencies, 50),
                    "list p99 s": percentile(latencies, 99),
                },
            )
    finally:
        server.shutdown()


def _timed(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    status, _ = request("GET", url)
    return status, time.perf_counter() - started


if __name__ == "__main__":
    main()
