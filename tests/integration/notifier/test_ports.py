"""One behavioural suite for the notifier's store and history: the in-memory fakes and PostgreSQL agree."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from functions.notifier.adapters.postgres import PgNotificationHistory, PgNotificationStore
from functions.notifier.domain import EventKey, Notification, Outcome, StatusChange, notification_for
from shared_lib.errors import TransientError
from shared_lib.postgres import ConnectionPool
from tests.unit.notifier.fakes import T0, YEAR_2026, InMemoryNotifications, change

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "postgres"])
def db(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """(store, history) of one kind."""
    if request.param == "memory":
        fake = InMemoryNotifications()
        yield fake, fake
        return
    pool: ConnectionPool = request.getfixturevalue("notifier_pool")
    yield PgNotificationStore(pool), PgNotificationHistory(pool)


@pytest.fixture
def ids(unique_id: Callable[[], int]) -> Callable[[], int]:
    return unique_id


def record(store: Any, c: StatusChange) -> Outcome:
    return store.record(c, notification_for(c))  # type: ignore[no-any-return]


def test_the_first_delivery_notifies_and_a_repeat_is_a_duplicate(db: tuple[Any, Any], ids: Any) -> None:
    store, history = db
    user, order = ids(), ids()
    c = change(ids(), order, "new", user)
    assert record(store, c) is Outcome.NOTIFIED
    assert record(store, c) is Outcome.DUPLICATE
    assert [n.event for n in history.between(user, *YEAR_2026)] == [c.event]
    assert history.version(user) == 1


def test_an_older_event_of_the_same_order_is_out_of_order(db: tuple[Any, Any], ids: Any) -> None:
    store, history = db
    user, order, first = ids(), ids(), ids()
    assert record(store, change(first + 2, order, "paid", user)) is Outcome.NOTIFIED
    assert record(store, change(first + 1, order, "awaiting payment", user)) is Outcome.OUT_OF_ORDER
    assert record(store, change(first + 1, order, "awaiting payment", user)) is Outcome.DUPLICATE
    assert record(store, change(first + 3, order, "cancelled", user)) is Outcome.NOTIFIED
    assert [n.status for n in history.between(user, *YEAR_2026)] == ["paid", "cancelled"]
    assert history.version(user) == 2


def test_history_is_ascending_by_time_and_both_bounds_are_included(db: tuple[Any, Any], ids: Any) -> None:
    store, history = db
    user, first = ids(), ids()
    record(store, change(first, ids(), "new", user, moment=T0 + timedelta(hours=2)))
    record(store, change(first + 1, ids(), "new", user, moment=T0))
    record(store, change(first + 2, ids(), "new", user, moment=T0 + timedelta(hours=1)))
    record(store, change(first + 3, ids(), "new", ids(), moment=T0))  # another user's
    found = history.between(user, T0, T0 + timedelta(hours=1))
    assert [n.created_at for n in found] == [T0, T0 + timedelta(hours=1)]
    assert found[0] == Notification(
        event=EventKey("/loms", first + 1),
        order_id=found[0].order_id,
        user_id=user,
        status="new",
        message=f"Order {found[0].order_id} was created",
        created_at=T0,
    )
    assert history.version(ids()) == 0


def test_deliver_once_runs_once_and_a_failure_leaves_it_to_the_next(db: tuple[Any, Any], ids: Any) -> None:
    store, _ = db
    c = change(ids(), ids(), "paid", ids())
    record(store, c)
    seen: list[Notification] = []

    def fail(n: Notification) -> str | None:
        raise TransientError("the sink is unavailable")

    def remember(n: Notification) -> str | None:
        seen.append(n)
        return None

    with pytest.raises(TransientError):
        store.deliver_once(c.event, fail)
    assert store.deliver_once(c.event, remember) is True
    assert store.deliver_once(c.event, remember) is False
    assert [n.event for n in seen] == [c.event]
    assert store.deliver_once(EventKey("/loms", ids()), remember) is False


def test_a_refused_delivery_is_done_for_good(db: tuple[Any, Any], ids: Any) -> None:
    store, _ = db
    c = change(ids(), ids(), "paid", ids())
    record(store, c)
    assert store.deliver_once(c.event, lambda n: "refused") is True
    assert store.deliver_once(c.event, lambda n: None) is False


def test_a_delivery_under_way_is_not_started_again(db: tuple[Any, Any], ids: Any) -> None:
    store, _ = db
    c = change(ids(), ids(), "paid", ids())
    record(store, c)
    inside, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow(n: Notification) -> str | None:
        inside.set()
        assert release.wait(60)  # under way until the second attempt has been turned away
        ran.append("first")
        return None

    def second(n: Notification) -> str | None:
        ran.append("second")
        return None

    first = threading.Thread(target=store.deliver_once, args=(c.event, slow))
    first.start()
    assert inside.wait(60)
    assert store.deliver_once(c.event, second) is False
    release.set()
    first.join(60)
    assert ran == ["first"]


def test_concurrent_records_of_one_event_claim_it_once(db: tuple[Any, Any], ids: Any) -> None:
    store, history = db
    user = ids()
    c = change(ids(), ids(), "new", user)
    barrier = threading.Barrier(10)
    outcomes: list[Outcome] = []

    def go() -> None:
        barrier.wait()
        outcomes.append(record(store, c))

    threads = [threading.Thread(target=go) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(o.value for o in outcomes) == ["duplicate"] * 9 + ["notified"]
    assert len(history.between(user, *YEAR_2026)) == 1
    assert history.version(user) == 1
