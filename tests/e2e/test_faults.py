"""The whole event path under faults (issue 11): orders created and paid through loms' HTTP API, the outbox
relay publishing to Kafka, the local event source delivering to notify_status, while

- the notifier's database is down for a minute (its own PostgreSQL server, stopped and started again), and
- the broker is SIGKILLed and started again (this shop's own broker, not the session's),

and afterwards no notification is lost, duplicated or out of order (per order, its notifications' statuses
follow loms' order) and nothing went to loms.order-events.dlq.

The shop is started as `make run` starts it (every service, the relay, the event sources and the batch
worker, supervised) on free ports, with its own PostgreSQL servers, broker and Memcached, loopback only.
The streams and the figures are shared_lib.devtools.faults, which `make chaos` (bench/faults.py) runs too.

Before issue 11's fixes both fail: the event source gave up on a delivery after 6 attempts (~6 s) and
dead-lettered it, so a minute's outage lost notifications and filled the DLQ; and a partition whose backlog
reached max_backlog (the broker's restart hands over the outbox's backlog at once) was paused, resumed and
never fetched again.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from functions import devserver, table
from shared_lib.devtools import kafka_server, memcached_server
from shared_lib.devtools.faults import (
    ORDER_EVENTS,
    ORDER_EVENTS_DLQ,
    Delivery,
    OrderStream,
    delivery,
    end_offsets,
    records_added,
)
from shared_lib.devtools.kafka_server import KafkaServer
from shared_lib.devtools.memcached_server import MemcachedServer
from shared_lib.devtools.pg_server import PgServer
from shared_lib.devtools.ports import free_ports
from shared_lib.postgres import ConnectionPool, Dsn, ensure_database
from tests.fixtures.required import missing
from tests.fixtures.stack import start_stacks
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 60.0  # the notifier's database down: ten times the old retry budget (~6 s)
# Orders are created and paid (three status events each): BEFORE before the fault, up to <scenario>_DURING
# by the fault's end, at least AFTER more after it, <scenario>_ORDERS in all.
BEFORE = 100
AFTER = 50
OUTAGE_ORDERS, OUTAGE_DURING = 500, 450  # at most 350 orders while the notifier's database is down
# The broker stays dead while 900 orders are created: the relay then hands their 2,700 events over at once,
# over twice the event source's max_backlog (500) per partition - the backlog the old flow control stalled on.
# (With half as many, the old source got through in a trial run: the stall needs the fetch to run ahead.)
KILL_ORDERS, KILL_DURING = 1050, 1000
THREADS = 4  # the stream's concurrent clients (each order is created, then paid, by one of them)
STREAM_BOUND = 240.0  # seconds to wait for the stream to reach a count
RECOVERY_BOUND = 180.0  # seconds to wait for every event to be notified
FAILED_ATTEMPTS = "shop_eventsource_failed_attempts_total"


@dataclass
class FaultShop:
    stack: devserver.Stack = field(repr=False)
    environment: dict[str, str] = field(repr=False)
    kafka: KafkaServer
    notifier_pg: PgServer
    log_dir: Path
    supervision: list[str] = field(default_factory=list)  # what the supervisor said

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.stack.port(service)}"

    @contextlib.contextmanager
    def pools(self) -> Iterator[tuple[list[ConnectionPool], ConnectionPool]]:
        """Fresh pools on loms' shards and the notifier's database (opened after a fault, never stale)."""
        shards = [
            ConnectionPool(dsn, size=1, name="test-faults")
            for dsn in self.environment["LOMS_SHARD_DSNS"].split(",")
        ]
        notifier = ConnectionPool(self.environment["NOTIFIER_DATABASE_URL"], size=1, name="test-faults")
        try:
            yield shards, notifier
        finally:
            for pool in [*shards, notifier]:
                pool.close()


def log_tails(log_dir: Path, pattern: str = "*.log") -> str:
    """The end of each child's log in `log_dir` whose name matches `pattern`: what a failure shows."""
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in sorted(log_dir.glob(pattern))
    )


