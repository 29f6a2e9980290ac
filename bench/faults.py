"""The event path under faults (`make chaos`): a `make run`-style shop (every service, the outbox relay, the
local event sources and batch worker, under the dev server's supervisor, on real PostgreSQL, Kafka and
Memcached, loopback only) and a stream of orders created and paid while one fault happens at a time:

- notifier-db-down: the notifier's database refuses every connection for --outage seconds;
- broker-kill:      the Kafka broker SIGKILLed, started again after --outage seconds;
- relay-kill:       loms' outbox relay SIGKILLed (the supervisor restarts it);
- near-limit:       a 1,048,450-byte record on `orders` (the broker takes it), then valid orders.

Per scenario it prints: events expected (notifications, or orders for near-limit), lost, duplicated (copies
of an event in the topic), out of order (per order, an event applied after a later one), dead-lettered, and
the seconds from the fault's end to full recovery (every expected event applied). Each scenario is bounded
by --recovery-bound seconds; a scenario that does not recover within it reports what was still lost.
The order stream and the notification figures are shared_lib.devtools.faults, which the whole-flow fault
tests (tests/e2e/test_faults.py) use too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bench.common import scratch_dir
from bench.stack import kafka_broker, memcached, postgres
from functions import devserver, table
from shared_lib.devtools.faults import (
    ORDER_EVENTS,
    ORDER_EVENTS_DLQ,
    OrderStream,
    copies,
    delivery,
    end_offsets,
    records_added,
    records_since,
)
from shared_lib.devtools.kafka_server import KafkaServer
from shared_lib.postgres import ConnectionPool, Dsn

PORT_OFFSET = 3000
NEAR_LIMIT_BYTES = 1_048_450


@dataclass
class Shop:
    environment: dict[str, str]
    stack: devserver.Stack
    supervisor: devserver.Supervisor
    kafka: KafkaServer
    pg_dsn: str
    loms: ConnectionPool
    notifier: ConnectionPool
    orders: ConnectionPool

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.stack.port(service)}"


@dataclass
class Figures:
    scenario: str
    expected: int
    lost: int
    duplicated: int | None
    out_of_order: int | None
    dead_lettered: int
    recovery_seconds: float | None  # None: not recovered within the bound

    def row(self) -> str:
        def show(value: int | None) -> str:
            return "-" if value is None else str(value)

        recovery = "not recovered" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f}"
        return (
            f"{self.scenario:<22} {self.expected:>9} {self.lost:>6} {show(self.duplicated):>11}"
            f" {show(self.out_of_order):>13} {self.dead_lettered:>14} {recovery:>14}"
        )


HEADER = (
    f"{'scenario':<22} {'expected':>9} {'lost':>6} {'duplicated':>11} {'out of order':>13}"
    f" {'dead-lettered':>14} {'recovery (s)':>14}"
)


# --- the shop ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def shop() -> Iterator[Shop]:
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres(durable=False))
        kafka = stack.enter_context(kafka_broker())
        cache = stack.enter_context(memcached())
        environment = devserver.service_environment(pg.dsn, PORT_OFFSET, kafka.bootstrap, cache.address)
        devserver.prepare_databases(pg.dsn, environment)
        processes = devserver.Stack(
            environment, port_offset=PORT_OFFSET, log_dir=scratch_dir("shop-faults-logs-"), cron_seconds=None
        )
        stop = threading.Event()
        processes.start(timeout=120)
        stack.callback(processes.stop)
        supervisor = devserver.Supervisor(
            processes.parts(), report=lambda line: print(f"  [supervisor] {line}")
        )
        thread = supervisor.start(stop)
        stack.callback(thread.join, 60)
        stack.callback(stop.set)
        pools = [
            ConnectionPool(environment[name].split(",")[0], size=2, name="faults")
            for name in ("LOMS_SHARD_DSNS", "NOTIFIER_DATABASE_URL", "ORDERS_DATABASE_URL")
        ]
        for pool in pools:
            stack.callback(pool.close)
        yield Shop(environment, processes, supervisor, kafka, pg.dsn, *pools)


# --- measuring ------------------------------------------------------------------------------------------


def _wait(check: Callable[[], bool], bound: float) -> float | None:
    """Seconds until `check()` held, polled; None when it did not within `bound`."""
    started = time.monotonic()
    while time.monotonic() - started < bound:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def notification_figures(
    shop: Shop, name: str, orders: list[int], fault_end: float, start: dict[str, dict[int, int]], bound: float
) -> Figures:
    """Every status event of `orders` must become one notification, in order per order
    (shared_lib.devtools.faults.delivery); duplicated: extra copies of their events in the topic."""
    waited = _wait(lambda: not delivery([shop.loms], shop.notifier, orders).lost, bound)
    recovery = None if waited is None else time.monotonic() - fault_end
    figures = delivery([shop.loms], shop.notifier, orders)
    bootstrap = shop.kafka.bootstrap
    duplicated = copies(records_since(bootstrap, ORDER_EVENTS, start[ORDER_EVENTS]), orders)
    misordered = len(figures.out_of_order) + figures.misordered_events
    dead = records_added(bootstrap, ORDER_EVENTS_DLQ, start[ORDER_EVENTS_DLQ])
    return Figures(name, figures.expected, len(figures.lost), duplicated, misordered, dead, recovery)


def _offsets(shop: Shop) -> dict[str, dict[int, int]]:
    return {t: end_offsets(shop.kafka.bootstrap, t) for t in (ORDER_EVENTS, ORDER_EVENTS_DLQ)}


# --- the scenarios --------------------------------------------------------------------------------------


def _streamed(
    shop: Shop, name: str, user: int, fault: Callable[[], None], settle: float, bound: float
) -> Figures:
    """Orders stream in for `settle` seconds, the fault happens (`fault` returns when it is over), orders
    stream `settle` seconds more; then wait for every event to be applied."""
    start = _offsets(shop)
    stream = OrderStream(shop.url("loms"), user)
    with stream.running():
        time.sleep(settle)
        fault()
        fault_end = time.monotonic()
        time.sleep(settle)
    figures = notification_figures(shop, name, list(stream.orders), fault_end, start, bound)
    if stream.failures:
        print(f"  ({name}: {len(stream.failures)} order requests failed during the fault)")
    return figures


def notifier_db_down(shop: Shop, outage: float, settle: float, bound: float) -> Figures:
    admin = Dsn.parse(shop.pg_dsn).url()
    database = Dsn.parse(shop.environment["NOTIFIER_DATABASE_URL"]).database

    def fault() -> None:
        with contextlib.closing(ConnectionPool(admin, size=1, name="faults-admin")) as pool:
            pool.run(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            pool.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d", d=database)
            try:
                time.sleep(outage)
            finally:
                pool.run(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

    return _streamed(shop, f"notifier DB down {outage:.0f} s", 7_100_001, fault, settle, bound)


def broker_kill(shop: Shop, outage: float, settle: float, bound: float) -> Figures:
    def fault() -> None:
        shop.kafka.kill()
        try:
            time.sleep(outage)
        finally:
            shop.kafka.start()

    return _streamed(shop, f"broker SIGKILL {outage:.0f} s", 7_100_002, fault, settle, bound)


def relay_kill(shop: Shop, outage: float, settle: float, bound: float) -> Figures:
    def fault() -> None:
        before = shop.supervisor.restarts.get("outbox_relay", 0)
        os.kill(shop.stack.pid("outbox_relay"), signal.SIGKILL)
        _wait(lambda: shop.supervisor.restarts.get("outbox_relay", 0) > before, bound)

    return _streamed(shop, "relay SIGKILL", 7_100_003, fault, settle, bound)


def near_limit(shop: Shop, count: int, bound: float) -> Figures:
    """A record just under the broker's limit, then `count` valid orders behind it on the same partitions."""
    import random

    from kafka import KafkaProducer

    from functions.devtools import orders_generator as generator

    bootstrap = shop.kafka.bootstrap
    dlq_start = end_offsets(bootstrap, "orders.dlq")
    rng = random.Random(11)
    orders = [generator.make_order(rng) for _ in range(count)]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024)
    try:
        for partition in range(table.TOPICS["orders"]):
            producer.send("orders", value=b"x" * NEAR_LIMIT_BYTES, key=b"near-limit", partition=partition)
        for order in orders:
            producer.send("orders", key=order["order_uid"].encode(), value=generator.encode(order))
        producer.flush(60)
    finally:
        producer.close(10)
    fault_end = time.monotonic()
    uids = [o["order_uid"] for o in orders]

    def stored() -> int:
        rows = shop.orders.run(
            "SELECT count(*) FROM orders WHERE order_uid = ANY(CAST(:u AS text[]))", u=uids
        )
        return int(rows[0][0])

    waited = _wait(lambda: stored() == count, bound)
    recovery = None if waited is None else time.monotonic() - fault_end
    dead = records_added(bootstrap, "orders.dlq", dlq_start)
    return Figures("near-limit record", count, count - stored(), None, None, dead, recovery)


