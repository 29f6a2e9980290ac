"""The outbox on real PostgreSQL: events written with their change, unique ids across shards, the relay's
claim and LISTEN wake-up, and the relay against a recording transport (dies, fails, runs several at once).

Kafka itself is in test_events_kafka.py; here the transport is a stand-in so each property is seen alone.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.loms.adapters.events import NoEventTransport
from functions.loms.adapters.pg_outbox import PgOutbox
from functions.loms.domain import InsufficientStockError, Item, OrderStatus
from shared_lib.errors import TransientError
from shared_lib.events import Event
from tests.integration.loms.conftest import MakeShards, PgLoms, relays_running
from tests.polling import wait_for as eventually
from tests.unit.loms.fakes import RecordingPublisher

pytestmark = pytest.mark.integration
UniqueId = Callable[[], int]
N, A, F, P, C = "new", "awaiting payment", "failed", "paid", "cancelled"


def by_order(events: list[Event]) -> dict[int, list[tuple[int, str]]]:
    """(event id, status) per order, first occurrences only, in publication order."""
    seen: set[str] = set()
    orders: dict[int, list[tuple[int, str]]] = {}
    for event in events:
        if event.id in seen:
            continue
        seen.add(event.id)
        body = event.json()
        assert event.key == str(body["order_id"]).encode()
        orders.setdefault(body["order_id"], []).append((int(event.id), body["status"]))
    return orders


def assert_in_order(events: list[Event]) -> None:
    for changes in by_order(events).values():
        ids = [event_id for event_id, _ in changes]
        assert ids == sorted(ids)
        statuses = [status for _, status in changes]
        assert statuses[0] == N and statuses in ([N, A], [N, F], [N, A, P], [N, A, C]), statuses


def busy_world(loms: PgLoms, unique_id: UniqueId, sku: int, orders: int) -> list[int]:
    """Create orders over every shard, pay some and cancel some; returns the order ids."""
    created = []
    for i in range(orders):
        user = unique_id() * loms.shard_count + i % loms.shard_count
        created.append(loms.service.create_order(user, [Item(sku, 1)]))
    for order_id in created[::3]:
        loms.service.pay_order(order_id)
    for order_id in created[1::3]:
        loms.service.cancel_order(order_id)
    return created


def test_every_change_writes_one_event_in_its_shard(make_shards: MakeShards, unique_id: UniqueId) -> None:
    loms, sku, scarce = PgLoms(make_shards(2)), unique_id(), unique_id()
    loms.put_stock(sku, 100)
    loms.put_stock(scarce, 1)
    paid, cancelled, failed = [], [], []
    for shard in (0, 1):
        user = unique_id() * 2 + shard
        paid.append(loms.service.create_order(user, [Item(sku, 1)]))
        loms.service.pay_order(paid[-1])
        loms.service.pay_order(paid[-1])
        cancelled.append(loms.service.create_order(user, [Item(sku, 1)]))
        loms.service.cancel_order(cancelled[-1])
        loms.service.cancel_order(cancelled[-1])
        with pytest.raises(InsufficientStockError) as refused:
            loms.service.create_order(user, [Item(scarce, 2)])
        assert refused.value.order_id is not None
        failed.append(refused.value.order_id)
    for order_id in paid:
        assert [s.value for s in loms.statuses_of(order_id)] == [N, A, P]
    for order_id in cancelled:
        assert [s.value for s in loms.statuses_of(order_id)] == [N, A, C]
    for order_id in failed:
        assert [s.value for s in loms.statuses_of(order_id)] == [N, F]
    for shard, pool in enumerate(loms.shards.primaries):
        rows = pool.run("SELECT event_id, order_id, moment FROM outbox ORDER BY event_id")
        assert len(rows) == 8
        assert all(event_id % 2 == shard and order_id % 2 == shard for event_id, order_id, _ in rows)
        for order_id in {r[1] for r in rows}:  # each order's moments strictly increase with its ids
            moments = [moment for _, o, moment in rows if o == order_id]
            assert moments == sorted(moments) and len(set(moments)) == len(moments)
    assert len(set(loms.outbox_ids())) == 16


def test_a_rolled_back_change_leaves_no_event(make_shards: MakeShards, unique_id: UniqueId) -> None:
    loms, sku = PgLoms(make_shards(1)), unique_id()
    loms.put_stock(sku, 10)
    with pytest.raises(RuntimeError), loms.units.for_new_order(unique_id()) as unit:
        order = unit.orders.add(unique_id(), (Item(sku, 1),))
        unit.stock.reserve(order.order_id, order.items)
        unit.orders.change_status(order, OrderStatus.AWAITING_PAYMENT)
        raise RuntimeError("the unit fails before its commit")
    assert loms.outbox_ids() == []


def test_a_claim_is_exclusive_per_shard_and_goes_with_its_connection(
    make_shards: MakeShards,
) -> None:
    loms = PgLoms(make_shards(2))
    first, second = loms.outbox(), loms.outbox()
    try:
        with first.claim(0) as mine:
            assert mine
            with second.claim(0) as theirs, second.claim(1) as other_shard:
                assert (theirs, other_shard) == (False, True)
        with second.claim(0) as now_mine:
            assert now_mine
        with first.claim(1) as mine:
            assert mine
            first.close()  # the relay's connection is gone: so is its claim, once the server noticed

            def taken_over() -> bool:
                with second.claim(1) as theirs:
                    return theirs

            eventually(taken_over)
    finally:
        first.close()
        second.close()
    assert loms.shards.stock.run("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [[0]]


def test_wait_wakes_on_a_committed_event_and_times_out_without_one(
    make_shards: MakeShards, unique_id: UniqueId
) -> None:
    loms, sku = PgLoms(make_shards(2)), unique_id()
    loms.put_stock(sku, 10)
    outbox = loms.outbox()
    try:
        outbox.pending(0, 1)  # connects and LISTENs
        outbox.pending(1, 1)
        started = time.monotonic()
        assert outbox.wait(0.2) is False
        assert time.monotonic() - started >= 0.19
        for shard in (1, 0):
            timer = threading.Timer(0.1, loms.service.create_order, [unique_id() * 2 + shard, [Item(sku, 1)]])
            timer.start()
            assert outbox.wait(60) is True  # woken by the NOTIFY: a timeout would answer False
            timer.join()
            assert len(outbox.pending(shard, 10)) == 2
        assert outbox.wait(0.05) is False  # nothing new since
    finally:
        outbox.close()


def test_a_wake_up_soon_after_the_last_gathers_what_commits_meanwhile_into_one_batch(
    make_shards: MakeShards, unique_id: UniqueId
) -> None:
    loms, sku = PgLoms(make_shards(1)), unique_id()
    loms.put_stock(sku, 10)
    pauses: list[float] = []

    def sleep(seconds: float) -> None:  # the gathering time: another order commits in it
        pauses.append(seconds)
        loms.service.create_order(unique_id(), [Item(sku, 1)])

    outbox = PgOutbox([pool.dsn.url() for pool in loms.shards.primaries], gather_seconds=60, sleep=sleep)
    try:
        outbox.pending(0, 1)  # connects and LISTENs
        loms.service.create_order(unique_id(), [Item(sku, 1)])
        assert outbox.wait(60) is True
        assert pauses == []  # the first event after a quiet spell goes at once
        first = outbox.pending(0, 10)
        outbox.mark_sent(0, [e.event_id for e in first])
        loms.service.create_order(unique_id(), [Item(sku, 1)])
        assert outbox.wait(60) is True
        assert len(pauses) == 1 and 0 < pauses[0] <= 60
        batch = outbox.pending(0, 10)
        assert len(first) == 2 and len({e.order_id for e in batch}) == 2 and len(batch) == 4
        assert outbox.wait(0.05) is False  # the order made in the pause was read with this wake-up
    finally:
        outbox.close()


def test_the_relay_publishes_in_order_and_marks_everything(
    make_shards: MakeShards, unique_id: UniqueId
) -> None:
    loms, sku = PgLoms(make_shards(2)), unique_id()
    loms.put_stock(sku, 1000)
    busy_world(loms, unique_id, sku, 60)
    publisher = RecordingPublisher()
    relay = loms.relay(publisher, batch_size=7)
    try:
        assert relay.drain() == 60 * 2 + 40
        assert relay.drain() == 0
    finally:
        relay.close()
    ids = [int(e.id) for e in publisher.events()]
    assert len(ids) == len(set(ids)) and set(ids) == set(loms.outbox_ids())
    assert_in_order(publisher.events())
    assert loms.unsent() == 0


def test_a_relay_killed_between_send_and_mark_causes_duplicates_only(
    make_shards: MakeShards, unique_id: UniqueId
) -> None:
    loms, sku = PgLoms(make_shards(2)), unique_id()
    loms.put_stock(sku, 1000)
    busy_world(loms, unique_id, sku, 30)
    publisher = RecordingPublisher()
    publisher.fail_after_sending = 2  # each shard's first batch reaches the topic, and is not marked
    dying = loms.relay(publisher, batch_size=10)
    try:
        with pytest.raises(TransientError):
            dying.drain()
    finally:
        dying.close()
    assert len(publisher.events()) == 20
    heir = loms.relay(publisher, batch_size=10)
    try:
        heir.drain()
    finally:
        heir.close()
    ids = [int(e.id) for e in publisher.events()]
    assert set(ids) == set(loms.outbox_ids())
    assert len(ids) - len(set(ids)) == 20  # exactly the unmarked batches again
    assert_in_order(publisher.events())
    assert loms.unsent() == 0


def test_several_relays_at_once_lose_and_reorder_nothing(
    make_shards: MakeShards, unique_id: UniqueId
) -> None:
    loms, sku = PgLoms(make_shards(2)), unique_id()
    loms.put_stock(sku, 10_000)
    publisher = RecordingPublisher()
    relays = [loms.relay(publisher, batch_size=5, poll_seconds=0.05) for _ in range(4)]
    with relays_running(relays) as threads:
        rng = random.Random(11)

        def shop(i: int) -> None:
            order_id = loms.service.create_order(unique_id() * 2 + i % 2, [Item(sku, 1)])
            if rng.random() < 0.5:
                loms.service.pay_order(order_id)
            else:
                loms.service.cancel_order(order_id)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(shop, range(200)))
        eventually(lambda: len(publisher.events()) >= 600)
        eventually(lambda: loms.unsent() == 0)
    assert not any(thread.is_alive() for thread in threads)
    ids = [int(e.id) for e in publisher.events()]
    assert len(ids) == 600 and set(ids) == set(loms.outbox_ids())  # claims: not even a duplicate
    assert_in_order(publisher.events())


def test_orders_go_on_without_a_transport_and_the_backlog_drains_later(
    make_shards: MakeShards, unique_id: UniqueId
) -> None:
    loms, sku = PgLoms(make_shards(2)), unique_id()
    loms.put_stock(sku, 1000)
    stranded = loms.relay(NoEventTransport())
    try:
        assert stranded.drain() == 0  # nothing to send is no failure
        created = busy_world(loms, unique_id, sku, 20)
        with pytest.raises(TransientError, match="no event transport"):
            stranded.drain()
    finally:
        stranded.close()
    assert {loms.service.order_info(o).status for o in created} == {
        OrderStatus.PAID,
        OrderStatus.CANCELLED,
        OrderStatus.AWAITING_PAYMENT,
    }
    assert loms.unsent() == 20 * 2 + 14
    publisher = RecordingPublisher()
    relay = loms.relay(publisher)
    try:
        assert relay.drain() == 54
    finally:
        relay.close()
    assert_in_order(publisher.events())
    assert json.loads(publisher.events()[0].data)["status"] == N
