"""What observability costs in CPU per request: get_order on a cache hit with SHOP_OBSERVABILITY=off, with
metrics and JSON logs only (no trace exporter: spans a no-op), with tracing at the production default
(parent-based, one trace in ten sampled: SHOP_TRACE_SAMPLE_RATIO=0.1, exported over OTLP/HTTP) and with every
span sampled and exported; beside the bare floor (bench/bare.py).

`python -m bench.instrumentation_overhead`. One PostgreSQL and Memcached on loopback hold the sample order;
each mode is its own `get_order` process served as its container serves it (functions.entrypoint), the floor
served the same way. They are loaded alike (--connections keep-alive clients each for --seconds) for
--rounds rounds; after every window each mode waits the same time for the span exporter to flush (its
schedule delay), so the export of the window's spans counts in it. The
OTLP receiver is a small HTTP server in a process of its own that accepts every export.

Figures: CPU µs per request of the function's process tree (from /proc), medians; and ratios **paired
within each round**: the ratio of the two windows of one round, then the median of those per-round ratios
with their spread (quartiles and extremes), so that a reader sees whether a +10% target is resolved or inside
the noise. Every round's ratios are printed too. The primary ones are issue 14's: each traced mode over
`metrics` (tracing off, production otherwise as is: metrics and JSON logs on), which is what "at most 10% more
CPU per request than with tracing off" compares, and `metrics` over `off` (metrics and logs at most +5%);
each traced mode over `off` (everything off) is printed after them.
The compared variants are loaded at the same time in each round (each with its own --connections clients;
the floor alone before them), so that the machine's state, which on a shared 2-core machine moves more
between two windows than the overhead measured, is the same for both windows of a pair; `--in-turn` loads
them one after another, alternating, as the other benchmarks do (an A/A pair, `off twin`, then differed by
+9% and +24% in medians of 11 rounds, where loaded together it differed by +2%). The span exporter runs with
the SDK's default batching (`--export-delay-ms`, 5 s, or 512 spans), as in production. `--modes`
measures fewer modes (fewer processes loaded at once, or windows per round), `--baseline
COMMIT` serves the same modes from that commit's tree as well (exported with `git archive`), paired round by
round with this tree's: the before/after of a change in one run.

`--in-process` measures instead the observing middleware alone, in this process, around a trivial app that
reads one in-process cache entry (what get_order does on a hit in its own tier: noted on the request's span,
no span of its own): CPU µs per request of each mode, the exporter a null one (spans built, batched and
handed over, nothing encoded or sent),
alternating modes in every round. No server, no load generator, little noise: the share of the per-request
figure that is the wrapper's and the tracing backend's own.

Targets (issue 14): tracing at 1 in 10 at most +10% over `metrics` (tracing off, metrics and logs on);
metrics and logs at most +5% over `off`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import floor, load
from bench.common import free_port, percentile, report, scratch_dir
from bench.cpu import Window, alternate, cpu_of, default_line, measure, summarise
from bench.stack import memcached, postgres
from functions import devserver

# the span exporter's schedule delay: the SDK's default (OTEL_BSP_SCHEDULE_DELAY unset), as in production; a
# window's spans are all out this long after it (or sooner: 512 queued spans are exported at once)
EXPORT_DELAY_MS = 5000


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


MODES = ("off", "metrics", "sampled 1-in-10", "full", "off twin")
TRACED = ("sampled 1-in-10", "full")
DEFAULT_MODES = MODES[:4]  # "off twin": a second process like `off`, the benchmark's own noise (an A/A pair)


def mode_settings(mode: str, receiver_url: str) -> dict[str, str]:
    """The environment of one mode's process."""
    if mode in ("off", "off twin"):
        return {"SHOP_OBSERVABILITY": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    if mode == "metrics":
        return {"SHOP_OBSERVABILITY": "on", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    ratio = "0.1" if mode == "sampled 1-in-10" else "1.0"
    return {
        "SHOP_OBSERVABILITY": "on",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url,
        "SHOP_TRACE_SAMPLE_RATIO": ratio,
    }


def spread(ratios: Sequence[float]) -> str:
    """Per-round ratios as percentages: median, quartiles, extremes and how many rounds."""
    shown = [(r - 1) * 100 for r in ratios]
    return (
        f"median {statistics.median(shown):+.1f}%, quartiles {percentile(shown, 25):+.1f}…"
        f"{percentile(shown, 75):+.1f}%, range {min(shown):+.1f}…{max(shown):+.1f}% ({len(shown)} rounds)"
    )


def paired(values: Sequence[float], against: Sequence[float]) -> list[float]:
    """value / reference of the same round, round by round."""
    return [v / a for v, a in zip(values, against, strict=True) if a > 0]


def parse_modes(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [m for m in chosen if m not in MODES]
    if unknown or "off" not in chosen:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(MODES)}, `off` always (the reference)")
    return [m for m in MODES if m in chosen]


def export_tree(commit: str) -> Path:
    """The tree of `commit` in a scratch directory."""
    root = floor.ROOT
    directory = scratch_dir(f"overhead-{commit}-")
    archive = subprocess.run(["git", "archive", commit], cwd=root, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def served_mode(mode: str, environment: Mapping[str, str]) -> contextlib.AbstractContextManager[floor.Served]:
    return floor.function("get_order", environment, name=f"get_order-{mode}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="per load window")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--modes",
        type=parse_modes,
        default=list(DEFAULT_MODES),
        help=f"comma-separated, of {', '.join(MODES)} (default: the first four)",
    )
    parser.add_argument("--baseline", metavar="COMMIT", help="also serve the modes from COMMIT's tree")
    parser.add_argument(
        "--commit",
        metavar="COMMIT",
        help="serve the compared side from COMMIT's tree, not the working tree (others' unfinished edits)",
    )
    parser.add_argument(
        "--in-turn",
        dest="together",
        action="store_false",
        help="load the variants in turn, alternating (the other benchmarks' way), not all at once per round",
    )
    parser.add_argument(
        "--export-delay-ms",
        type=int,
        default=EXPORT_DELAY_MS,
        help="OTEL_BSP_SCHEDULE_DELAY of the traced modes; a window waits this long (+0.5 s) for the export",
    )
    parser.add_argument("--in-process", action="store_true", help="the middleware alone, in this process")
    parser.add_argument(
        "--requests", type=int, default=20_000, help="--in-process: requests per mode and round"
    )
    args = parser.parse_args()
    if args.in_process:
        in_process(args.modes, args.rounds, args.requests)
        return
    modes: list[str] = args.modes
    with OtlpReceiver() as receiver, contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres())
        cache = stack.enter_context(memcached())
        environment = devserver.service_environment(pg.dsn, memcached=cache.address)
        devserver.prepare_databases(pg.dsn, environment)
        uid = devserver.load_sample_order(environment["ORDERS_DATABASE_URL"])
        base = {**environment, "OTEL_BSP_SCHEDULE_DELAY": str(args.export_delay_ms)}
        served = {"bare": stack.enter_context(floor.bare())}
        baseline = f" at {args.baseline}" if args.baseline else ""
        tree = export_tree(args.baseline) if args.baseline else None
        compared = export_tree(args.commit) if args.commit else None
        for mode in modes:
            environment_of = {**base, **mode_settings(mode, receiver.url)}
            if compared is None:
                served[mode] = stack.enter_context(served_mode(mode, environment_of))
            else:
                served[mode] = stack.enter_context(
                    floor.function("get_order", environment_of, name=f"get_order-{mode}", tree=compared)
                )
            if tree is not None:
                name = f"{mode}{baseline}"
                served[name] = stack.enter_context(
                    floor.function("get_order", environment_of, name=f"get_order-{name}", tree=tree)
                )
        request = load.get(f"/order/{uid}")
        tally = load.Tally("X-Cache")
        for server in served.values():  # caches warm, pools open, code paths warm
            assert load.one(server.port, request).status == 200
            load.run(server.port, request, args.connections, 2.0)

        def flushed() -> None:
            time.sleep(args.export_delay_ms / 1000 + 0.5)

        def variant(server: floor.Served) -> Window:
            counted = None if server is served["bare"] else tally
            return measure(
                {"function": server.pid},
                lambda: load.run(server.port, request, args.connections, args.seconds, tally=counted),
                settle=flushed,
            )

        def together(round_number: int) -> dict[str, Window]:
            """Every variant but the floor loaded at the same time, each by its own clients: one machine state
            for all, so that what the load of others does to one window it does to its pair too."""
            compared = {name: s for name, s in served.items() if name != "bare"}
            loaded: dict[str, Any] = {}

            def load_one(name: str, server: floor.Served) -> None:
                loaded[name] = load.run(server.port, request, args.connections, args.seconds, tally=tally)

            before = cpu_of({name: s.pid for name, s in compared.items()})
            threads = [threading.Thread(target=load_one, args=item) for item in compared.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            flushed()
            after = cpu_of({name: s.pid for name, s in compared.items()})
            windows = {
                name: Window(
                    requests=loaded[name].requests,
                    errors=loaded[name].errors,
                    seconds=loaded[name].seconds,
                    cpu={"function": after[name] - before[name]},
                )
                for name in compared
            }
            for name, window in windows.items():
                print(f"round {round_number + 1}/{args.rounds} {name:<12} {default_line(window)}", flush=True)
            return windows

        started_load = os.getloadavg()
        if args.together:
            results: dict[str, list[Window]] = {name: [] for name in served}
            for round_number in range(args.rounds):
                results["bare"].append(variant(served["bare"]))
                shown = default_line(results["bare"][-1])
                print(f"round {round_number + 1}/{args.rounds} {'bare':<12} {shown}", flush=True)
                for name, window in together(round_number).items():
                    results[name].append(window)
        else:
            variants = {name: functools.partial(variant, s) for name, s in served.items()}
            results = alternate(variants, args.rounds)
        ended_load = os.getloadavg()
        exported = receiver.received()
    if any(mode in TRACED for mode in modes) and not exported:
        raise RuntimeError("the traced modes exported no spans: the comparison would be meaningless")
    figures = summarise(results, "bare")
    per_request = {name: [w.per_request_us("function") for w in windows] for name, windows in results.items()}
    comparisons: list[tuple[str, str]] = []
    for suffix in ("", baseline) if baseline else ("",):
        # issue 14's targets first: tracing over tracing off (`metrics`, metrics and logs on); metrics / off
        primary = "metrics" if "metrics" in modes else "off"
        comparisons += [(f"{mode}{suffix}", f"{primary}{suffix}") for mode in modes if mode in TRACED]
        if primary == "metrics":
            comparisons.append((f"metrics{suffix}", f"off{suffix}"))
        for mode in modes[1:]:  # then every mode over everything off, the ones not shown yet
            if (f"{mode}{suffix}", f"off{suffix}") not in comparisons:
                comparisons.append((f"{mode}{suffix}", f"off{suffix}"))
    if baseline:
        comparisons += [(mode, f"{mode}{baseline}") for mode in modes]
    print("\nper-round ratios (paired within each round):")
    for name, reference in comparisons:
        ratios = paired(per_request[name], per_request[reference])
        print(f"  {name} / {reference}: " + " ".join(f"{(r - 1) * 100:+.1f}%" for r in ratios))
        figures[f"{name} over {reference}: CPU per request"] = spread(ratios)
        figures[f"{name} over {reference} (%, median of rounds)"] = (statistics.median(ratios) - 1) * 100
    figures["get_order answers"] = ", ".join(f"X-Cache {k}: {n}" for k, n in sorted(tally.values.items()))
    figures["OTLP bytes received"] = exported
    figures["compared tree"] = args.commit or "the working tree"
    figures["variants loaded"] = "together, each round" if args.together else "in turn, alternating"
    figures["connections"] = args.connections
    figures["seconds per window"] = args.seconds
    figures["load average (1, 5, 15 min) at start"] = ", ".join(f"{x:.1f}" for x in started_load)
    figures["load average (1, 5, 15 min) at end"] = ", ".join(f"{x:.1f}" for x in ended_load)
    figures["targets"] = "sampled 1-in-10 ≤ +10% over metrics (tracing off); metrics ≤ +5% over off"
    report("instrumentation overhead: get_order cache hit, CPU per request by observability mode", figures)


# --- the middleware alone, in this process ---------------------------------------------------------------


def in_process(modes: Sequence[str], rounds: int, requests: int) -> None:
    """CPU µs per request of the observing middleware around a trivial app, per mode, alternating."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from shared_lib.cache import InProcessCache
    from shared_lib.observability import server, settings, tracing

    class NullExporter(SpanExporter):
        exported = 0

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            NullExporter.exported += len(spans)
            return SpanExportResult.SUCCESS

    tier = InProcessCache(name="tier")
    tier.set_encoded("order", b'{"order_uid": "b563feb7b2b84b6test"}', 3600)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = tier.get_encoded("order") or b""
        server.annotate({"order_uid": "b563feb7b2b84b6test"})
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    observed = server.ObservedFunction(
        app, function="get_order", service="orders", route="/order/{order_uid}", method="GET"
    )
    environ = {"PATH_INFO": "/order/b563feb7b2b84b6test", "REQUEST_METHOD": "GET", "HTTP_HOST": "localhost"}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        pass

    backends: dict[str, Callable[[], tracing.Backend]] = {
        "off": tracing.NoopBackend,
        "off twin": tracing.NoopBackend,
        "metrics": tracing.NoopBackend,
        "sampled 1-in-10": lambda: tracing.OtelBackend.exporting("orders", NullExporter(), 0.1),
        "full": lambda: tracing.OtelBackend.exporting("orders", NullExporter(), 1.0),
    }
    built = {mode: backends[mode]() for mode in modes}
    previous = os.environ.get("SHOP_OBSERVABILITY")

    def one_mode(mode: str, count: int) -> float:
        os.environ["SHOP_OBSERVABILITY"] = "off" if mode in ("off", "off twin") else "on"
        settings.reset()
        tracing.use(built[mode])
        started = time.process_time()  # this process's CPU: the exporter's thread too
        for _ in range(count):
            observed(dict(environ), start_response)
        return (time.process_time() - started) / count * 1e6

    results: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for mode in modes:
            one_mode(mode, 2_000)  # warm
        for round_number in range(rounds):
            order = list(modes) if round_number % 2 == 0 else list(modes)[::-1]
            for mode in order:
                results[mode].append(one_mode(mode, requests))
            shown = ", ".join(f"{mode} {results[mode][-1]:.1f}" for mode in modes)
            print(f"round {round_number + 1}/{rounds}: CPU µs/request: {shown}", flush=True)
    finally:
        for backend in built.values():
            backend.shutdown()
        tracing.reset()
        if previous is None:
            os.environ.pop("SHOP_OBSERVABILITY", None)
        else:
            os.environ["SHOP_OBSERVABILITY"] = previous
        settings.reset()
    figures: dict[str, float | int | str] = {"rounds": rounds, "requests per mode and round": requests}
    for mode in modes:
        figures[f"{mode}: CPU µs/request (median)"] = statistics.median(results[mode])
    for mode in modes[1:]:
        for reference in ("off", "metrics"):
            if reference in modes and reference != mode:
                extra = [v - r for v, r in zip(results[mode], results[reference], strict=True)]
                figures[f"{mode} - {reference}: µs/request (median of rounds)"] = statistics.median(extra)
                figures[f"{mode} - {reference}: range of rounds"] = f"{min(extra):.1f}…{max(extra):.1f}"
    figures["spans handed to the null exporter"] = NullExporter.exported
    figures["load average (1, 5, 15 min)"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report("instrumentation overhead in process: the observing middleware alone", figures)


if __name__ == "__main__":
    main()
