"""get_order on a cache hit: CPU per request of each serving process, beside the bare floor.

`python -m bench.get_order`. A fresh PostgreSQL and Memcached on loopback; the sample order stored, then
`get_order` served as its container serves it (functions.entrypoint: gunicorn, 1 worker, 16 threads or
requests at once) and the bare functions-framework target (bench/bare.py) served the same way; with --servers
gthread,gevent all of them under each worker class, side by side (bench.floor.side_by_side). Two get_order
variants: as configured by default, where a hit after the process's first read comes from its own tier
(ORDERS_LOCAL_CACHE_ENTRIES, in front of Memcached), and `get_order memcached tier`, with that tier off
(ORDERS_LOCAL_CACHE_ENTRIES=0), so every hit is a Memcached round trip: the figure of a replica's first read
of an order that another filled in. All are loaded alike (--connections keep-alive clients for --seconds),
alternating for --rounds rounds; the figure is CPU µs per request of the function's process tree, Memcached
and PostgreSQL's (from /proc), medians, and the function's ratio to the floor. Every answer must be a 200; how
many came from a cache (X-Cache: hit, either tier) is printed per variant (a Memcached timeout on a loaded
machine is answered from PostgreSQL: a miss); Memcached's CPU per request tells the tiers apart.
`--baseline DIR` serves the same variants from another tree as well (a `git worktree` of an older commit,
same venv), alternating with this tree's in every round: "<variant> at baseline", and the paired ratio of
this tree's to it ("<variant>: function / at baseline", median over rounds). `--memcached-only` leaves out
the variant served from the process's own tier (a shorter run when only a Memcached hit is studied).

`--in-process` measures the WSGI app instead, called in one thread of its own process (no server, no load
generator beside it): each variant in a fresh process per round, alternating, CPU (user and system) of the
calling thread per call, medians. Besides bare, get_order (its tier) and get_order memcached tier, a fourth
variant, `get_order tier + pause`, is the tier hit with the thread blocked for --pause-us µs per request
(time.sleep, patched into the benchmark's process only, where the round trip would wait): what blocking alone
costs, whatever the thread waits for. "memcached tier / tier" and "pause / tier" are paired by round.
Target (issue 14): the function at most 1.3× the floor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import floor, load
from bench.common import print_cpu_per_call, report, wsgi_get
from bench.cpu import Window, alternate, measure, median_ratio
from bench.floor import ROOT
from bench.stack import sample_order

BASELINE = " at baseline"


IN_PROCESS = ("bare", "get_order", "get_order tier + pause", "get_order memcached tier")


def wsgi_app(variant: str, pause_us: float) -> tuple[Any, str]:
    """(the app, the path to call) of an in-process variant, in this process (the environment is set)."""
    if variant == "bare":
        import functions_framework

        return functions_framework.create_app(target="bare", source=str(ROOT / "bench" / "bare.py")), "/"
    if variant == "get_order memcached tier":
        os.environ["ORDERS_LOCAL_CACHE_ENTRIES"] = "0"
    if variant == "get_order tier + pause":
        from shared_lib.cache import InProcessCache

        unpaused = InProcessCache.get_encoded

        def paused(self: InProcessCache, key: str) -> bytes | None:
            time.sleep(pause_us / 1e6)
            return unpaused(self, key)

        InProcessCache.get_encoded = paused  # type: ignore[method-assign]
    from functions.entrypoint import function_app

    return function_app("get_order"), f"/order/{os.environ['BENCH_ORDER_UID']}"


def in_process_worker(variant: str, calls: int, pause_us: float) -> None:
    """Print {"user": µs, "system": µs} per call of `variant`'s WSGI app, after a warm-up."""
    app, path = wsgi_app(variant, pause_us)

    def call() -> None:
        wsgi_get(app, path, variant)

    print_cpu_per_call(call, calls)


