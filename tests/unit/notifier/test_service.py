"""The notifier service on in-memory fakes: exactly once in effect, in order per order, failures, history."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta

import pytest

from functions.notifier.domain import EventKey, InvalidPeriodError, Notification, Outcome, StatusChange
from shared_lib.errors import TransientError
from tests.unit.notifier.fakes import T0, USER, YEAR_2026, Notifier, change, order_events
from tests.unit.shared_lib.test_cache import followed_by


def interleave(streams: list[list[StatusChange]], rng: random.Random) -> list[StatusChange]:
    """A random merge of the streams that keeps each stream's own order (as Kafka keeps a key's order)."""
    positions = [0] * len(streams)
    merged: list[StatusChange] = []
    while any(p < len(s) for p, s in zip(positions, streams, strict=True)):
        i = rng.choice([i for i, s in enumerate(streams) if positions[i] < len(s)])
        merged.append(streams[i][positions[i]])
        positions[i] += 1
    return merged


def three_times(events: list[StatusChange], rng: random.Random) -> list[StatusChange]:
    """Each event three times: relay re-sends of the whole run, or a repeat right away."""
    if rng.random() < 0.5:
        return events * 3
    return [e for event in events for e in (event, event, event)]


@pytest.mark.parametrize("seed", range(5))
def test_every_event_three_times_shuffled_across_orders_notifies_once_each_in_order(seed: int) -> None:
    rng = random.Random(seed)
    n = Notifier()
    orders = {order_id: order_events(100 * order_id, order_id) for order_id in range(1, 9)}
    for event in interleave([three_times(events, rng) for events in orders.values()], rng):
        n.service.notify(event)

    assert len(n.db.notifications) == sum(len(events) for events in orders.values())
    for order_id, events in orders.items():
        delivered = [x.event.id for x in n.sink.delivered if x.order_id == order_id]
        assert delivered == [e.event.id for e in events]  # once each, in the order loms emitted them
    assert n.counters.value("notified") == 24
    assert n.counters.value("duplicate") == 48
    assert n.counters.value("out_of_order") == 0


def test_an_event_older_than_one_applied_is_recorded_out_of_order_and_not_delivered() -> None:
    n = Notifier()
    new, awaiting, paid = order_events(10, order_id=7)
    assert n.service.notify(new) is Outcome.NOTIFIED
    assert n.service.notify(paid) is Outcome.NOTIFIED
    assert n.service.notify(awaiting) is Outcome.OUT_OF_ORDER
    assert n.service.notify(awaiting) is Outcome.DUPLICATE  # and once recorded, a duplicate like any other
    assert n.sink.events() == [10, 12]
    assert n.db.claimed[awaiting.event] is Outcome.OUT_OF_ORDER
    assert awaiting.event not in n.db.notifications
    assert n.counters.value("out_of_order") == 1


def test_order_is_kept_per_order_not_across_orders() -> None:
    n = Notifier()
    n.service.notify(change(50, order_id=1))
    assert n.service.notify(change(3, order_id=2)) is Outcome.NOTIFIED  # a lower id, but another order
    assert n.sink.events() == [50, 3]


def test_the_same_id_from_another_source_is_another_event() -> None:
    n = Notifier()
    n.service.notify(change(5, order_id=1, source="loms/shard-0"))
    assert n.service.notify(change(5, order_id=2, source="loms/shard-1")) is Outcome.NOTIFIED


def test_concurrent_duplicates_record_and_deliver_once() -> None:
    n = Notifier()
    event = change(1)
    barrier = threading.Barrier(12)

    def deliver() -> None:
        barrier.wait()
        n.service.notify(event)

    threads = [threading.Thread(target=deliver) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert n.sink.events() == [1]
    assert n.counters.value("notified") == 1
    assert n.counters.value("duplicate") == 11


def test_a_sink_outage_is_transient_and_the_redelivery_delivers_once() -> None:
    n = Notifier()
    event = change(1)
    n.sink.down = True
    with pytest.raises(TransientError):
        n.service.notify(event)
    assert event.event in n.db.notifications  # claimed and committed before the delivery failed
    assert n.sink.events() == []
    n.sink.down = False
    assert n.service.notify(event) is Outcome.DUPLICATE  # the redelivery finishes what the first began
    assert n.service.notify(event) is Outcome.DUPLICATE
    assert n.sink.events() == [1]


def test_a_refusal_is_recorded_and_never_retried() -> None:
    n = Notifier()
    n.sink.refuse = True
    n.service.notify(change(1))
    assert n.db.delivered[EventKey("/loms", 1)] == "the sink refused it"
    n.sink.refuse = False
    n.service.notify(change(1))
    assert n.sink.events() == []
    assert n.counters.value("refused") == 1


def test_a_database_outage_is_transient_and_records_nothing() -> None:
    n = Notifier()
    n.db.down = True
    with pytest.raises(TransientError):
        n.service.notify(change(1))
    n.db.down = False
    assert n.db.claimed == {}
    assert n.sink.events() == []


def test_a_poison_event_is_counted() -> None:
    n = Notifier()
    n.service.reject(
        "17", "status: Input should be 'new', 'awaiting payment', 'failed', 'paid' or 'cancelled'"
    )
    n.service.reject(None, "not a CloudEvents 1.0 binary-mode event")
    assert n.counters.value("poison") == 2


# --- history --------------------------------------------------------------------------------------------


def test_history_is_ascending_by_time_within_the_period_and_a_repeat_is_a_hit() -> None:
    n = Notifier()
    n.service.notify(change(2, order_id=1, status="paid", moment=T0 + timedelta(hours=2)))
    n.service.notify(change(1, order_id=2, status="new", moment=T0 + timedelta(hours=1)))
    n.service.notify(change(3, order_id=3, status="new", moment=T0 + timedelta(days=400)))  # 2027
    n.service.notify(change(4, order_id=4, status="new", user_id=USER + 1))
    items, hit = n.service.history_of(USER, *YEAR_2026)
    assert [(i.order_id, i.status) for i in items] == [(2, "new"), (1, "paid")]
    assert items[1].message == "Order 1 is paid"
    assert items[1].created_at == T0 + timedelta(hours=2)
    assert hit is False
    assert n.service.history_of(USER, *YEAR_2026) == (items, True)
    assert n.db.queries == 1


def test_both_bounds_are_included() -> None:
    n = Notifier()
    n.service.notify(change(1, moment=T0))
    assert len(n.service.history_of(USER, T0, T0)[0]) == 1


def test_history_is_never_stale_after_a_new_notification() -> None:
    n = Notifier()
    n.service.notify(change(1, order_id=1))
    first, _ = n.service.history_of(USER, *YEAR_2026)
    other_period, _ = n.service.history_of(USER, T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert n.service.history_of(USER, *YEAR_2026)[1] is True  # cached
    n.service.notify(change(2, order_id=1, status="awaiting payment"))
    after, hit = n.service.history_of(USER, *YEAR_2026)
    assert hit is False
    assert [i.status for i in after] == ["new", "awaiting payment"]
    assert len(n.service.history_of(USER, T0 - timedelta(days=1), T0 + timedelta(days=1))[0]) == 2
    assert len(first) == len(other_period) == 1


def test_a_duplicate_or_out_of_order_event_leaves_the_cached_history_valid() -> None:
    n = Notifier()
    n.service.notify(change(1))
    n.service.notify(change(3, status="paid"))
    n.service.history_of(USER, *YEAR_2026)
    n.service.notify(change(1))
    n.service.notify(change(2, status="awaiting payment"))
    assert n.service.history_of(USER, *YEAR_2026)[1] is True


def test_a_period_that_ends_before_it_starts_is_invalid() -> None:
    with pytest.raises(InvalidPeriodError):
        Notifier().service.history_of(USER, YEAR_2026[1], YEAR_2026[0])


def test_concurrent_misses_make_one_history_query() -> None:
    n = Notifier()
    n.service.notify(change(1))
    barrier = threading.Barrier(16)
    original = n.db.between
    results: list[tuple[int, bool]] = []

    def read() -> None:
        barrier.wait()
        items, hit = n.service.history_of(USER, *YEAR_2026)
        results.append((len(items), hit))

    with followed_by(15) as waiting:

        def held_between(user_id: int, start: datetime, end: datetime) -> list[Notification]:
            assert waiting.all_in.wait(60)  # held until the 15 other requests wait for this query
            return original(user_id, start, end)

        n.db.between = held_between  # type: ignore[method-assign]
        threads = [threading.Thread(target=read) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert results == [(1, False)] * 16  # sixteen misses …
    assert n.db.queries == 1  # … answered by one query


def test_a_database_outage_fails_the_history_read() -> None:
    n = Notifier()
    n.db.down = True
    with pytest.raises(TransientError):
        n.service.history_of(USER, *YEAR_2026)


def test_the_cache_key_carries_the_version_so_a_shared_cache_cannot_serve_stale() -> None:
    # two replicas share one cache: a notification recorded by one is seen by the other's next read
    a = Notifier()
    b = Notifier(db=a.db, cache=a.cache)
    a.service.notify(change(1))
    assert b.service.history_of(USER, *YEAR_2026)[1] is False
    assert a.service.history_of(USER, *YEAR_2026)[1] is True
    a.service.notify(change(2, status="awaiting payment"))
    items, hit = b.service.history_of(USER, *YEAR_2026)
    assert (len(items), hit) == (2, False)
