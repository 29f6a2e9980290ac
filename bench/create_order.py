"""create_order: CPU per order of loms, its outbox relay and PostgreSQL, beside the bare floor.

`python -m bench.create_order`. A fresh PostgreSQL (fsync on, as deployed) and a one-node Kafka broker on
loopback; `create_order` served as its container serves it (functions.entrypoint: gunicorn, 1 worker, 16
threads or requests at once; --servers gthread,gevent: under each worker class, side by side) with loms'
outbox relay (`python -m functions.loms.relay_worker`) publishing every event to Kafka, and the bare
functions-framework target (bench/bare.py) served the same way and sent the same POSTs. Each order is one unit
of a random SKU out of 100 plentiful ones. Both are loaded alike (--connections keep-alive clients for
--seconds), alternating for --rounds rounds; after each window the relay is given time to publish the window's
events (bounded) before CPU is read again, so its work for them counts. Figures: CPU µs per order of loms'
process tree, the relay, PostgreSQL's postmaster and backends (from /proc), medians; the relay per event too;
loms' ratio to the floor; how many of loms' (or the floor's) server threads waited for a CPU, on average over
each window (floor.waited_for_cpu: what a throughput drop on a crowded machine is made of); and the database
statements loms ran per order (its shop_db_queries_total from its /metrics, read outside the CPU windows:
BEGIN and COMMIT count, each statement is at least one round trip).
(bench/create_order.pgbench.sql is the same transaction for pgbench, kept for comparing PostgreSQL's share by
hand.)
Targets (issue 14): loms at most 2.0× the floor; the relay at most 250 µs per event.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bench import floor, load
from bench.common import report
from bench.cpu import Window, alternate, measure
from bench.stack import kafka_broker, postgres
from functions import devserver
from shared_lib.postgres import ConnectionPool

FIRST_SKU = 900_000_001
SKU_COUNT = 100


def stock_up(pool: ConnectionPool) -> None:
    pool.run(
        "INSERT INTO stocks (sku, total_count, reserved)"
        " SELECT s, 1000000000, 0 FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) s"
        " ON CONFLICT (sku) DO NOTHING",
        a=FIRST_SKU,
        b=FIRST_SKU + SKU_COUNT - 1,
    )


def order(rng: random.Random) -> dict[str, object]:
    item = {"sku": FIRST_SKU + rng.randrange(SKU_COUNT), "count": 1}
    return {"userId": rng.randint(1, 10**6), "items": [item]}


def statements(port: int) -> float:
    """The database statements the function served on `port` has run, of every kind and outcome."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "shop_db_queries_total"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0, help="per load window")
    parser.add_argument("--rounds", type=int, default=5)
    floor.add_server_option(parser)
    args = parser.parse_args()
    floor.check_servers(args.servers)
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres(durable=True))
        broker = stack.enter_context(kafka_broker())
        environment = devserver.service_environment(pg.dsn, kafka=broker.bootstrap)
        devserver.prepare_databases(pg.dsn, environment)
        loms_db = ConnectionPool(environment["LOMS_SHARD_DSNS"].split(",")[0], size=1)
        stock_up(loms_db)
        served: dict[str, floor.Served] = {}
        for server in args.servers:
            served[floor.variant_name("bare", server, args.servers)] = stack.enter_context(
                floor.bare(worker_class=server)
            )
            served[floor.variant_name("create_order", server, args.servers)] = stack.enter_context(
                floor.function("create_order", environment, worker_class=server)
            )
        shops = {name: one for name, one in served.items() if not name.startswith("bare")}
        relay = floor.spawn("relay", [sys.executable, "-m", "functions.loms.relay_worker"], environment, 0)
        stack.callback(relay.stop)
        pg_pid = pg.pid
        assert pg_pid is not None
        request = load.post_json("/order/create", order)
        for one in shops.values():
            first = load.one(one.port, request)
            assert first.status == 200, first.status

        def unsent() -> int:
            return int(loms_db.run("SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0])

        def drained(timeout: float = 60.0) -> None:
            deadline = time.monotonic() + timeout
            while unsent() and time.monotonic() < deadline:
                time.sleep(0.05)
            if relay.process.poll() is not None:
                raise RuntimeError(f"the relay exited with {relay.process.returncode}")

        def events(one: floor.Served) -> dict[str, float]:
            return {
                "events": float(loms_db.run("SELECT last_value FROM outbox_seq")[0][0]),
                **{f"statements {name}": statements(shop.port) for name, shop in shops.items()},
                "waited for a CPU": floor.waited_for_cpu(one.pid),
            }

        def variant(name: str) -> Window:
            one = served[name]
            processes = {"function": one.pid, "relay": relay.pid, "postgres": pg_pid}
            return measure(
                processes,
                lambda: load.run(one.port, request, args.connections, args.seconds),
                settle=drained,
                extra=lambda: events(one),
            )

        for one in served.values():  # pools open, statements prepared, code paths warm
            load.run(one.port, request, args.connections, 2.0)
        drained()
        results = alternate(
            {name: (lambda name=name: variant(name)) for name in served},  # type: ignore[misc]
            args.rounds,
            lambda _name, window: floor.window_line(window),
        )
        left = unsent()
    figures = floor.side_by_side(results, args.servers, ["create_order"])
    figures.update(floor.cpu_wait_figures(results))
    for name in shops:
        orders = results[name]
        figures[f"{name}: events per order"] = sum(w.extra["events"] for w in orders) / sum(
            w.requests for w in orders
        )
        figures[f"{name}: loms database statements per order"] = sum(
            w.extra[f"statements {name}"] for w in orders
        ) / sum(w.requests for w in orders)
        figures[f"{name}: relay CPU µs/event"] = statistics.median(
            w.cpu["relay"] / max(w.extra["events"], 1) * 1e6 for w in orders
        )
    figures["events left unsent at the end"] = left
    figures["servers"] = ", ".join(args.servers)
    figures["load average (1 min) at the end"] = os.getloadavg()[0]
    figures["connections"] = args.connections
    figures["gunicorn workers × threads"] = f"{floor.WORKERS} × {floor.THREADS}"
    figures["target create_order function / floor"] = 2.0
    figures["target relay CPU µs/event"] = 250
    report("create_order: CPU per order vs the bare floor", figures)


if __name__ == "__main__":
    main()
