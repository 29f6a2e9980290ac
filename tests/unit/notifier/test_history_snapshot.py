"""A user's history is cached under the version it was read at: a notification committed between reading the
version and reading the rows must not be cached under the older version (issue 12 §2: the e2e test saw a
miss where a repeat should hit, because the rows it was shown sat under a version no request asks for again).
"""

from __future__ import annotations

from datetime import datetime

from functions.notifier.domain import Notification
from tests.unit.notifier.fakes import USER, YEAR_2026, Notifier, change


def arriving_during_the_first_read(n: Notifier, *arrivals: int) -> None:
    """Each of the first len(arrivals) history reads is preceded by one notification being recorded (as if it
    committed after the request read the version and before it read the rows)."""
    pending = list(arrivals)
    original = n.db.between

    def between(user_id: int, start: datetime, end: datetime) -> list[Notification]:
        if pending:
            n.service.notify(change(pending.pop(0), order_id=1, status="paid"))
        return original(user_id, start, end)

    n.db.between = between  # type: ignore[method-assign]


def test_a_notification_arriving_mid_read_is_cached_under_its_own_version() -> None:
    n = Notifier()
    n.service.notify(change(1, order_id=1, status="new"))
    arriving_during_the_first_read(n, 2)
    items, hit = n.service.history_of(USER, *YEAR_2026)
    assert [i.status for i in items] == ["new", "paid"]  # what the database held when the rows were read
    assert hit is False
    again, hit = n.service.history_of(USER, *YEAR_2026)
    assert (again, hit) == (items, True)  # asked again, nothing new since: a hit


def test_a_history_that_keeps_changing_is_answered_from_the_database_uncached() -> None:
    n = Notifier()
    n.service.notify(change(1, order_id=1, status="new"))
    arriving_during_the_first_read(n, 2, 3, 4)
    items, hit = n.service.history_of(USER, *YEAR_2026)
    assert hit is False
    assert [i.event.id for i in items] == [1, 2, 3, 4]
    items_again, hit = n.service.history_of(USER, *YEAR_2026)
    assert (items_again, hit) == (items, False)  # nothing was cached for version 4 yet: this read stores it
    assert n.service.history_of(USER, *YEAR_2026) == (items, True)
