"""Warm list_cart (11 SKUs, product info from Memcached): CPU per request of each serving process, beside the
bare floor.

`python -m bench.warm_list_cart`. A throwaway shop (its own PostgreSQL, the dev server's product, loms and
cart) with a real Memcached fills user 42's cart with 11 SKUs, which puts their product info in Memcached;
then `list_cart` is served as its container serves it (functions.entrypoint: gunicorn, 1 worker, 16 threads or
requests at once; --servers gthread,gevent: under each worker class, side by side) with the shop's
configuration, and the bare functions-framework target (bench/bare.py) the same way. Both are loaded alike
(--connections keep-alive clients for --seconds), alternating for --rounds rounds. Figures: CPU µs per request
of list_cart's process tree, Memcached, PostgreSQL and the product service (which a warm list must not call:
its figure stays at its idle noise), medians, and list_cart's ratio to the floor.
`--baseline DIR` also serves list_cart from another tree (a `git worktree` of an older commit) on the same
database and Memcached, alternating with this tree's in every round: "list_cart / baseline" is the median
over rounds of the two trees' CPU per request paired by round (a before/after figure on a machine whose load
moves).
`--in-process` measures in process instead, under plain threads and under gevent (monkey-patched first, as
the gevent workers do): each of IN_PROCESS called --calls times in one thread (greenlet) of a fresh process
per round, alternating, CPU (user and system) of that process per call, medians: the WSGI apps of bare and
list_cart (no server), the cart's read of its lines (one PostgreSQL round trip through shared_lib.postgres'
pool) and one product read from Memcached (the cart's shared cache: pymemcache's pooled HashClient), and
"gevent / threads" paired by round: the round trips beside the apps that wait on them.
Target (issue 14): list_cart at most 1.5× the floor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from bench import floor, load
from bench.common import print_cpu_per_call, report, wsgi_get
from bench.cpu import Window, alternate, measure, median_ratio
from bench.floor import ROOT
from bench.list_cart import SKUS
from bench.stack import memcached, shop
from functions import table
from shared_lib.devtools.ports import LOWEST, bindable, ephemeral_start

USER = 42
BASELINE = "list_cart baseline"
SERVICES = ("product", "loms", "cart")
IN_PROCESS = ("bare", "list_cart", "cart lines (PostgreSQL)", "product (Memcached)")
MODES = ("threads", "gevent")


def free_offset() -> int:
    """A port offset for the shop's dev server at which every service's port is free now: with the fixed
    offset, two benchmarks running at once (other engineers') talk to each other's services."""
    ports = [service.port for service in table.SERVICES.values()]
    highest = ephemeral_start() - 1 - max(ports)
    for _ in range(200):
        offset = random.randint(LOWEST - min(ports), highest)
        if all(bindable(port + offset) for port in ports):
            return offset
    raise RuntimeError("no port offset with every service's port free in 200 tries")


def in_process_call(variant: str) -> Callable[[], object]:
    """One call of `variant` in this process (the shop's environment is set; under gevent, patched first)."""
    if variant in ("bare", "list_cart"):
        if variant == "bare":
            import functions_framework

            app = functions_framework.create_app(target="bare", source=str(ROOT / "bench" / "bare.py"))
            path = "/"
        else:
            from functions.entrypoint import function_app

            app, path = function_app("list_cart"), f"/user/{USER}/cart"

        def call() -> object:
            return wsgi_get(app, path, variant)

        return call
    from functions.cart import bootstrap
    from functions.cart.adapters.cache import CachedProductCatalog

    if variant == "cart lines (PostgreSQL)":
        carts = bootstrap.cart_service().carts
        return lambda: carts.items_of(USER)
    from shared_lib.cache import MemcachedCache

    shared = MemcachedCache(bootstrap.settings().memcached, prefix=bootstrap.MEMCACHED_PREFIX)
    key = CachedProductCatalog.key(SKUS[0])
    if shared.get_encoded(key) is None:
        raise RuntimeError(f"{key} is not in Memcached")
    return lambda: shared.get_encoded(key)


def in_process_worker(variant: str, calls: int) -> None:
    """Print {"user": µs, "system": µs} per call of `variant`, after a warm-up."""
    call = in_process_call(variant)
    print_cpu_per_call(call, calls, resource.RUSAGE_SELF)  # the process: under gevent, its hub's work counts


# gevent patches the standard library before anything else is imported, as gunicorn's gevent workers do
_UNDER_GEVENT = (
    "from gevent import monkey; monkey.patch_all(); import runpy, sys; sys.argv[0] = 'bench.warm_list_cart';"
    " runpy.run_module('bench.warm_list_cart', run_name='__main__', alter_sys=True)"
)


def in_process(args: argparse.Namespace) -> None:
    """The --in-process benchmark: each variant under each mode in a fresh process per round, alternating."""
    with contextlib.ExitStack() as stack:
        cache = stack.enter_context(memcached())
        overrides = {"CART_MEMCACHED": cache.address, "PRODUCT_LATENCY_MS": "0"}
        running = stack.enter_context(shop(SERVICES, overrides, port_offset=free_offset()))
        cart_port = int(running.url("cart").rsplit(":", 1)[1])
        for sku in SKUS:  # the cart filled through the served cart, which puts the products in Memcached
            add = load.post_json(f"/user/{USER}/cart/{sku}", lambda _rng: {"count": 1})
            assert load.one(cart_port, add).status == 200, sku
        env = {**os.environ, **running.environment, "PYTHONPATH": str(ROOT)}
        runs: dict[tuple[str, str], list[dict[str, float]]] = {(v, m): [] for v in IN_PROCESS for m in MODES}
        for round_number in range(args.rounds):
            order = list(runs) if round_number % 2 == 0 else list(runs)[::-1]
            for variant, mode in order:
                start = ["-c", _UNDER_GEVENT] if mode == "gevent" else ["-m", "bench.warm_list_cart"]
                command = [sys.executable, *start, "--in-process-variant", variant]
                command += ["--calls", str(args.calls)]
                done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
                one = json.loads(done.stdout.strip().splitlines()[-1])
                runs[variant, mode].append(one)
                print(
                    f"round {round_number + 1}/{args.rounds} {variant:<24} {mode:<8} CPU µs/call"
                    f" {one['user'] + one['system']:,.1f} (user {one['user']:,.1f},"
                    f" system {one['system']:,.1f})",
                    flush=True,
                )
    report("warm list_cart in process: CPU per call, threads and gevent", in_process_figures(runs, args))


def in_process_figures(
    runs: Mapping[tuple[str, str], list[dict[str, float]]], args: argparse.Namespace
) -> dict[str, float | int | str]:
    total = {key: [r["user"] + r["system"] for r in rounds] for key, rounds in runs.items()}
    figures: dict[str, float | int | str] = {"rounds": args.rounds, "calls per round": args.calls}
    for (variant, mode), rounds in runs.items():
        figures[f"{variant}, {mode}: CPU µs/call"] = statistics.median(total[variant, mode])
        figures[f"{variant}, {mode}: system µs/call"] = statistics.median(r["system"] for r in rounds)
    for variant in IN_PROCESS:
        figures[f"{variant}: gevent / threads"] = median_ratio(
            total[variant, "gevent"], total[variant, "threads"]
        )
    for mode in MODES:
        extra = [a - b for a, b in zip(total["list_cart", mode], total["bare", mode], strict=True)]
        figures[f"list_cart - bare, {mode}: CPU µs/call"] = statistics.median(extra)
    figures["load average (1 min) at the end"] = os.getloadavg()[0]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="per load window")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--baseline", type=Path, help="another tree whose list_cart alternates with this one's"
    )
    parser.add_argument("--in-process", action="store_true", help="threads and gevent in process, no server")
    parser.add_argument("--calls", type=int, default=2000, help="--in-process: calls per variant and round")
    parser.add_argument("--in-process-variant", choices=IN_PROCESS, help=argparse.SUPPRESS)
    floor.add_server_option(parser)
    args = parser.parse_args()
    if args.in_process_variant:
        in_process_worker(args.in_process_variant, args.calls)
        return
    if args.in_process:
        in_process(args)
        return
    floor.check_servers(args.servers)
    with contextlib.ExitStack() as stack:
        cache = stack.enter_context(memcached())
        overrides = {"CART_MEMCACHED": cache.address, "PRODUCT_LATENCY_MS": "0"}
        running = stack.enter_context(shop(SERVICES, overrides, port_offset=free_offset()))
        assert running.stack is not None
        cart_port = int(running.url("cart").rsplit(":", 1)[1])
        for sku in SKUS:
            add = load.post_json(f"/user/{USER}/cart/{sku}", lambda _rng: {"count": 1})
            answer = load.one(cart_port, add)
            assert answer.status == 200, (sku, answer.status)
        served: dict[str, floor.Served] = {}
        for server in args.servers:
            served[floor.variant_name("bare", server, args.servers)] = stack.enter_context(
                floor.bare(worker_class=server)
            )
            served[floor.variant_name("list_cart", server, args.servers)] = stack.enter_context(
                floor.function("list_cart", running.environment, worker_class=server)
            )
            if args.baseline is not None:
                served[floor.variant_name(BASELINE, server, args.servers)] = stack.enter_context(
                    floor.function(
                        "list_cart",
                        running.environment,
                        name=f"list_cart at {args.baseline.resolve()}",
                        worker_class=server,
                        tree=args.baseline.resolve(),
                    )
                )
        request = load.get(f"/user/{USER}/cart")
        for name, one in served.items():
            status = load.one(one.port, request).status
            assert status == 200, (name, status)
        pg_pid, cache_pid = running.pg.pid, cache.process.pid if cache.process else None
        assert pg_pid is not None and cache_pid is not None
        product_pid = running.stack.pid("product")

        def variant(name: str) -> Window:
            one = served[name]
            processes = {
                "function": one.pid,
                "memcached": cache_pid,
                "postgres": pg_pid,
                "product": product_pid,
            }
            return measure(processes, lambda: load.run(one.port, request, args.connections, args.seconds))

        for one in served.values():  # pools open, code paths warm
            load.run(one.port, request, args.connections, 2.0)
        results = alternate({name: (lambda name=name: variant(name)) for name in served}, args.rounds)  # type: ignore[misc]
    names = ["list_cart", BASELINE] if args.baseline is not None else ["list_cart"]
    figures = floor.side_by_side(results, args.servers, names)
    if args.baseline is not None:
        figures["baseline tree"] = str(args.baseline)
        for server in args.servers:
            new, old = (
                [
                    w.per_request_us("function")
                    for w in results[floor.variant_name(name, server, args.servers)]
                ]
                for name in ("list_cart", BASELINE)
            )
            figures[floor.variant_name("list_cart / baseline", server, args.servers)] = median_ratio(new, old)
    figures["SKUs in the cart"] = len(SKUS)
    figures["connections"] = args.connections
    figures["gunicorn workers × threads"] = f"{floor.WORKERS} × {floor.THREADS}"
    figures["servers"] = ", ".join(args.servers)
    figures["load average (1 min) at the end"] = os.getloadavg()[0]
    figures["target list_cart function / floor"] = 1.5
    report("warm list_cart 11 SKUs from Memcached: CPU per request vs the bare floor", figures)


if __name__ == "__main__":
    main()
