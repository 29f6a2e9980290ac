"""Stateful in-memory stand-ins for the notifier's ports, events to feed it, and a service wired to them.

The same behavioural suite runs InMemoryNotifications and the PostgreSQL adapters
(tests/integration/notifier/test_ports.py), so they agree.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from functions.notifier import bootstrap as composition
from functions.notifier.domain import (
    DeliveryRefusedError,
    EventKey,
    Notification,
    Outcome,
    StatusChange,
)
from functions.notifier.service import NotifierService
from functions.notifier.settings import NotifierSettings
from shared_lib.cache import InProcessCache
from shared_lib.counters import InProcessCounters
from shared_lib.errors import TransientError

SOURCE = "/loms"
USER = 31337
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
YEAR_2026 = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC))


def change(
    event_id: int,
    order_id: int = 1,
    status: str = "new",
    user_id: int = USER,
    moment: datetime | None = None,
    source: str = SOURCE,
) -> StatusChange:
    return StatusChange(
        event=EventKey(source, event_id),
        order_id=order_id,
        user_id=user_id,
        status=status,
        moment=moment or T0 + timedelta(seconds=event_id % 1_000_000),
    )


def order_events(
    first_event_id: int,
    order_id: int,
    user_id: int = USER,
    statuses: tuple[str, ...] = ("new", "awaiting payment", "paid"),
) -> list[StatusChange]:
    """One order's events in the order loms emits them, with growing ids."""
    return [change(first_event_id + i, order_id, status, user_id) for i, status in enumerate(statuses)]


def cloud_event(c: StatusChange, **overrides: Any) -> tuple[dict[str, str], bytes]:
    """The binary-mode HTTP delivery of a status change (headers, body), as KafkaSource sends it."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": str(c.event.id),
        "ce-source": c.event.source,
        "ce-type": "loms.order.status-changed",
        "ce-time": c.moment.isoformat().replace("+00:00", "Z"),
        "Content-Type": "application/json",
    }
    value = {
        "order_id": c.order_id,
        "user_id": c.user_id,
        "status": c.status,
        "moment": c.moment.isoformat().replace("+00:00", "Z"),
    }
    value.update(overrides)
    return headers, json.dumps(value).encode()


class InMemoryNotifications:
    """NotificationStore and NotificationHistory at once, as the PostgreSQL tables behave.

    `down` makes every call a TransientError; `queries` counts history reads.
    """

    def __init__(self) -> None:
        self.claimed: dict[EventKey, Outcome] = {}
        self.progress: dict[int, int] = {}
        self.notifications: dict[EventKey, Notification] = {}
        self.delivered: dict[EventKey, str | None] = {}  # event -> refusal reason (None: delivered)
        self.versions: dict[int, int] = {}
        self.down = False
        self.queries = 0
        self._lock = threading.Lock()
        self._delivering: set[EventKey] = set()

    def _check(self) -> None:
        if self.down:
            raise TransientError("the database is unavailable")

    def record(self, change: StatusChange, notification: Notification) -> Outcome:
        self._check()
        with self._lock:
            if change.event in self.claimed:
                return Outcome.DUPLICATE
            last = self.progress.get(change.order_id, 0)
            if change.event.id < last:
                self.claimed[change.event] = Outcome.OUT_OF_ORDER
                return Outcome.OUT_OF_ORDER
            self.claimed[change.event] = Outcome.NOTIFIED
            self.progress[change.order_id] = change.event.id
            self.notifications[change.event] = notification
            self.versions[notification.user_id] = self.versions.get(notification.user_id, 0) + 1
            return Outcome.NOTIFIED

    def deliver_once(self, event: EventKey, deliver: Callable[[Notification], str | None]) -> bool:
        self._check()
        with self._lock:
            notification = self.notifications.get(event)
            if notification is None or event in self.delivered or event in self._delivering:
                return False
            self._delivering.add(event)
        try:
            refusal = deliver(notification)
            with self._lock:
                self.delivered[event] = refusal
            return True
        finally:
            with self._lock:
                self._delivering.discard(event)

    def version(self, user_id: int) -> int:
        self._check()
        with self._lock:
            return self.versions.get(user_id, 0)

    def between(self, user_id: int, start: datetime, end: datetime) -> list[Notification]:
        self._check()
        with self._lock:
            self.queries += 1
            found = [
                n
                for n in self.notifications.values()
                if n.user_id == user_id and start <= n.created_at <= end
            ]
        return sorted(found, key=lambda n: (n.created_at, n.event.id))


class RecordingSink:
    """Keeps what it was given, in order. `down`: a TransientError; `refuse`: a DeliveryRefusedError."""

    def __init__(self) -> None:
        self.delivered: list[Notification] = []
        self.down = False
        self.refuse = False
        self._lock = threading.Lock()

    def deliver(self, notification: Notification) -> None:
        if self.down:
            raise TransientError("the sink is unavailable")
        if self.refuse:
            raise DeliveryRefusedError("the sink refused it")
        with self._lock:
            self.delivered.append(notification)

    def events(self) -> list[int]:
        return [n.event.id for n in self.delivered]


class CountingHistory:
    """Wraps a real NotificationHistory and counts the history queries that reach it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.queries = 0
        self._lock = threading.Lock()

    def version(self, user_id: int) -> int:
        return int(self.inner.version(user_id))

    def between(self, user_id: int, start: datetime, end: datetime) -> list[Notification]:
        with self._lock:
            self.queries += 1
        return list(self.inner.between(user_id, start, end))


@dataclass
class Notifier:
    """A notifier service on fakes, with the fakes at hand for arranging and asserting."""

    db: InMemoryNotifications = field(default_factory=InMemoryNotifications)
    sink: RecordingSink = field(default_factory=RecordingSink)
    cache: InProcessCache = field(default_factory=InProcessCache)
    counters: InProcessCounters = field(default_factory=InProcessCounters)

    def __post_init__(self) -> None:
        self.service = NotifierService(
            store=self.db, history=self.db, sink=self.sink, cache=self.cache, counters=self.counters
        )

    def bootstrap(self, settings: NotifierSettings | None = None) -> composition.Root:
        """The notifier's composition root on these fakes, made the one its handlers use (`reset()` after)."""
        return composition.bootstrap(
            settings, store=self.db, history=self.db, sink=self.sink, cache=self.cache, counters=self.counters
        )
