"""loms on the session's real PostgreSQL: one shard, or two shards (stock in the first).

Helpers arrange stock rows and look at what the databases hold.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import pytest

from functions.loms.adapters.pg_outbox import PgOutbox
from functions.loms.adapters.pg_readers import PgOrderReader, PgStockReader
from functions.loms.adapters.pg_shards import Shards
from functions.loms.adapters.pg_sweep import PgSweepCoordinator
from functions.loms.adapters.pg_unit_of_work import PgUnitOfWork
from functions.loms.domain import OrderStatus, StockLevel
from functions.loms.ports import EventPublisher
from functions.loms.service import ORDER_EVENTS_TOPIC, LomsService, OutboxRelay, StaleOrderSweeper

MakeDatabase = Callable[[str], str]
MakeShards = Callable[[int], Shards]


class PgLoms:
    """The real adapters wired into the service, plus what a test needs to arrange and inspect the state."""

    def __init__(self, shards: Shards, home_shard: int = 0) -> None:
        self.shards = shards
        self.home_shard = home_shard  # where the orders of `user()` ids go
        self.units = PgUnitOfWork(shards)
        self.service = LomsService(
            units=self.units, orders=PgOrderReader(shards), stock=PgStockReader(shards)
        )

    @property
    def shard_count(self) -> int:
        return self.shards.count

    def put_stock(self, sku: int, total_count: int, reserved: int = 0) -> None:
        self.shards.stock.run(
            "INSERT INTO stocks (sku, total_count, reserved) VALUES (:s, :t, :r)"
            " ON CONFLICT (sku) DO UPDATE SET total_count = :t, reserved = :r",
            s=sku,
            t=total_count,
            r=reserved,
        )

    def level(self, sku: int) -> StockLevel | None:
        rows = self.shards.stock.run("SELECT total_count, reserved FROM stocks WHERE sku = :s", s=sku)
        return StockLevel(sku, rows[0][0], rows[0][1]) if rows else None

    def reservations(self, order_id: int) -> dict[int, int]:
        rows = self.shards.stock.run("SELECT sku, count FROM reservations WHERE order_id = :o", o=order_id)
        return {sku: count for sku, count in rows}

    def orders_of(self, user_id: int) -> list[tuple[int, str]]:
        """(order id, status) of every order of the user, from the shard the user's orders go to."""
        pool = self.shards.primaries[user_id % self.shard_count]
        rows = pool.run("SELECT order_id, status FROM orders WHERE user_id = :u ORDER BY order_id", u=user_id)
        return [(order_id, status) for order_id, status in rows]

    def user(self, base: int) -> int:
        """A user id near `base` (a unique id) whose new orders go to the home shard."""
        return base - base % self.shard_count + self.home_shard

    def statuses_of(self, order_id: int) -> list[OrderStatus]:
        """The statuses of the order's outbox events, in event id order."""
        rows = self.shards.primaries[self.shards.index_of(order_id)].run(
            "SELECT status FROM outbox WHERE order_id = :o ORDER BY event_id", o=order_id
        )
        return [OrderStatus(row[0]) for row in rows]

    def outbox_ids(self) -> list[int]:
        """Every event id in every shard's outbox."""
        return [int(r[0]) for pool in self.shards.primaries for r in pool.run("SELECT event_id FROM outbox")]

    def unsent(self) -> int:
        return sum(
            int(pool.run("SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0])
            for pool in self.shards.primaries
        )

    def backdate(self, order_id: int, seconds: float) -> None:
        """Make the order's last change (and its reservations) look `seconds` older."""
        self.shards.primaries[self.shards.index_of(order_id)].run(
            "UPDATE orders SET updated_at = updated_at - make_interval(secs => :s),"
            " created_at = created_at - make_interval(secs => :s) WHERE order_id = :o",
            s=seconds,
            o=order_id,
        )
        self.shards.stock.run(
            "UPDATE reservations SET created_at = created_at - make_interval(secs => :s) WHERE order_id = :o",
            s=seconds,
            o=order_id,
        )

    def outbox(self) -> PgOutbox:
        return PgOutbox([pool.dsn.url() for pool in self.shards.primaries])

    def relay(
        self,
        publisher: EventPublisher,
        batch_size: int = 1000,
        poll_seconds: float = 0.2,
        topic: str = ORDER_EVENTS_TOPIC,
    ) -> OutboxRelay:
        return OutboxRelay(
            self.outbox(),
            publisher,
            batch_size=batch_size,
            poll_seconds=poll_seconds,
            linger_seconds=0,
            topic=topic,
        )

    def sweeper(
        self,
        older_than: float = 600,
        batch_size: int = 500,
        retention: float | None = None,
        prune_batch: int = 10_000,
    ) -> StaleOrderSweeper:
        return StaleOrderSweeper(
            self.units,
            PgSweepCoordinator(self.shards),
            timedelta(seconds=older_than),
            batch_size,
            None if retention is None else timedelta(seconds=retention),
            prune_batch,
        )

    def outbox_ages(self) -> dict[int, float | None]:
        """event id → seconds since it was marked sent (None: unsent), every shard."""
        return {
            int(row[0]): None if row[1] is None else float(row[1])
            for pool in self.shards.primaries
            for row in pool.run("SELECT event_id, extract(epoch FROM now() - sent_at) FROM outbox")
        }

    def mark_sent(self, event_ids: list[int], seconds_ago: float) -> None:
        for pool in self.shards.primaries:
            pool.run(
                "UPDATE outbox SET sent_at = now() - make_interval(secs => :s)"
                " WHERE event_id = ANY(CAST(:ids AS bigint[]))",
                s=seconds_ago,
                ids=event_ids,
            )


@contextlib.contextmanager
def relays_running(relays: Sequence[OutboxRelay]) -> Iterator[list[threading.Thread]]:
    """The relays at once, each in a thread of its own, for the body; then stopped, joined and closed."""
    stop = threading.Event()
    threads = [threading.Thread(target=r.run_until, args=(stop,)) for r in relays]
    for thread in threads:
        thread.start()
    try:
        yield threads
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        for relay in relays:
            relay.close()


@pytest.fixture(scope="session")
def one_shard(make_database: MakeDatabase) -> Iterator[Shards]:
    shards = Shards.open([make_database("loms")], [], pool_size=10)
    yield shards
    shards.close()


@pytest.fixture(scope="session")
def two_shards(make_database: MakeDatabase) -> Iterator[Shards]:
    shards = Shards.open([make_database("loms"), make_database("loms")], [], pool_size=10)
    yield shards
    shards.close()


@pytest.fixture(params=["1-shard", "2-shards-order-with-stock", "2-shards-order-apart"])
def loms(request: pytest.FixtureRequest) -> PgLoms:
    """Orders in the stock's database (one transaction), and in another shard (two transactions)."""
    if request.param == "1-shard":
        return PgLoms(request.getfixturevalue("one_shard"))
    return PgLoms(request.getfixturevalue("two_shards"), home_shard=0 if "with-stock" in request.param else 1)


@pytest.fixture
def make_shards(make_database: MakeDatabase) -> Iterator[MakeShards]:
    """make_shards(n) -> n fresh loms databases as shards, for tests that look at whole outboxes or sweeps."""
    opened: list[Shards] = []

    def make(count: int) -> Shards:
        shards = Shards.open([make_database("loms") for _ in range(count)], [], pool_size=10)
        opened.append(shards)
        return shards

    yield make
    for shards in opened:
        shards.close()
