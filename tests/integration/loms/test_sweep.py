"""The stale-order sweep on real PostgreSQL, one and two shards: stale orders cancelled once with their stock
freed once, many sweepers at once, a sweep racing payments, orders stuck in `new`, orphaned reservations.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from functions.loms.adapters.pg_shards import Shards
from functions.loms.adapters.pg_sweep import PgSweepCoordinator
from functions.loms.domain import Item, OrderNotPayableError, OrderStatus, StockLevel
from functions.loms.service import SweepReport
from tests.integration.loms.conftest import MakeShards, PgLoms

pytestmark = pytest.mark.integration
UniqueId = Callable[[], int]
O = OrderStatus  # noqa: E741


@pytest.fixture(params=[1, 2], ids=["1-shard", "2-shards"])
def loms(request: pytest.FixtureRequest, make_shards: MakeShards) -> PgLoms:
    return PgLoms(make_shards(request.param))


def spread(loms: PgLoms, unique_id: UniqueId, count: int) -> list[int]:
    """Users over every shard."""
    return [unique_id() * loms.shard_count + i % loms.shard_count for i in range(count)]


def test_stale_orders_are_cancelled_and_nothing_else(loms: PgLoms, unique_id: UniqueId) -> None:
    sku = unique_id()
    loms.put_stock(sku, 100, 5)
    users = spread(loms, unique_id, 6)
    stale = [loms.service.create_order(u, [Item(sku, 2)]) for u in users]
    paid = loms.service.create_order(users[0], [Item(sku, 1)])
    loms.service.pay_order(paid)
    fresh = loms.service.create_order(users[1], [Item(sku, 3)])
    for order_id in [*stale, paid]:
        loms.backdate(order_id, 601)
    report = loms.sweeper(older_than=600).run()
    assert report == SweepReport(cancelled=6, orphans_released=0, busy_shards=0)
    assert {loms.service.order_info(o).status for o in stale} == {O.CANCELLED}
    assert loms.service.order_info(paid).status is O.PAID
    assert loms.service.order_info(fresh).status is O.AWAITING_PAYMENT
    assert loms.level(sku) == StockLevel(sku, 99, 5 + 3)
    assert all(loms.statuses_of(o) == [O.NEW, O.AWAITING_PAYMENT, O.CANCELLED] for o in stale)
    assert loms.sweeper(older_than=600).run().cancelled == 0
    assert loms.level(sku) == StockLevel(sku, 99, 5 + 3)


def test_the_sweep_works_in_batches(loms: PgLoms, unique_id: UniqueId) -> None:
    sku = unique_id()
    loms.put_stock(sku, 100)
    for user in spread(loms, unique_id, 10):
        loms.backdate(loms.service.create_order(user, [Item(sku, 1)]), 601)
    per_run = [loms.sweeper(batch_size=2).run().cancelled for _ in range(6)]
    assert sum(per_run) == 10 and max(per_run) <= 2 * loms.shard_count
    assert loms.level(sku) == StockLevel(sku, 100, 0)


def test_many_sweepers_at_once_cancel_each_order_and_free_its_stock_exactly_once(
    loms: PgLoms, unique_id: UniqueId
) -> None:
    sku = unique_id()
    loms.put_stock(sku, 1000, 7)
    stale = [loms.service.create_order(u, [Item(sku, 3)]) for u in spread(loms, unique_id, 80)]
    for order_id in stale:
        loms.backdate(order_id, 3600)
    start = threading.Barrier(12)

    def replica(_: int) -> list[SweepReport]:
        """A replica (its own pools) whose cron fires again and again, until it finds every shard free and
        nothing left to do."""
        shards = Shards.open([pool.dsn.url() for pool in loms.shards.primaries], [], pool_size=2)
        sweeper = PgLoms(shards).sweeper(batch_size=5)
        reports: list[SweepReport] = []
        try:
            start.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                reports.append(sweeper.run())
                if reports[-1] == SweepReport(cancelled=0, orphans_released=0, busy_shards=0):
                    break
        finally:
            shards.close()
        return reports

    with ThreadPoolExecutor(max_workers=12) as pool:
        reports = [r for runs in pool.map(replica, range(12)) for r in runs]
    assert sum(r.cancelled for r in reports) == 80
    assert sum(r.busy_shards for r in reports) > 0  # the others stepped aside instead of queueing
    assert loms.level(sku) == StockLevel(sku, 1000, 7)
    for order_id in stale:
        assert loms.statuses_of(order_id) == [O.NEW, O.AWAITING_PAYMENT, O.CANCELLED]
        assert loms.reservations(order_id) == {}
    assert loms.shards.stock.run("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [[0]]


def test_a_sweep_racing_payments_never_both_pays_and_cancels(loms: PgLoms, unique_id: UniqueId) -> None:
    sku = unique_id()
    loms.put_stock(sku, 500)
    stale = [loms.service.create_order(u, [Item(sku, 2)]) for u in spread(loms, unique_id, 40)]
    for order_id in stale:
        loms.backdate(order_id, 3600)
    rng = random.Random(5)
    payers = rng.sample(stale, 20)

    def pay(order_id: int) -> bool:
        try:
            loms.service.pay_order(order_id)
            return True
        except OrderNotPayableError:
            return False

    with ThreadPoolExecutor(max_workers=10) as pool:
        sweeps = [pool.submit(loms.sweeper(batch_size=3).run) for _ in range(6)]
        paid_now = dict(zip(payers, pool.map(pay, payers), strict=True))
        for _ in range(3):
            sweeps.append(pool.submit(loms.sweeper().run))
        cancelled = sum(s.result().cancelled for s in sweeps)
    cancelled += loms.sweeper().run().cancelled
    statuses = {o: loms.service.order_info(o).status for o in stale}
    assert set(statuses.values()) <= {O.PAID, O.CANCELLED}
    assert cancelled == sum(1 for s in statuses.values() if s is O.CANCELLED)
    assert all(statuses[o] is (O.PAID if won else O.CANCELLED) for o, won in paid_now.items())
    paid = sum(1 for s in statuses.values() if s is O.PAID)
    assert loms.level(sku) == StockLevel(sku, 500 - 2 * paid, 0)
    for order_id, status in statuses.items():
        assert loms.statuses_of(order_id) == [O.NEW, O.AWAITING_PAYMENT, status]


def test_an_order_stuck_in_new_is_cancelled_and_its_reservation_freed(
    loms: PgLoms, unique_id: UniqueId
) -> None:
    sku = unique_id()
    loms.put_stock(sku, 10)
    user = spread(loms, unique_id, loms.shard_count)[-1]
    with loms.units.for_new_order(user) as unit:  # a create that committed `new` and no more
        order = unit.orders.add(user, (Item(sku, 4),))
        unit.stock.reserve(order.order_id, order.items)
    assert loms.sweeper().run().cancelled == 0  # not stale yet
    loms.backdate(order.order_id, 601)
    assert loms.sweeper().run().cancelled == 1
    assert loms.statuses_of(order.order_id) == [O.NEW, O.CANCELLED]
    assert loms.level(sku) == StockLevel(sku, 10, 0)


def test_reservations_of_an_order_never_stored_are_freed_once(
    make_shards: MakeShards, unique_id: UniqueId
) -> None:
    loms, sku = PgLoms(make_shards(2)), unique_id()
    loms.put_stock(sku, 10)
    stale = loms.service.create_order(unique_id() * 2 + 1, [Item(sku, 1)])  # old reservation, order exists
    loms.backdate(stale, 3600)
    lost = stale + 2 * 1000  # an id of shard 1 that no order has: its create died between its two commits
    loms.shards.stock.run(
        "INSERT INTO reservations (order_id, sku, count, created_at)"
        " VALUES (:o, :s, 3, now() - interval '1 hour')",
        o=lost,
        s=sku,
    )
    loms.shards.stock.run("UPDATE stocks SET reserved = reserved + 3 WHERE sku = :s", s=sku)
    coordinator = PgSweepCoordinator(loms.shards, page_size=1)  # pages through every candidate
    assert coordinator.orphaned_reservations(timedelta(seconds=600), limit=10) == [lost]
    assert loms.level(sku) == StockLevel(sku, 10, 4)
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = list(pool.map(lambda _: loms.sweeper().run(), range(4)))
    assert sum(r.orphans_released for r in reports) == 1
    assert sum(r.cancelled for r in reports) == 1
    assert loms.level(sku) == StockLevel(sku, 10, 0)
    assert loms.reservations(lost) == {}
    assert loms.statuses_of(lost) == []
    assert loms.sweeper().run() == SweepReport(cancelled=0, orphans_released=0, busy_shards=0)


def test_a_young_orphan_is_left_alone(make_shards: MakeShards, unique_id: UniqueId) -> None:
    loms, sku = PgLoms(make_shards(2)), unique_id()
    loms.put_stock(sku, 10)
    loms.shards.stock.run("INSERT INTO reservations (order_id, sku, count) VALUES (1001, :s, 3)", s=sku)
    coordinator = PgSweepCoordinator(loms.shards)
    assert coordinator.orphaned_reservations(older_than=timedelta(seconds=600), limit=10) == []
    assert loms.sweeper().run().orphans_released == 0
    assert loms.reservations(1001) == {sku: 3}


def test_a_sweeper_finding_its_shards_busy_returns_at_once(loms: PgLoms, unique_id: UniqueId) -> None:
    sku = unique_id()
    loms.put_stock(sku, 10)
    order_id = loms.service.create_order(unique_id(), [Item(sku, 1)])
    loms.backdate(order_id, 3600)
    coordinator = PgSweepCoordinator(loms.shards)
    with contextlib.ExitStack() as held:
        assert all(held.enter_context(coordinator.claim(s)) for s in range(loms.shard_count))
        report = loms.sweeper().run()  # waiting for the held claims would never end: it skips them
    assert report == SweepReport(cancelled=0, orphans_released=0, busy_shards=loms.shard_count)
    assert loms.sweeper().run().cancelled == 1


def test_the_sweep_prunes_sent_events_past_their_retention_oldest_first_and_never_an_unsent_one(
    loms: PgLoms, unique_id: UniqueId
) -> None:
    sku = unique_id()
    loms.put_stock(sku, 100)
    for user in spread(loms, unique_id, 4):
        loms.service.create_order(user, [Item(sku, 1)])
    events = sorted(loms.outbox_ages())  # 8: `new` and `awaiting payment` of each order
    assert len(events) == 8
    loms.mark_sent(events[:2], seconds_ago=7200)
    loms.mark_sent(events[2:4], seconds_ago=4000)
    loms.mark_sent(events[4:6], seconds_ago=60)  # sent, but recently; events[6:] never sent
    assert loms.sweeper(retention=3600, prune_batch=1).run().events_pruned == loms.shard_count
    assert loms.sweeper(retention=3600).run().events_pruned == 4 - loms.shard_count
    left = loms.outbox_ages()
    assert sorted(left) == events[4:]
    assert [left[e] is None for e in events[4:]] == [False, False, True, True]
    assert loms.sweeper(retention=3600).run().events_pruned == 0
    loms.mark_sent(events[6:], seconds_ago=10**6)
    assert loms.sweeper().run().events_pruned == 0  # no retention: kept forever
