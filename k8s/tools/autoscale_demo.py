"""The autoscale demo (`make autoscale-demo`): load one function through the ingress, watch Knative scale it.

For `--load-seconds` it keeps `--concurrency` requests in flight against the function (through Kourier on
127.0.0.1, with the function's Host header), printing each second the request rate, the latency (p50/p95), the
errors and the function's pods (`kubectl get pods -l serving.knative.dev/service=…`); then it stops the load
and keeps watching until the pods are gone (scaled to zero) or `--idle-seconds` pass. Bounded, and it only
ever sends to a loopback address.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from k8s import generate

# What one request to each demo-able function looks like: path and headers.
REQUESTS: dict[str, tuple[str, dict[str, str]]] = {
    "get_product": ("/product/1076963", {"X-API-KEY": "testToken"}),
    "list_products": ("/product?count=20&start_after_sku=0", {"X-API-KEY": "testToken"}),
    "stock_info": ("/stock/info?sku=1076963", {}),
}
MAX_SECONDS = 600


def loopback_address(url: str) -> tuple[str, int]:
    """Host and port of `url`, refusing anything that is not this machine's loopback."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or not host:
        raise ValueError(f"{url}: expected http://127.0.0.1:<port>")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{url}: the demo only sends to a loopback address (127.0.0.1, ::1, localhost)")
    return host, parts.port or 80


@dataclass
class Window:
    """What the load workers saw; read and reset once per displayed second."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float, ok: bool) -> None:
        with self.lock:
            self.total += 1
            if ok:
                self.latencies.append(seconds)
            else:
                self.errors += 1

    def take(self) -> tuple[list[float], int]:
        with self.lock:
            latencies, errors = self.latencies, self.errors
            self.latencies, self.errors = [], 0
        return latencies, errors


def load_worker(
    host: str, port: int, path: str, headers: dict[str, str], stop: threading.Event, window: Window
) -> None:
    connection: http.client.HTTPConnection | None = None
    while not stop.is_set():
        started = time.monotonic()
        try:
            if connection is None:
                connection = http.client.HTTPConnection(host, port, timeout=10)
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            if connection is not None:
                connection.close()
            connection = None
            stop.wait(0.1)  # no tight loop against a refusing port
        window.record(time.monotonic() - started, ok)
    if connection is not None:
        connection.close()


class PodCounter:
    """Counts the function's pods in a background thread (kubectl is slow; the display must not wait)."""

    def __init__(self, kubectl: list[str] | None, service: str, namespace: str) -> None:
        selector = f"serving.knative.dev/service={service}"
        self.command = (
            None
            if kubectl is None
            else [*kubectl, "-n", namespace, "get", "pods", "-l", selector, "--no-headers"]
        )
        self.running: int | None = None
        self.total: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        if self.command is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        assert self.command is not None
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    self.command, capture_output=True, text=True, timeout=10, check=False
                ).stdout
                rows = [line.split() for line in out.splitlines() if line.strip()]
                self.total = len(rows)
                self.running = sum(1 for r in rows if len(r) > 2 and r[2] == "Running")
            except (OSError, subprocess.TimeoutExpired):
                self.running = self.total = None
            self._stop.wait(1.0)


def percentile(values: list[float], fraction: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def row(elapsed: float, phase: str, latencies: list[float], errors: int, pods: PodCounter) -> str:
    rate = len(latencies) + errors
    p50 = f"{percentile(latencies, 0.5) * 1000:7.0f}" if latencies else "      -"
    p95 = f"{percentile(latencies, 0.95) * 1000:7.0f}" if latencies else "      -"
    if pods.running is None:
        count, bar = "   -", ""
    else:
        count, bar = f"{pods.running:2d}/{pods.total or 0:<2d}"[:5], "█" * pods.running
    return f"{elapsed:6.0f}s  {phase:<5} {rate:6d}/s {p50} {p95} {errors:6d}  {count:>5}  {bar}"


def run(args: argparse.Namespace) -> int:
    host, port = loopback_address(args.ingress)
    path, headers = REQUESTS[args.function]
    service = generate.service_name(args.function)
    headers = dict(headers)
    if not args.direct:
        headers["Host"] = generate.external_host(args.function)
    kubectl = None if args.no_kubectl else [args.kubectl, "--context", args.context]
    pods = PodCounter(kubectl, service, generate.NAMESPACE)
    window = Window()
    stop_load = threading.Event()
    workers = [
        threading.Thread(target=load_worker, args=(host, port, path, headers, stop_load, window), daemon=True)
        for _ in range(args.concurrency)
    ]
    target = headers.get("Host", f"{host}:{port}")
    print(f"Loading {service} ({target}{path}) via {host}:{port}: {args.concurrency} requests in flight for")
    limits = f"{args.load_seconds:.0f} s, then watching it scale to zero (at most {args.idle_seconds:.0f} s)"
    print(limits + ".\n")
    print("  time  phase     rate  p50 ms  p95 ms  errors   pods")
    pods.start()
    for worker in workers:
        worker.start()
    started = time.monotonic()
    peak = 0
    zero_seen = 0
    phase = "load"
    try:
        while True:
            time.sleep(1.0)
            elapsed = time.monotonic() - started
            if phase == "load" and elapsed >= args.load_seconds:
                stop_load.set()
                phase = "idle"
            latencies, errors = window.take()
            print(row(elapsed, phase, latencies, errors, pods), flush=True)
            peak = max(peak, pods.running or 0)
            if phase == "idle":
                zero_seen = zero_seen + 1 if pods.total == 0 else 0
                if zero_seen >= 2 or elapsed >= args.load_seconds + args.idle_seconds:
                    break
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        stop_load.set()
        pods.stop()
        for worker in workers:
            worker.join(11)
    elapsed = time.monotonic() - started
    if kubectl is None:
        outcome = "pods not watched (--no-kubectl)"
    elif zero_seen >= 2:
        outcome = f"{service} scaled to zero"
    else:
        outcome = f"{service} still has pods (Knative waits for its window and grace period)"
    print(f"\n{window.total} requests, peak {peak} pods; after {elapsed:.0f} s: {outcome}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Watch Knative scale one function out and back to zero")
    parser.add_argument("--ingress", default="http://127.0.0.1:31080", help="Kourier on this machine")
    parser.add_argument("--function", default="get_product", choices=sorted(REQUESTS))
    parser.add_argument("--concurrency", type=int, default=40, help="requests kept in flight (1-200)")
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--idle-seconds", type=float, default=150, help="how long to wait for zero pods")
    parser.add_argument("--context", default="kind-shop", help="kubectl context of the cluster")
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--no-kubectl", action="store_true", help="do not watch pods (no cluster)")
    parser.add_argument(
        "--direct", action="store_true", help="no Host header: --ingress is the function itself"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 200:
        parser.error("--concurrency must be 1..200")
    if not (0 < args.load_seconds <= MAX_SECONDS and 0 <= args.idle_seconds <= MAX_SECONDS):
        parser.error(f"--load-seconds and --idle-seconds must stay within {MAX_SECONDS} s")
    try:
        loopback_address(args.ingress)
    except ValueError as exc:
        parser.error(str(exc))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