def in_process(args: argparse.Namespace) -> None:
    """The --in-process benchmark: each variant's app in a fresh process per round, alternating."""
    with contextlib.ExitStack() as stack:
        sample = stack.enter_context(sample_order())
        environment, uid = sample.environment, sample.uid
        env = {**os.environ, **environment, "BENCH_ORDER_UID": uid, "PYTHONPATH": str(ROOT)}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in IN_PROCESS}
        for round_number in range(args.rounds):
            order = IN_PROCESS if round_number % 2 == 0 else IN_PROCESS[::-1]
            for name in order:
                command = [sys.executable, "-m", "bench.get_order", "--in-process-variant", name]
                command += ["--calls", str(args.calls), "--pause-us", str(args.pause_us)]
                done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
                one = json.loads(done.stdout.strip().splitlines()[-1])
                runs[name].append(one)
                print(
                    f"round {round_number + 1}/{args.rounds} {name:<26} CPU µs/call"
                    f" {one['user'] + one['system']:,.0f} (user {one['user']:,.0f},"
                    f" system {one['system']:,.0f})",
                    flush=True,
                )
    total = {name: [r["user"] + r["system"] for r in rounds] for name, rounds in runs.items()}
    figures: dict[str, float | int | str] = {"rounds": args.rounds, "calls per round": args.calls}
    for name, rounds in runs.items():
        figures[f"{name}: CPU µs/call"] = statistics.median(total[name])
        figures[f"{name}: user µs/call"] = statistics.median(r["user"] for r in rounds)
        figures[f"{name}: system µs/call"] = statistics.median(r["system"] for r in rounds)
        if name != "bare":
            figures[f"{name}: / bare"] = median_ratio(total[name], total["bare"])
    for name in ("get_order tier + pause", "get_order memcached tier"):
        figures[f"{name}: / get_order (tier)"] = median_ratio(total[name], total["get_order"])
    figures["pause µs"] = args.pause_us
    figures["load average (1 min) at the end"] = os.getloadavg()[0]
    report("get_order in process: CPU per call of the WSGI app", figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="per load window")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=floor.THREADS)
    parser.add_argument("--baseline", type=Path, help="another tree, alternating")
    parser.add_argument(
        "--memcached-only", action="store_true", help="only the variant with the process's own tier off"
    )
    parser.add_argument("--in-process", action="store_true", help="the WSGI app in one thread, no server")
    parser.add_argument("--calls", type=int, default=4000, help="--in-process: calls per variant and round")
    parser.add_argument("--pause-us", type=float, default=50.0, help="--in-process: the pause variant's wait")
    parser.add_argument("--in-process-variant", choices=IN_PROCESS, help=argparse.SUPPRESS)
    floor.add_server_option(parser)
    args = parser.parse_args()
    if args.in_process_variant:
        in_process_worker(args.in_process_variant, args.calls, args.pause_us)
        return
    if args.in_process:
        in_process(args)
        return
    floor.check_servers(args.servers)
    if args.baseline is not None and not (args.baseline / "functions" / "entrypoint.py").is_file():
        raise SystemExit(f"--baseline: {args.baseline} is not a tree of the shop")
    with contextlib.ExitStack() as stack:
        sample = stack.enter_context(sample_order())
        environment, uid = sample.environment, sample.uid
        remote = {**environment, "ORDERS_LOCAL_CACHE_ENTRIES": "0"}
        variants = [("get_order memcached tier", remote)]
        if not args.memcached_only:
            variants.insert(0, ("get_order", environment))
        names = [name for name, _ in variants]
        if args.baseline is not None:
            names += [name + BASELINE for name, _ in variants]
        served: dict[str, floor.Served] = {}
        for server in args.servers:
            served[floor.variant_name("bare", server, args.servers)] = stack.enter_context(
                floor.bare(threads=args.threads, worker_class=server)
            )
            for name, env in variants:
                served[floor.variant_name(name, server, args.servers)] = stack.enter_context(
                    floor.function("get_order", env, threads=args.threads, worker_class=server)
                )
                if args.baseline is not None:
                    served[floor.variant_name(name + BASELINE, server, args.servers)] = stack.enter_context(
                        floor.function(
                            "get_order",
                            env,
                            threads=args.threads,
                            name=f"get_order{BASELINE}",
                            worker_class=server,
                            tree=args.baseline.resolve(),
                        )
                    )
        request = load.get(f"/order/{uid}")
        for name, one in served.items():
            if not name.startswith("bare"):
                first = load.one(one.port, request)
                assert first.status == 200, first.status
        pg_pid, cache_pid = sample.pg.pid, sample.cache.process.pid if sample.cache.process else None
        assert pg_pid is not None and cache_pid is not None
        tallies = {name: load.Tally("X-Cache") for name in served if not name.startswith("bare")}

        def variant(name: str) -> Window:
            one, counted = served[name], tallies.get(name)
            processes = {"function": one.pid, "memcached": cache_pid, "postgres": pg_pid}
            return measure(
                processes,
                lambda: load.run(one.port, request, args.connections, args.seconds, tally=counted),
            )

        for one in served.values():  # pools open, code paths warm
            load.run(one.port, request, args.connections, 2.0)
        results = alternate({name: (lambda name=name: variant(name)) for name in served}, args.rounds)  # type: ignore[misc]
    figures = floor.side_by_side(results, args.servers, names)
    if args.baseline is not None:
        for server in args.servers:
            for name, _ in variants:
                here = floor.variant_name(name, server, args.servers)
                there = floor.variant_name(name + BASELINE, server, args.servers)
                figures[f"{here}: function / at baseline"] = median_ratio(
                    [w.per_request_us("function") for w in results[here]],
                    [w.per_request_us("function") for w in results[there]],
                )
        figures["baseline"] = str(args.baseline)
    figures["connections"] = args.connections
    figures["gunicorn workers × threads"] = f"{floor.WORKERS} × {args.threads}"
    figures["servers"] = ", ".join(args.servers)
    figures["load average (1 min) at the end"] = os.getloadavg()[0]
    for name, tally in tallies.items():
        figures[f"{name} answers"] = ", ".join(f"X-Cache {k}: {n}" for k, n in sorted(tally.values.items()))
    figures["target get_order function / floor"] = 1.3
    report("get_order on a cache hit: CPU per request vs the bare floor", figures)


if __name__ == "__main__":
    main()
