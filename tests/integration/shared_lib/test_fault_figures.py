"""shared_lib.devtools.faults.delivery, the figures the whole-flow fault tests and `make chaos` judge by, on
real loms and notifier databases: a lost, a duplicated and a misordered notification are each counted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared_lib.devtools.faults import delivery
from shared_lib.postgres import ConnectionPool
from tests.conftest import MakeDatabase

pytestmark = pytest.mark.integration

STATUSES = ("new", "awaiting payment", "paid")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def pools(make_database: MakeDatabase) -> Iterator[tuple[ConnectionPool, ConnectionPool]]:
    loms = ConnectionPool(make_database("loms"), size=1, name="test-figures")
    notifier = ConnectionPool(make_database("notifier"), size=1, name="test-figures")
    yield loms, notifier
    loms.close()
    notifier.close()


def outbox(loms: ConnectionPool, order_id: int, first_event: int) -> None:
    for n, status in enumerate(STATUSES):
        loms.run(
            "INSERT INTO outbox (event_id, order_id, user_id, status, moment) VALUES (:e, :o, 7, :s, :t)",
            e=first_event + n,
            o=order_id,
            s=status,
            t=T0,
        )


def notified(notifier: ConnectionPool, order_id: int, event_id: int, status: str, nth: int) -> None:
    """A notification of `event_id`, recorded as the notifier's `nth` application."""
    notifier.run(
        "INSERT INTO processed_events (event_source, event_id, order_id, outcome)"
        " VALUES ('loms', :e, :o, 'notified')",
        e=event_id,
        o=order_id,
    )
    notifier.run(
        "INSERT INTO notifications (event_source, event_id, order_id, user_id, status, message, created_at,"
        " recorded_at) VALUES ('loms', :e, :o, 7, :s, 'm', :t, :r)",
        e=event_id,
        o=order_id,
        s=status,
        t=T0,
        r=T0 + timedelta(seconds=nth),
    )


def test_each_kind_of_fault_is_counted_and_a_clean_delivery_is_clean(
    pools: tuple[ConnectionPool, ConnectionPool],
) -> None:
    loms, notifier = pools
    for order_id in (1, 2, 3, 4):
        outbox(loms, order_id, 10 * order_id)
    outbox(loms, 5, 50)  # not asked about: ignored
    nth = iter(range(100))
    for n, status in enumerate(STATUSES):  # order 1: every status, in order
        notified(notifier, 1, 10 + n, status, next(nth))
    notified(notifier, 2, 20, "new", next(nth))  # order 2: "awaiting payment" (event 21) lost
    notified(notifier, 2, 22, "paid", next(nth))
    notified(notifier, 3, 31, "awaiting payment", next(nth))  # order 3: applied out of loms' order
    notified(notifier, 3, 30, "new", next(nth))
    notified(notifier, 3, 32, "paid", next(nth))
    for n, status in enumerate(STATUSES):  # order 4: "paid" twice
        notified(notifier, 4, 40 + n, status, next(nth))
    notified(notifier, 4, 43, "paid", next(nth))
    notifier.run(
        "INSERT INTO processed_events (event_source, event_id, order_id, outcome)"
        " VALUES ('loms', 99, 3, 'out_of_order')"
    )

    figures = delivery([loms], notifier, [1, 2, 3, 4])
    assert (figures.orders, figures.expected) == (4, 12)
    assert figures.lost == [21]
    assert figures.duplicated == 1
    assert figures.out_of_order == [3]
    assert figures.misordered_events == 1
    assert not figures.clean

    clean = delivery([loms], notifier, [1])
    assert clean.clean and clean.expected == 3 and clean.lost == []
