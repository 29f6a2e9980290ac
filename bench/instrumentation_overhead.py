"""What observability costs: throughput of get_product and list_cart through the dev server with
SHOP_OBSERVABILITY=off, with the default (metrics and JSON logs; no trace exporter, spans a no-op), with
full instrumentation (also every span, all sampled, exported over OTLP/HTTP) and with full instrumentation
sampling one trace in ten, in alternating rounds on the same machine. Target: at most 15 % slower than off.

`python -m bench.instrumentation_overhead`. The OTLP receiver is a small HTTP server in a process of its own
that accepts every export, so the exporter does its real work. Closed loop: CLIENTS threads, each on one
keep-alive connection, for SECONDS per endpoint and round after a warm-up; the best round of each mode is
compared (the one least disturbed by the machine's other work), medians printed too.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import free_port, report
from bench.stack import shop

CLIENTS = 8
SECONDS = 8.0
WARMUP_SECONDS = 2.0
ROUNDS = 3
SKU = 1076963
CART = [1076963, 1148162, 1625903, 2618151, 2956315]
USER = 31337


RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        with open(sys.argv[2], "a") as tally:
            tally.write(f"{size}\\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
"""


class OtlpReceiver:
    """Accepts OTLP/HTTP exports in a process of its own (so that receiving takes no time from the load
    generator here) and tallies the bytes that arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.tally = Path(tempfile.mkdtemp(prefix="otlp-")) / "tally"
        self.tally.touch()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self) -> int:
        return sum(int(line) for line in self.tally.read_text().split())

    def __enter__(self) -> OtlpReceiver:
        self.process = subprocess.Popen([sys.executable, "-c", RECEIVER, str(self.port), str(self.tally)])
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def load(url: str, path: str, headers: dict[str, str], seconds: float) -> tuple[float, int]:
    """(requests per second, errors) with CLIENTS keep-alive clients for `seconds`."""
    parts = urlsplit(url)
    done = [0] * CLIENTS
    errors = [0] * CLIENTS
    stop = threading.Event()

    def client(index: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        while not stop.is_set():
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    done[index] += 1
                else:
                    errors[index] += 1
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    return sum(done) / (time.perf_counter() - started), sum(errors)


def post(url: str, path: str, body: dict[str, Any]) -> int:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


def measure(overrides: dict[str, str]) -> dict[str, float]:
    with shop(("product", "loms", "cart"), overrides, durable=False) as running:
        product, cart = running.url("product"), running.url("cart")
        for sku in CART:
            assert post(cart, f"/user/{USER}/cart/{sku}", {"count": 1}) == 200
        figures: dict[str, float] = {}
        for name, url, path, headers in (
            ("get_product", product, f"/product/{SKU}", {"X-API-KEY": "testToken"}),
            ("list_cart", cart, f"/user/{USER}/cart", {}),
        ):
            load(url, path, headers, WARMUP_SECONDS)  # caches warm, pools full, code paths compiled
            rate, errors = load(url, path, headers, SECONDS)
            if errors:
                raise RuntimeError(f"{name}: {errors} requests failed")
            figures[name] = rate
        return figures


MODES = ("off", "metrics", "full", "sampled")


def main() -> None:
    base = {
        "CART_PRODUCT_RPS": "1000",  # the limiter is not what is measured here
        "OTEL_BSP_SCHEDULE_DELAY": "1000",
    }
    with OtlpReceiver() as receiver:
        settings = {
            # everything off: the baseline
            "off": {**base, "SHOP_OBSERVABILITY": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
            # what `make run` does without an endpoint: metrics and JSON logs, spans a no-op
            "metrics": {**base, "SHOP_OBSERVABILITY": "on", "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
            # full instrumentation: metrics, logs, and every span (all sampled) exported over OTLP/HTTP
            "full": {**base, "SHOP_OBSERVABILITY": "on", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url},
            # the same, one trace in ten recorded (SHOP_TRACE_SAMPLE_RATIO=0.1), as a busy deployment would
            "sampled": {
                **base,
                "SHOP_OBSERVABILITY": "on",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "SHOP_TRACE_SAMPLE_RATIO": "0.1",
            },
        }
        results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for round_number in range(ROUNDS):
            order = MODES if round_number % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                measured = measure(settings[mode])
                results[mode].append(measured)
                rates = ", ".join(f"{k} {v:,.0f}/s" for k, v in measured.items())
                print(f"round {round_number + 1} {mode:>7}: {rates}", flush=True)
        exported = receiver.received()
    if not exported:
        raise RuntimeError("the instrumented runs exported no spans: the comparison would be meaningless")
    figures: dict[str, float | int | str] = {"clients": CLIENTS, "seconds per run": SECONDS, "rounds": ROUNDS}
    for name in ("get_product", "list_cart"):
        off = max(r[name] for r in results["off"])
        figures[f"{name} off (req/s, best round)"] = off
        for mode in MODES[1:]:
            on = max(r[name] for r in results[mode])
            figures[f"{name} {mode} (req/s, best round)"] = on
            figures[f"{name} {mode}/off"] = on / off
            figures[f"{name} {mode}: slower by (%)"] = (1 - on / off) * 100
        for mode in MODES:
            figures[f"{name} {mode} median (req/s)"] = statistics.median(r[name] for r in results[mode])
    figures["OTLP bytes received"] = exported
    figures["target"] = "at most 15 % slower than off"
    report("instrumentation overhead: get_product and list_cart, on vs SHOP_OBSERVABILITY=off", figures)


if __name__ == "__main__":
    main()
