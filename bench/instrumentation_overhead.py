"""What observability costs: throughput of get_product and list_cart through the dev server with
SHOP_OBSERVABILITY=off, with the default (metrics and JSON logs; no trace exporter, spans a no-op), with
full instrumentation (also every span, all sampled, exported over OTLP/HTTP) and with full instrumentation
sampling one trace in ten. Target: at most 15 % slower than off.

`python -m bench.instrumentation_overhead`. The four shops run side by side (each its own PostgreSQL and
processes on its own ports) and are loaded in turn, BURST seconds per endpoint each, for CYCLES cycles: this
machine's speed drifts by ±15 % over tens of seconds, so comparing runs minutes apart measures the drift,
while bursts interleaved within one cycle see the same machine. The figure per mode is the median over the
cycles of its rate relative to `off` in the same cycle. After every burst the next one waits for the span
exporter to have flushed (OTEL_BSP_SCHEDULE_DELAY), so one mode's export does not land in another's burst.
Beside throughput it reports the serving process's CPU per request (user + system time of its gunicorn arbiter
and worker, read after that wait so the exporter's work counts), which the closed loop's timing does not blur.
The OTLP receiver is a small HTTP server in a process of its own that accepts every export, so the exporter
does its real work. Closed loop: CLIENTS threads, each on one keep-alive connection.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from bench.common import free_port, report, scratch_dir, tree_cpu_seconds
from bench.stack import BenchShop, shop

CLIENTS = 8
BURST = 3.0
WARMUP_SECONDS = 2.0
CYCLES = 9
EXPORT_DELAY_MS = 500  # the span exporter's schedule delay: a traced burst's spans are out this long after it
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
        self.tally = scratch_dir("otlp-") / "tally"
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


ENDPOINTS = ("get_product", "list_cart")


def targets(running: BenchShop) -> dict[str, tuple[str, str, dict[str, str], int]]:
    """endpoint → (base URL, path, headers, pid of the serving process), the cart filled, caches warmed."""
    product, cart = running.url("product"), running.url("cart")
    for sku in CART:
        assert post(cart, f"/user/{USER}/cart/{sku}", {"count": 1}) == 200
    assert running.stack is not None
    pids = {name: process.pid for name, process in running.stack.processes.items()}
    chosen = {
        "get_product": (product, f"/product/{SKU}", {"X-API-KEY": "testToken"}, pids["product"]),
        "list_cart": (cart, f"/user/{USER}/cart", {}, pids["cart"]),
    }
    for url, path, headers, _pid in chosen.values():
        load(url, path, headers, WARMUP_SECONDS)  # caches warm, pools full, code paths compiled
    return chosen


MODES = ("off", "metrics", "full", "sampled")


def main() -> None:
    base = {
        "CART_PRODUCT_RPS": "1000",  # the limiter is not what is measured here
        "OTEL_BSP_SCHEDULE_DELAY": str(EXPORT_DELAY_MS),
    }
    with OtlpReceiver() as receiver, contextlib.ExitStack() as stack:
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
        shops = {}
        for index, mode in enumerate(MODES):
            offset = 2000 + 100 * index  # side by side: each shop on its own ports
            running = stack.enter_context(
                shop(("product", "loms", "cart"), settings[mode], durable=False, port_offset=offset)
            )
            shops[mode] = targets(running)
        rates: dict[str, dict[str, list[float]]] = {m: {e: [] for e in ENDPOINTS} for m in MODES}
        cpu: dict[str, dict[str, list[float]]] = {m: {e: [] for e in ENDPOINTS} for m in MODES}
        for cycle in range(CYCLES):
            order = MODES if cycle % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                for endpoint in ENDPOINTS:
                    url, path, headers, pid = shops[mode][endpoint]
                    cpu_before, started = tree_cpu_seconds(pid), time.perf_counter()
                    rate, errors = load(url, path, headers, BURST)
                    requests = rate * (time.perf_counter() - started)
                    if errors:
                        raise RuntimeError(f"{mode} {endpoint}: {errors} requests failed")
                    rates[mode][endpoint].append(rate)
                    # the serving process's CPU per request, read once its exporter has sent the burst's spans
                    # (every mode waits alike, so one mode's export never lands in another's burst)
                    time.sleep(EXPORT_DELAY_MS / 1000 * 2)
                    cpu[mode][endpoint].append((tree_cpu_seconds(pid) - cpu_before) / requests)
            shown = "; ".join(
                f"{m} " + ", ".join(f"{rates[m][e][-1]:,.0f}" for e in ENDPOINTS) for m in MODES
            )
            print(f"cycle {cycle + 1}/{CYCLES} (get_product, list_cart req/s): {shown}", flush=True)
        exported = receiver.received()
    if not exported:
        raise RuntimeError("the instrumented runs exported no spans: the comparison would be meaningless")
    figures: dict[str, float | int | str] = {
        "clients": CLIENTS,
        "seconds per burst": BURST,
        "cycles": CYCLES,
    }
    for endpoint in ENDPOINTS:
        off = rates["off"][endpoint]
        figures[f"{endpoint} off median (req/s)"] = statistics.median(off)
        figures[f"{endpoint} off CPU per request (µs)"] = statistics.median(cpu["off"][endpoint]) * 1e6
        for mode in MODES[1:]:
            on = rates[mode][endpoint]
            relative = statistics.median(o / b for o, b in zip(on, off, strict=True))
            figures[f"{endpoint} {mode} median (req/s)"] = statistics.median(on)
            figures[f"{endpoint} {mode}: slower by (%, median of cycles)"] = (1 - relative) * 100
            more_cpu = statistics.median(
                o / b for o, b in zip(cpu[mode][endpoint], cpu["off"][endpoint], strict=True)
            )
            figures[f"{endpoint} {mode} CPU per request (µs)"] = statistics.median(cpu[mode][endpoint]) * 1e6
            figures[f"{endpoint} {mode}: CPU per request up by (%)"] = (more_cpu - 1) * 100
    figures["OTLP bytes received"] = exported
    figures["target"] = "at most 15 % slower than off"
    report("instrumentation overhead: get_product and list_cart, on vs SHOP_OBSERVABILITY=off", figures)


if __name__ == "__main__":
    main()
