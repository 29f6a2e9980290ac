"""The floor itself under each server: the bare functions-framework target (bench/bare.py) served by
gunicorn's gthread worker, its gevent worker and its gevent_pywsgi worker (gevent's own WSGI server), CPU per
request of each, alternating.

`python -m bench.servers`. No database: only the bare target, served as bench.floor serves it (1 worker, 16
threads or 16 requests at once, keep-alive 30 s) under each worker class of --servers (default
gthread,gevent), loaded alike (--connections keep-alive clients for --seconds), alternating for --rounds
rounds (gevent_pywsgi too, or gunicorn's sync worker, which the entrypoint does not offer: the shop's function
is then served by bench.floor, its app built as the entrypoint builds it). Figures: CPU µs per request of each
server's process tree (arbiter and worker), medians, and each later server's ratio to the first, paired round
by round; and how many of the server's threads were runnable but waiting for a CPU, on average over each
window (floor.waited_for_cpu: on a crowded machine a single-threaded server's throughput falls with it while
its CPU per request holds). With --target NAME a function of the shop that needs no backing service (e.g.
get_product) is served under each server beside the floor, as its container serves it (functions.entrypoint
--worker-class …), loaded with GET --path. The shop's benchmarks take --servers too (bench.get_order,
bench.create_order, bench.warm_list_cart), for their own functions.
"""

from __future__ import annotations

import argparse
import contextlib
import os

from bench import floor, load
from bench.common import report
from bench.cpu import Window, alternate, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="per load window")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--target", help="also a function of the shop that needs no backing service")
    parser.add_argument("--path", default="/product/1076963", help="the target's GET path")
    parser.add_argument("--header", action="append", default=["X-API-KEY: testToken"])
    floor.add_server_option(parser)
    parser.set_defaults(servers=["gthread", "gevent"])
    args = parser.parse_args()
    floor.check_servers(args.servers)
    headers = dict(h.split(": ", 1) for h in args.header)
    names = [args.target] if args.target else []
    served: dict[str, floor.Served] = {}
    with contextlib.ExitStack() as stack:
        for server in args.servers:
            served[floor.variant_name("bare", server, args.servers)] = stack.enter_context(
                floor.bare(worker_class=server)
            )
            if args.target:
                served[floor.variant_name(args.target, server, args.servers)] = stack.enter_context(
                    floor.function(args.target, dict(os.environ), worker_class=server)
                )

        def request_of(name: str) -> load.MakeRequest:
            return load.get("/" if name.startswith("bare") else args.path, headers)

        for name, one in served.items():  # code paths warm
            assert load.one(one.port, request_of(name)).status == 200, name
            load.run(one.port, request_of(name), args.connections, 2.0)

        def variant(name: str) -> Window:
            one = served[name]
            return measure(
                {"function": one.pid},
                lambda: load.run(one.port, request_of(name), args.connections, args.seconds),
                extra=lambda: {"waited for a CPU": floor.waited_for_cpu(one.pid)},
            )

        results = alternate(
            {name: (lambda name=name: variant(name)) for name in served},  # type: ignore[misc]
            args.rounds,
            lambda _name, window: floor.window_line(window),
        )
    figures = floor.side_by_side(results, args.servers, names)
    figures.update(floor.cpu_wait_figures(results))
    figures["connections"] = args.connections
    figures["gunicorn workers × threads"] = f"{floor.WORKERS} × {floor.THREADS}"
    figures["load average (1 min) at the end"] = os.getloadavg()[0]
    report("the floor under each server: CPU per request", figures)


if __name__ == "__main__":
    main()
