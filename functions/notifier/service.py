"""Notifier use cases: record and deliver one notification per order status change, and read a user's
history through the cache. No Flask, no SQL, no environment.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from functions.notifier.domain import (
    DeliveryRefusedError,
    EventKey,
    InvalidPeriodError,
    Notification,
    Outcome,
    StatusChange,
    notification_for,
    parse_instant,
    rfc3339,
)
from functions.notifier.ports import Counters, NotificationHistory, NotificationSink, NotificationStore
from shared_lib.cache import Cache, load_through

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # part of every cache key: a change of the cached shape never reads old entries
HISTORY_READ_ATTEMPTS = 3  # reads of a history that notifications keep changing, before answering uncached


@dataclass(frozen=True, slots=True)
class NotifierService:
    store: NotificationStore
    history: NotificationHistory
    sink: NotificationSink
    cache: Cache
    counters: Counters
    cache_ttl_seconds: float = 300.0
    cache_wait_seconds: float = 0.5  # how long a miss waits for another replica's load of the same history

    def notify(self, change: StatusChange) -> Outcome:
        """Record the change once and deliver its notification. Raises TransientError (the store or the sink
        is unavailable): the event must come again, and its next delivery finishes what this one began.
        """
        outcome = self.store.record(change, notification_for(change))
        self.counters.increment(outcome.value)
        if outcome is Outcome.OUT_OF_ORDER:
            log.warning(
                "event %s of order %s (%s) is older than one applied already: recorded, not delivered",
                change.event.id,
                change.order_id,
                change.status,
            )
            return outcome
        # a duplicate too: its first delivery may have been claimed and committed, then failed to deliver
        self.store.deliver_once(change.event, self._deliver)
        return outcome

    def reject(self, event_id: str | None, reason: str) -> None:
        """A poison event: logged and counted, then acknowledged (it can never succeed)."""
        self.counters.increment("poison")
        log.error("poison event %s acknowledged and dropped: %s", event_id or "without an id", reason)

    def _deliver(self, notification: Notification) -> str | None:
        try:
            self.sink.deliver(notification)
        except DeliveryRefusedError as exc:
            self.counters.increment("refused")
            log.error("the sink refused the notification of event %s: %s", notification.event.id, exc.message)
            return exc.message
        self.counters.increment("delivered")
        return None

    def history_of(self, user_id: int, start: datetime, end: datetime) -> tuple[list[Notification], bool]:
        """The user's notifications from `start` to `end` and whether they came from the cache.

        The cache key holds the user's history version, read from the database on every call and bumped with
        every new notification, so a cached history is never served after a newer notification exists. What is
        cached under a version is that version's history exactly (see _history_at), so asking again until the
        next notification is a hit.
        Raises InvalidPeriodError, TransientError (the database; the cache never fails a call).
        """
        if start > end:
            raise InvalidPeriodError()
        for _ in range(HISTORY_READ_ATTEMPTS):
            version = self.history.version(user_id)
            key = f"history:f{CACHE_FORMAT}:u{user_id}:v{version}:{rfc3339(start)}:{rfc3339(end)}"
            rows, hit = load_through(
                self.cache,
                key,
                self.cache_ttl_seconds,
                functools.partial(self._history_at, user_id, version, start, end),
                wait=self.cache_wait_seconds,
            )
            if rows is not None:
                return [_from_json(row) for row in rows], hit
        # notifications kept arriving while the history was read: answer from the database, cache nothing
        return self.history.between(user_id, start, end), False

    def _history_at(
        self, user_id: int, version: int, start: datetime, end: datetime
    ) -> list[dict[str, Any]] | None:
        """The rows of the history at `version`, or None (load_through caches nothing) when a notification was
        committed meanwhile. The version and the rows are two reads: rows read after a newer notification
        may hold it and belong under the newer version's key. A notification and its version bump commit
        together, so an unchanged version after the rows were read proves no notification came in between.
        """
        rows = [_to_json(n) for n in self.history.between(user_id, start, end)]
        return rows if self.history.version(user_id) == version else None


def _to_json(n: Notification) -> dict[str, Any]:
    return {
        "source": n.event.source,
        "event_id": n.event.id,
        "order_id": n.order_id,
        "user_id": n.user_id,
        "status": n.status,
        "message": n.message,
        "created_at": rfc3339(n.created_at),
    }


def _from_json(row: dict[str, Any]) -> Notification:
    return Notification(
        event=EventKey(row["source"], int(row["event_id"])),
        order_id=int(row["order_id"]),
        user_id=int(row["user_id"]),
        status=str(row["status"]),
        message=str(row["message"]),
        created_at=parse_instant(row["created_at"], "created_at"),
    )
