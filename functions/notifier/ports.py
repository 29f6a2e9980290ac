"""What the notifier service needs from the outside world: small protocols, no implementations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from functions.notifier.domain import EventKey, Notification, Outcome, StatusChange


class NotificationStore(Protocol):
    def record(self, change: StatusChange, notification: Notification) -> Outcome:
        """Claim the event and apply it, in one transaction.

        DUPLICATE: the event was claimed before, nothing changes. OUT_OF_ORDER: an event of the same order
        with a higher id was applied already; the claim is recorded, no notification. NOTIFIED: the
        notification is stored (undelivered) and the user's history version goes up, so cached histories
        go stale at once.
        """
        ...

    def deliver_once(self, event: EventKey, deliver: Callable[[Notification], str | None]) -> bool:
        """Run `deliver` on the event's notification unless it was delivered or another delivery of it is
        under way; then mark it delivered (`deliver` returned None) or refused (it returned the reason).

        An error from `deliver` leaves it undelivered and propagates. True when `deliver` ran.
        """
        ...


class NotificationHistory(Protocol):
    def version(self, user_id: int) -> int: ...  # goes up with every notification of the user; 0: none yet

    def between(self, user_id: int, start: datetime, end: datetime) -> list[Notification]:
        """The user's notifications created from `start` to `end` (both included), ascending by time."""
        ...


class NotificationSink(Protocol):
    def deliver(self, notification: Notification) -> None:
        """Raises TransientError (try again later) or DeliveryRefusedError (never)."""
        ...


class Counters(Protocol):
    def increment(self, name: str) -> None: ...
