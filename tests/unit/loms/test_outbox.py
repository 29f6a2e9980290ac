"""Status events on the in-memory fakes: what each use case writes to the outbox, how the relay publishes it
(in order, marked only after the transport took it, duplicates but no loss when it dies), and the sweep.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from functions import table
from functions.loms.domain import (
    InsufficientStockError,
    Item,
    OrderNotCancellableError,
    OrderStatus,
    OrderStatusChanged,
    StockLevel,
)
from functions.loms.relay_worker import health
from functions.loms.service import (
    EVENT_SOURCE,
    EVENT_TYPE,
    ORDER_EVENTS_TOPIC,
    OutboxRelay,
    RelayReport,
    cloudevent,
)
from shared_lib.errors import TransientError
from shared_lib.events import Event, PartialPublishError, kafka_message
from shared_lib.retry import Backoff
from tests.polling import wait_for as eventually
from tests.unit.loms.fakes import InMemoryLoms, RecordingPublisher

USER, SKU, SCARCE = 31337, 1076963, 2956315
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
A, N, F, P, C = (
    OrderStatus.AWAITING_PAYMENT,
    OrderStatus.NEW,
    OrderStatus.FAILED,
    OrderStatus.PAID,
    OrderStatus.CANCELLED,
)


@pytest.fixture
def loms() -> InMemoryLoms:
    world = InMemoryLoms()
    world.put_stock(SKU, total_count=300, reserved=35)
    world.put_stock(SCARCE, total_count=2)
    return world


def statuses(loms: InMemoryLoms, order_id: int) -> list[OrderStatus]:
    return [e.status for e in loms.events() if e.order_id == order_id]


# --- what the use cases write -------------------------------------------------------------------------


def test_each_use_case_writes_its_events(loms: InMemoryLoms) -> None:
    paid = loms.service.create_order(USER, [Item(SKU, 1)])
    loms.service.pay_order(paid)
    loms.service.pay_order(paid)  # a repeat changes nothing, and says nothing
    cancelled = loms.service.create_order(USER, [Item(SKU, 1)])
    loms.service.cancel_order(cancelled)
    loms.service.cancel_order(cancelled)
    with pytest.raises(InsufficientStockError) as refused:
        loms.service.create_order(USER, [Item(SCARCE, 3)])
    failed = refused.value.order_id
    assert failed is not None
    assert statuses(loms, paid) == [N, A, P]
    assert statuses(loms, cancelled) == [N, A, C]
    assert statuses(loms, failed) == [N, F]
    ids = [e.event_id for e in loms.events()]
    assert ids == sorted(set(ids))
    assert all(e.user_id == USER for e in loms.events())


def test_a_refused_change_writes_no_event(loms: InMemoryLoms) -> None:
    order_id = loms.service.create_order(USER, [Item(SKU, 1)])
    loms.service.pay_order(order_id)
    before = loms.events()
    with pytest.raises(OrderNotCancellableError):
        loms.service.cancel_order(order_id)
    assert loms.events() == before


def test_an_order_that_is_never_stored_writes_no_event(loms: InMemoryLoms) -> None:
    with pytest.raises(ValueError), loms.units.for_new_order(USER) as unit:
        unit.orders.add(USER, (Item(SKU, 1),))
        raise ValueError("the unit fails after the add")
    assert loms.events() == []


def test_the_cloudevent_of_a_change() -> None:
    moment = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    change = OrderStatusChanged(42, 7, USER, A, moment, TRACEPARENT)
    event = cloudevent(change)
    assert json.loads(event.data) == {
        "order_id": 7,
        "user_id": USER,
        "status": "awaiting payment",
        "moment": "2026-11-22T08:00:00Z",
    }
    assert (event.id, event.key, event.source, event.type) == ("42", b"7", EVENT_SOURCE, EVENT_TYPE)
    headers = dict(kafka_message(event).headers)
    assert headers["ce_id"] == b"42"
    assert headers["ce_time"] == b"2026-11-22T08:00:00Z"
    assert headers["traceparent"] == TRACEPARENT.encode()
    assert "traceparent" not in kafka_message(cloudevent(OrderStatusChanged(1, 7, USER, A, moment))).headers


def test_the_topic_is_in_the_function_table() -> None:
    assert table.TOPICS[ORDER_EVENTS_TOPIC] == 2
    assert table.BY_NAME["notify_status"].topic == ORDER_EVENTS_TOPIC


# --- the relay ----------------------------------------------------------------------------------------


def test_drain_publishes_everything_in_order_and_marks_it(loms: InMemoryLoms) -> None:
    orders = [loms.service.create_order(USER + i, [Item(SKU, 1)]) for i in range(5)]
    loms.service.pay_order(orders[0])
    publisher = RecordingPublisher()
    relay = loms.relay(publisher, batch_size=3)
    assert relay.drain() == 11
    assert [topic for topic, _ in publisher.published] == [ORDER_EVENTS_TOPIC] * 11
    assert [int(e.id) for e in publisher.events()] == [e.event_id for e in loms.events()]
    assert loms.unsent() == []
    assert relay.drain() == 0
    assert publisher.attempts == 4  # 3 + 3 + 3 + 2, then nothing to publish


def test_a_failing_transport_keeps_every_event_and_orders_still_succeed(loms: InMemoryLoms) -> None:
    publisher = RecordingPublisher()
    publisher.failing = True
    relay = loms.relay(publisher)
    order_id = loms.service.create_order(USER, [Item(SKU, 1)])
    with pytest.raises(TransientError):
        relay.drain()
    loms.service.pay_order(order_id)
    with pytest.raises(TransientError):
        relay.drain()
    assert len(loms.unsent()) == 3
    publisher.failing = False
    assert relay.drain() == 3
    assert [json.loads(e.data)["status"] for e in publisher.events()] == ["new", "awaiting payment", "paid"]


def test_a_relay_that_dies_after_sending_causes_duplicates_never_a_loss(loms: InMemoryLoms) -> None:
    for i in range(4):
        order_id = loms.service.create_order(USER + i, [Item(SKU, 1)])
        loms.service.pay_order(order_id)
    publisher = RecordingPublisher()
    publisher.fail_after_sending = 1
    with pytest.raises(TransientError):
        loms.relay(publisher, batch_size=5).drain()  # 5 sent, none marked
    assert len(loms.unsent()) == 12
    assert loms.relay(publisher, batch_size=5).drain() == 12
    ids = [int(e.id) for e in publisher.events()]
    assert len(ids) == 17 and set(ids) == {e.event_id for e in loms.events()}
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == sorted(first_seen)


class PartlyAcknowledging(RecordingPublisher):
    """The first publish reaches the topic only for the events whose ids are in `acknowledged` and fails with
    PartialPublishError saying so, as a broker killed mid-batch does; later publishes go through."""

    def __init__(self, acknowledged: set[int]) -> None:
        super().__init__()
        self.acknowledged: set[int] | None = acknowledged

    def publish(self, topic: str, events: Sequence[Event]) -> None:
        if self.acknowledged is None:
            return super().publish(topic, events)
        taken = [e for e in events if int(e.id) in self.acknowledged]
        self.acknowledged = None
        self.published.extend((topic, e) for e in taken)
        raise PartialPublishError("the broker went away", frozenset(e.id for e in taken))


def test_after_a_partial_publish_only_what_the_broker_lacks_is_sent_again_and_order_holds(
    loms: InMemoryLoms,
) -> None:
    orders = [loms.service.create_order(USER + i, [Item(SKU, 1)]) for i in range(3)]
    events = {o: [e.event_id for e in loms.events() if e.order_id == o] for o in orders}
    first, second, third = (events[o] for o in orders)  # each: new, awaiting payment
    # order 1: its second event lost; order 2: both acknowledged; order 3: its first lost, its second not
    publisher = PartlyAcknowledging({first[0], second[0], second[1], third[1]})
    with pytest.raises(TransientError):
        loms.relay(publisher).drain()
    # marked: each order's acknowledged prefix; the third order's second event waits for its first
    assert sorted(loms.unsent()) == sorted([first[1], third[0], third[1]])
    assert loms.relay(publisher).drain() == 3
    ids = [int(e.id) for e in publisher.events()]
    assert sorted(ids) == sorted(first + second + third + [third[1]])  # the one copy the broker already had
    assert ids.count(first[1]) == ids.count(second[0]) == 1  # nothing the broker acknowledged went again


def test_a_failure_before_any_acknowledgement_marks_nothing(loms: InMemoryLoms) -> None:
    loms.service.create_order(USER, [Item(SKU, 1)])
    publisher = PartlyAcknowledging(set())
    with pytest.raises(PartialPublishError):
        loms.relay(publisher).drain()
    assert len(loms.unsent()) == 2
    assert loms.relay(publisher).drain() == 2


def test_a_claimed_shard_is_left_to_its_relay(loms: InMemoryLoms) -> None:
    loms.service.create_order(USER, [Item(SKU, 1)])
    publisher = RecordingPublisher()
    with loms.relay_claims.claim(0) as mine:
        assert mine
        assert loms.relay(publisher).drain() == 0
    assert loms.relay(publisher).drain() == 2


def test_run_until_wakes_on_new_events_and_stops(loms: InMemoryLoms) -> None:
    publisher = RecordingPublisher()
    relay = loms.relay(publisher, poll_seconds=30)  # only a notification can wake it in time
    stop = threading.Event()
    thread = threading.Thread(target=relay.run_until, args=(stop,))
    thread.start()
    try:
        order_id = loms.service.create_order(USER, [Item(SKU, 1)])
        eventually(lambda: len(publisher.events()) == 2)
        loms.service.cancel_order(order_id)
        eventually(lambda: len(publisher.events()) == 3)
    finally:
        stop.set()
        loms.service.create_order(USER, [Item(SKU, 1)])  # wakes the wait so the stop is seen now
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_run_until_backs_off_while_failing_and_drains_when_the_transport_returns(loms: InMemoryLoms) -> None:
    publisher = RecordingPublisher()
    publisher.failing = True
    relay = loms.relay(publisher)
    relay.backoff = Backoff(base=0.01, max=0.02)
    loms.service.create_order(USER, [Item(SKU, 1)])
    stop = threading.Event()
    outcome: list[RelayReport] = []
    thread = threading.Thread(target=lambda: outcome.append(relay.run_until(stop)))
    thread.start()
    try:
        eventually(lambda: publisher.attempts >= 3)
        assert loms.service.create_order(USER, [Item(SKU, 1)]) > 0  # orders go on meanwhile
        publisher.failing = False
        eventually(lambda: len(publisher.events()) == 4)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert loms.unsent() == []
    assert outcome == [RelayReport(published=4, failure=None)]


def test_run_until_a_deadline_reports_the_last_failure(loms: InMemoryLoms) -> None:
    publisher = RecordingPublisher()
    publisher.failing = True
    loms.service.create_order(USER, [Item(SKU, 1)])
    ticks = iter(range(100))  # each look at the clock is 0.4 s later
    relay = OutboxRelay(
        loms.outbox(),
        publisher,
        backoff=Backoff(base=0.001, max=0.001),
        clock=lambda: next(ticks) * 0.4,
    )
    report = relay.run_until(threading.Event(), deadline=1.0)
    assert report.published == 0
    assert isinstance(report.failure, TransientError)
    assert publisher.attempts >= 2
    assert len(loms.unsent()) == 2


def test_linger_drains_at_least_once_and_close_closes_the_outbox(loms: InMemoryLoms) -> None:
    loms.service.create_order(USER, [Item(SKU, 1)])
    publisher = RecordingPublisher()
    relay = loms.relay(publisher)
    assert relay.linger().published == 2
    relay.close()
    assert getattr(relay.outbox, "closed", False) is True


# --- the stale-order sweep ----------------------------------------------------------------------------


def test_the_sweep_cancels_stale_orders_once_and_frees_their_stock(loms: InMemoryLoms) -> None:
    stale = [loms.service.create_order(USER + i, [Item(SKU, 2)]) for i in range(3)]
    paid = loms.service.create_order(USER, [Item(SKU, 1)])
    loms.service.pay_order(paid)
    loms.advance(601)
    fresh = loms.service.create_order(USER, [Item(SKU, 4)])
    report = loms.sweeper(older_than=600).run()
    assert (report.cancelled, report.orphans_released, report.busy_shards) == (3, 0, 0)
    assert [loms.service.order_info(o).status for o in stale] == [C, C, C]
    assert loms.service.order_info(paid).status is P
    assert loms.service.order_info(fresh).status is A
    assert loms.level(SKU) == StockLevel(SKU, 299, 35 + 4)
    assert all(statuses(loms, o) == [N, A, C] for o in stale)
    assert loms.sweeper(older_than=600).run().cancelled == 0
    assert loms.level(SKU) == StockLevel(SKU, 299, 35 + 4)


def test_the_sweep_works_in_batches(loms: InMemoryLoms) -> None:
    for i in range(5):
        loms.service.create_order(USER + i, [Item(SKU, 1)])
    loms.advance(601)
    assert loms.sweeper(batch_size=2).run().cancelled == 2
    assert loms.sweeper(batch_size=2).run().cancelled == 2
    assert loms.sweeper(batch_size=2).run().cancelled == 1
    assert loms.level(SKU) == StockLevel(SKU, 300, 35)


def test_an_order_stuck_in_new_is_cancelled_and_its_reservation_freed(loms: InMemoryLoms) -> None:
    with loms.units.for_new_order(USER) as unit:  # a create that committed `new` and then died
        order = unit.orders.add(USER, (Item(SKU, 3),))
        unit.stock.reserve(order.order_id, order.items)
    loms.advance(601)
    assert loms.sweeper().run().cancelled == 1
    assert statuses(loms, order.order_id) == [N, C]
    assert loms.level(SKU) == StockLevel(SKU, 300, 35)


def test_reservations_of_an_order_never_stored_are_freed_after_the_window(loms: InMemoryLoms) -> None:
    loms.orphan(999_999, SKU, 5)
    assert loms.sweeper().run().orphans_released == 0  # too recent: its create may still be running
    loms.advance(601)
    report = loms.sweeper().run()
    assert (report.cancelled, report.orphans_released) == (0, 1)
    assert loms.level(SKU) == StockLevel(SKU, 300, 35)
    assert loms.reservations(999_999) == {}
    assert loms.events() == []


def test_a_shard_another_sweeper_holds_is_skipped_at_once(loms: InMemoryLoms) -> None:
    loms.service.create_order(USER, [Item(SKU, 1)])
    loms.advance(601)
    with loms.sweep_claims.claim(0):
        report = loms.sweeper().run()
    assert (report.cancelled, report.busy_shards) == (0, 1)
    assert loms.sweeper().run().cancelled == 1


def test_concurrent_sweepers_cancel_each_order_once(loms: InMemoryLoms) -> None:
    stale = [loms.service.create_order(USER + i, [Item(SKU, 1)]) for i in range(40)]
    loms.advance(601)
    start = threading.Barrier(8)
    results: list[int] = []
    lock = threading.Lock()

    def sweep() -> None:
        start.wait()
        total = 0
        for _ in range(20):
            total += loms.sweeper(batch_size=3).run().cancelled
        with lock:
            results.append(total)

    threads = [threading.Thread(target=sweep) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 40
    assert all(statuses(loms, o) == [N, A, C] for o in stale)
    assert loms.level(SKU) == StockLevel(SKU, 300, 35)


class BrokenPublisher:
    def __init__(self) -> None:
        self.attempts = 0

    def publish(self, topic: str, events: object) -> None:
        self.attempts += 1
        raise ValueError("a bug in the transport")


def test_a_bug_does_not_end_the_loop_and_is_reported(loms: InMemoryLoms) -> None:
    loms.service.create_order(USER, [Item(SKU, 1)])
    publisher = BrokenPublisher()
    ticks = iter(range(100))
    relay = OutboxRelay(
        loms.outbox(), publisher, backoff=Backoff(base=0.001, max=0.001), clock=lambda: next(ticks) * 0.4
    )
    report = relay.run_until(threading.Event(), deadline=1.0)
    assert isinstance(report.failure, ValueError)
    assert publisher.attempts >= 2
    assert len(loms.unsent()) == 2


def test_a_drain_under_steady_inflow_ends_when_told(loms: InMemoryLoms) -> None:
    for i in range(10):
        loms.service.create_order(USER + i, [Item(SKU, 1)])
    publisher = RecordingPublisher()
    relay = loms.relay(publisher, batch_size=4)
    assert relay.drain(enough=lambda: len(publisher.events()) >= 8) == 8
    assert len(loms.unsent()) == 12
    stop = threading.Event()
    stop.set()
    assert relay.run_until(stop).published == 4  # at least one batch, then the stop is seen


def test_the_relay_worker_is_alive_while_its_loop_goes_round_and_stalled_after(loms: InMemoryLoms) -> None:
    now = [100.0]
    relay = OutboxRelay(loms.outbox(), RecordingPublisher(), poll_seconds=0.01, clock=lambda: now[0])
    assert health(relay, stale_after=30) == (True, {"last_pass_seconds_ago": None})  # still starting
    relay.run_until(threading.Event(), deadline=100.0)  # one pass at 100.0
    assert relay.last_pass == 100.0
    now[0] = 129.5
    assert health(relay, stale_after=30) == (True, {"last_pass_seconds_ago": 29.5})
    now[0] = 130.5
    assert health(relay, stale_after=30) == (False, {"last_pass_seconds_ago": 30.5})


def test_the_sweep_prunes_sent_events_past_their_retention_oldest_first_never_an_unsent_one(
    loms: InMemoryLoms,
) -> None:
    relay = loms.relay(RecordingPublisher())
    loms.service.create_order(USER, [Item(SKU, 1)])
    relay.drain()  # events 1 and 2, sent now
    loms.advance(100)
    loms.service.create_order(USER, [Item(SKU, 1)])
    relay.drain()  # events 3 and 4, sent 100 s later
    loms.service.create_order(USER, [Item(SKU, 1)])  # events 5 and 6, never sent

    def ids() -> list[int]:
        return [e.event_id for e in loms.events()]

    assert loms.sweeper(retention=60, prune_batch=1).run().events_pruned == 1
    assert ids() == [2, 3, 4, 5, 6]
    assert loms.sweeper(retention=60).run().events_pruned == 1  # 3 and 4 are only 0.0001 s old
    loms.advance(100)
    report = loms.sweeper(retention=60).run()
    assert (report.cancelled, report.events_pruned) == (0, 2)
    assert ids() == [5, 6] and loms.unsent() == [5, 6]
    loms.advance(10**6)
    assert loms.sweeper(older_than=10**7, retention=60).run().events_pruned == 0  # unsent: never
    assert loms.sweeper(older_than=10**7).run().events_pruned == 0  # no retention: nothing goes
    loms.service.create_order(USER, [Item(SKU, 1)])
    assert ids() == [5, 6, 7, 8]  # ids are not reused after a prune
