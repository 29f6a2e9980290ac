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
Target (issue 14): the function at most 1.3× the floor.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from bench import floor, load
from bench.common import report
from bench.cpu import Window, alternate, measure, median_ratio
from bench.stack import memcached, postgres
from functions import devserver

BASELINE = " at baseline"


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
    floor.add_server_option(parser)
    args = parser.parse_args()
    floor.check_servers(args.servers)
    if args.baseline is not None and not (args.baseline / "functions" / "entrypoint.py").is_file():
        raise SystemExit(f"--baseline: {args.baseline} is not a tree of the shop")
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres())
        cache = stack.enter_context(memcached())
        environment = devserver.service_environment(pg.dsn, memcached=cache.address)
        devserver.prepare_databases(pg.dsn, environment)
        uid = devserver.load_sample_order(environment["ORDERS_DATABASE_URL"])
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
        pg_pid, cache_pid = pg.pid, cache.process.pid if cache.process else None
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