@pytest.fixture(scope="module")
def fault_shop() -> Iterator[FaultShop]:
    for component, (ok, why) in (
        ("the Kafka broker (Java 17+, and Maven to resolve its jars)", kafka_server.available()),
        ("memcached", memcached_server.available()),
    ):
        if not ok:
            missing(component, why)
    # not pytest's temporary root: PostgreSQL runs as another user under root, who must reach its directory
    root = Path(tempfile.mkdtemp(prefix="shop-faults-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, True)
        main_port, notifier_port, kafka_port, controller_port, memcached_port = free_ports(5)
        pg = PgServer(root / "pg", main_port, fast_unsafe=True)
        notifier_pg = PgServer(root / "notifier-pg", notifier_port, fast_unsafe=True)
        for server in (pg, notifier_pg):
            server.start()
            cleanup.callback(server.stop)
        kafka = KafkaServer(root / "kafka", kafka_port, controller_port)
        cleanup.callback(kafka.stop)
        kafka.start()
        kafka.create_topics(table.TOPICS)
        cache = MemcachedServer(memcached_port)
        cleanup.callback(cache.stop)
        cache.start()
        ensure_database(notifier_pg.dsn, devserver.DATABASES["notifier"])
        notifier_dsn = Dsn.parse(notifier_pg.dsn).with_database(devserver.DATABASES["notifier"]).url()

        def environment(offset: int) -> dict[str, str]:
            return {
                **devserver.service_environment(pg.dsn, offset, kafka.bootstrap, cache.address),
                "NOTIFIER_DATABASE_URL": notifier_dsn,  # the notifier's own server, stopped by a test
            }

        devserver.prepare_databases(pg.dsn, environment(0))
        log_dir = root / "logs"
        try:
            _, (stack,) = start_stacks(
                lambda offset: [
                    devserver.Stack(
                        environment(offset), log_dir=log_dir, cron_seconds=None, port_offset=offset
                    )
                ],
                table.SERVICES,
            )
        except Exception:
            print(log_tails(log_dir))
            raise
        cleanup.callback(stack.stop)
        shop = FaultShop(stack, environment(stack.port_offset), kafka, notifier_pg, log_dir)
        stop = threading.Event()
        supervisor = devserver.Supervisor(stack.parts(), report=shop.supervision.append)
        thread = supervisor.start(stop)
        cleanup.callback(thread.join, 60)  # after stop.set(): a restart under way finishes first
        cleanup.callback(stop.set)
        yield shop


def failed_attempts(shop: FaultShop) -> float:
    """Deliveries of loms.order-events the notifier's event source saw fail (its counter, on the notifier's
    /metrics, which the source's process shares)."""
    with urllib.request.urlopen(f"{shop.url('notifier')}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == FAILED_ATTEMPTS and sample.labels.get("topic") == ORDER_EVENTS
    )


def reach(stream: OrderStream, count: int, what: str) -> None:
    stream.allow(count)
    wait_for(
        lambda: stream.count >= count or stream.failures,
        timeout=STREAM_BOUND,
        interval=0.2,
        what=f"{count} orders {what}",
    )
    assert stream.failures == [], stream.failures[:10]


def settled(shop: FaultShop, orders: list[int]) -> Delivery:
    """The figures once every status event of `orders` was notified, or as they are after RECOVERY_BOUND."""
    last: list[Delivery] = []
    with shop.pools() as (shards, notifier):

        def check() -> bool:
            last[:] = [delivery(shards, notifier, orders)]
            return not last[0].lost

        with contextlib.suppress(AssertionError):  # not settled: the figures below say what is missing
            wait_for(check, timeout=RECOVERY_BOUND, interval=1.0, what="every status event notified")
    return last[0]


def assert_nothing_lost(shop: FaultShop, stream: OrderStream, dlq_start: dict[int, int], orders: int) -> None:
    assert len(stream.orders) >= orders and stream.failures == [], stream.failures[:10]
    figures = settled(shop, stream.orders)
    source_log = log_tails(shop.log_dir, "source-notify_status.log")
    detail = f"{figures.summary()}\nsupervisor: {shop.supervision}\n{source_log}"
    assert figures.expected == 3 * len(stream.orders), detail  # new, awaiting payment, paid
    assert figures.lost == [], f"{detail}\nlost events: {figures.lost[:20]}"
    assert figures.duplicated == 0, detail
    assert figures.out_of_order == [], f"{detail}\norders: {figures.out_of_order[:20]}"
    assert figures.misordered_events == 0, detail
    assert records_added(shop.kafka.bootstrap, ORDER_EVENTS_DLQ, dlq_start) == 0, detail


def dead_letter_offsets(shop: FaultShop) -> dict[int, int]:
    return end_offsets(shop.kafka.bootstrap, ORDER_EVENTS_DLQ)


def _during_fault(stream: OrderStream, fault: Callable[[], None], during: int, orders: int) -> None:
    """BEFORE orders, then the fault (`fault` returns when it is over) while the stream goes on up to `during`
    orders, then at least AFTER more and `orders` in all."""
    reach(stream, BEFORE, "before the fault")
    stream.allow(during)
    fault()
    reach(stream, max(orders, stream.count + AFTER), "after the fault")


def test_the_notifier_database_down_for_a_minute_loses_nothing(
    fault_shop: FaultShop, unique_id: Callable[[], int]
) -> None:
    shop = fault_shop
    dlq_start = dead_letter_offsets(shop)
    stream = OrderStream(shop.url("loms"), unique_id(), threads=THREADS, limit=0)
    seen: dict[str, float] = {}

    def outage() -> None:
        seen["failed before"] = failed_attempts(shop)
        seen["orders before"] = stream.count
        shop.notifier_pg.stop()  # a fast shutdown: every connection closed, new ones refused
        assert shop.notifier_pg.pid is None, "the notifier's PostgreSQL still runs"
        try:
            time.sleep(OUTAGE_SECONDS)  # the fault itself, not a wait for a condition
            seen["orders during"] = stream.count
            seen["failed during"] = failed_attempts(shop)
        finally:
            shop.notifier_pg.start()

    with stream.running():
        _during_fault(stream, outage, OUTAGE_DURING, OUTAGE_ORDERS)
    assert_nothing_lost(shop, stream, dlq_start, OUTAGE_ORDERS)
    # the outage was real to the event path: orders kept coming and deliveries to the notifier failed
    assert seen["orders during"] > seen["orders before"], seen
    assert seen["failed during"] > seen["failed before"], seen


def test_the_broker_sigkilled_and_restarted_loses_nothing(
    fault_shop: FaultShop, unique_id: Callable[[], int]
) -> None:
    shop = fault_shop
    dlq_start = dead_letter_offsets(shop)
    stream = OrderStream(shop.url("loms"), unique_id(), threads=THREADS, limit=0)
    unsent: list[int] = []

    def crash() -> None:
        first = stream.count + THREADS  # orders from here on were created after the kill
        shop.kafka.kill()
        assert not shop.kafka.running(), "the broker survived SIGKILL"
        try:
            reach(stream, KILL_DURING, "while the broker is dead")
            # the relay could not publish them: their events wait in the outbox
            with shop.pools() as (shards, _):
                after_kill = stream.orders[first:KILL_DURING]
                unsent.append(
                    sum(
                        int(
                            shard.run(
                                "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
                                " AND order_id = ANY(CAST(:o AS bigint[]))",
                                o=after_kill,
                            )[0][0]
                        )
                        for shard in shards
                    )
                )
        finally:
            shop.kafka.start()

    with stream.running():
        _during_fault(stream, crash, KILL_DURING, KILL_ORDERS)
    assert unsent and unsent[0] > 0, "no event waited for the broker: the fault did not hit the stream"
    assert_nothing_lost(shop, stream, dlq_start, KILL_ORDERS)