SCENARIOS = ("notifier-db-down", "broker-kill", "relay-kill", "near-limit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="default: every one")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds a dependency stays down")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds of orders before and after a fault"
    )
    parser.add_argument("--recovery-bound", type=float, default=180.0, help="seconds to wait for recovery")
    parser.add_argument("--orders", type=int, default=50, help="valid orders behind the near-limit record")
    args = parser.parse_args(argv)
    chosen = args.scenario or list(SCENARIOS)
    results: list[Figures] = []
    print(
        "Starting a make run-style shop (PostgreSQL, Kafka, Memcached, every service, supervised) …",
        flush=True,
    )
    with shop() as running:
        for name in chosen:
            print(f"- {name} …", flush=True)
            if name == "notifier-db-down":
                figures = notifier_db_down(running, args.outage, args.settle, args.recovery_bound)
            elif name == "broker-kill":
                figures = broker_kill(running, args.outage, args.settle, args.recovery_bound)
            elif name == "relay-kill":
                figures = relay_kill(running, args.outage, args.settle, args.recovery_bound)
            else:
                figures = near_limit(running, args.orders, args.recovery_bound)
            results.append(figures)
            print("  " + figures.row(), flush=True)
    print()
    print(HEADER)
    for figures in results:
        print(figures.row())
    # a killed relay may publish a batch again (sent, not yet marked): duplicates are reported, not failed
    clean = all(
        f.lost == 0
        and not f.out_of_order
        and f.recovery_seconds is not None
        and (f.dead_lettered == 0 or f.scenario == "near-limit record")
        for f in results
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
