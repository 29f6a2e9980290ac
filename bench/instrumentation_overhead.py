"""What observability costs in CPU per request: get_order on a cache hit with SHOP_OBSERVABILITY=off, with
metrics and JSON logs only (no trace exporter: spans a no-op), with tracing at the production default
(parent-based, one trace in ten sampled: SHOP_TRACE_SAMPLE_RATIO=0.1, exported over OTLP/HTTP) and with every
span sampled and exported; beside the bare floor (bench/bare.py).

`python -m bench.instrumentation_overhead`. One PostgreSQL and Memcached on loopback hold the sample order;
each mode is its own `get_order` process served as its container serves it (functions.entrypoint), the floor
served the same way. They are loaded alike in turn (--connections keep-alive clients for --seconds) for
--rounds rounds, the order reversed every other round; after every window each mode waits the same time for
the span exporter to flush (OTEL_BSP_SCHEDULE_DELAY), so the export of the window's spans counts in it. The
OTLP receiver is a small HTTP server in a process of its own that accepts every export. Figures: CPU µs per
request of the function's process tree (from /proc), medians, and each mode's increase over `off`, paired
round by round. Targets (issue 14): tracing at 1 in 10 at most +10% over off; metrics and logs at most +5%.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import subprocess
import sys
import time

from bench import floor, load
from bench.common import free_port, report, scratch_dir
from bench.cpu import Window, alternate, measure, median_ratio, summarise
from bench.stack import memcached, postgres
from functions import devserver

EXPORT_DELAY_MS = 500  # the span exporter's schedule delay: a window's spans are out this long after it


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


MODES = ("off", "metrics", "sampled 1-in-10", "full")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="per load window")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with OtlpReceiver() as receiver, contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres())
        cache = stack.enter_context(memcached())
        environment = devserver.service_environment(pg.dsn, memcached=cache.address)
        devserver.prepare_databases(pg.dsn, environment)
        uid = devserver.load_sample_order(environment["ORDERS_DATABASE_URL"])
        base = {**environment, "OTEL_BSP_SCHEDULE_DELAY": str(EXPORT_DELAY_MS)}
        settings = {
            "off": {**base, "SHOP_OBSERVABILITY": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
            "metrics": {**base, "SHOP_OBSERVABILITY": "on", "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
            "sampled 1-in-10": {
                **base,
                "SHOP_OBSERVABILITY": "on",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "SHOP_TRACE_SAMPLE_RATIO": "0.1",
            },
            "full": {
                **base,
                "SHOP_OBSERVABILITY": "on",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "SHOP_TRACE_SAMPLE_RATIO": "1.0",
            },
        }
        served = {"bare": stack.enter_context(floor.bare())}
        for mode in MODES:
            served[mode] = stack.enter_context(
                floor.function("get_order", settings[mode], name=f"get_order-{mode}")
            )
        request = load.get(f"/order/{uid}")
        tally = load.Tally("X-Cache")
        for server in served.values():  # caches warm, pools open, code paths warm
            assert load.one(server.port, request).status == 200
            load.run(server.port, request, args.connections, 2.0)

        def flushed() -> None:
            time.sleep(EXPORT_DELAY_MS / 1000 * 2)

        def variant(server: floor.Served) -> Window:
            counted = None if server is served["bare"] else tally
            return measure(
                {"function": server.pid},
                lambda: load.run(server.port, request, args.connections, args.seconds, tally=counted),
                settle=flushed,
            )

        results = alternate({name: functools.partial(variant, s) for name, s in served.items()}, args.rounds)
        exported = receiver.received()
    if not exported:
        raise RuntimeError("the traced modes exported no spans: the comparison would be meaningless")
    figures = summarise(results, "bare")
    off = [w.per_request_us("function") for w in results["off"]]
    for mode in MODES[1:]:
        on = [w.per_request_us("function") for w in results[mode]]
        figures[f"{mode}: CPU per request over off (%)"] = (median_ratio(on, off) - 1) * 100
    figures["get_order answers"] = ", ".join(f"X-Cache {k}: {n}" for k, n in sorted(tally.values.items()))
    figures["OTLP bytes received"] = exported
    figures["connections"] = args.connections
    figures["targets"] = "sampled 1-in-10 ≤ +10% over off; metrics ≤ +5%"
    report("instrumentation overhead: get_order cache hit, CPU per request by observability mode", figures)


if __name__ == "__main__":
    main()
