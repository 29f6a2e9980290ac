"""get_order on a cache hit: CPU per request of each serving process, beside the bare floor.

`python -m bench.get_order`. A fresh PostgreSQL and Memcached on loopback; the sample order stored, then
`get_order` served as its container serves it (functions.entrypoint: gunicorn gthread, 1 worker, 16 threads)
and the bare functions-framework target (bench/bare.py) served the same way. Two get_order variants: as
configured by default, where a hit after the process's first read comes from its own tier
(ORDERS_LOCAL_CACHE_ENTRIES, in front of Memcached), and `get_order memcached tier`, with that tier off
(ORDERS_LOCAL_CACHE_ENTRIES=0), so every hit is a Memcached round trip: the figure of a replica's first read
of an order that another filled in. All are loaded alike (--connections keep-alive clients for --seconds),
alternating for --rounds rounds; the figure is CPU µs per request of the function's process tree, Memcached
and PostgreSQL's (from /proc), medians, and the function's ratio to the floor. Every answer must be a 200;
how many came from a cache (X-Cache: hit, either tier) is printed per variant (a Memcached timeout on a
loaded machine is answered from PostgreSQL: a miss); Memcached's CPU per request tells the tiers apart.
Target (issue 14): the function at most 1.3× the floor.
"""

from __future__ import annotations

import argparse
import contextlib

from bench import floor, load
from bench.common import report
from bench.cpu import Window, alternate, measure, summarise
from bench.stack import memcached, postgres
from functions import devserver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="per load window")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=floor.THREADS)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres())
        cache = stack.enter_context(memcached())
        environment = devserver.service_environment(pg.dsn, memcached=cache.address)
        devserver.prepare_databases(pg.dsn, environment)
        uid = devserver.load_sample_order(environment["ORDERS_DATABASE_URL"])
        shop = stack.enter_context(floor.function("get_order", environment, threads=args.threads))
        remote = {**environment, "ORDERS_LOCAL_CACHE_ENTRIES": "0"}
        shared = stack.enter_context(floor.function("get_order", remote, threads=args.threads))
        bare = stack.enter_context(floor.bare(threads=args.threads))
        request = load.get(f"/order/{uid}")
        for served in (shop, shared):
            first = load.one(served.port, request)
            assert first.status == 200, first.status
        pg_pid, cache_pid = pg.pid, cache.process.pid if cache.process else None
        assert pg_pid is not None and cache_pid is not None
        tallies = {"get_order": load.Tally("X-Cache"), "get_order memcached tier": load.Tally("X-Cache")}

        def variant(served: floor.Served, counted: load.Tally | None) -> Window:
            processes = {"function": served.pid, "memcached": cache_pid, "postgres": pg_pid}
            return measure(
                processes,
                lambda: load.run(served.port, request, args.connections, args.seconds, tally=counted),
            )

        for served in (bare, shop, shared):  # pools open, code paths warm
            load.run(served.port, request, args.connections, 2.0)
        results = alternate(
            {
                "bare": lambda: variant(bare, None),
                "get_order": lambda: variant(shop, tallies["get_order"]),
                "get_order memcached tier": lambda: variant(shared, tallies["get_order memcached tier"]),
            },
            args.rounds,
        )
    figures = summarise(results, "bare")
    figures["connections"] = args.connections
    figures["gunicorn workers × threads"] = f"{floor.WORKERS} × {args.threads}"
    for name, tally in tallies.items():
        figures[f"{name} answers"] = ", ".join(f"X-Cache {k}: {n}" for k, n in sorted(tally.values.items()))
    figures["target get_order function / floor"] = 1.3
    report("get_order on a cache hit: CPU per request vs the bare floor", figures)


if __name__ == "__main__":
    main()
