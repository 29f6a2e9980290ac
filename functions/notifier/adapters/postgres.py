"""Notifications in PostgreSQL (sql/notifier): the exactly-once claim, per-order ordering, history versions.

The only module of the notifier that speaks SQL. Locks are always taken in one order (the order's progress
row, then the user's version row), so concurrent events wait for each other but never deadlock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from functions.notifier.domain import EventKey, Notification, Outcome, StatusChange
from shared_lib.postgres import ConnectionPool

_COLUMNS = "event_source, event_id, order_id, user_id, status, message, created_at"


def _notification(row: list[Any]) -> Notification:
    source, event_id, order_id, user_id, status, message, created_at = row
    return Notification(
        event=EventKey(source, int(event_id)),
        order_id=int(order_id),
        user_id=int(user_id),
        status=status,
        message=message,
        created_at=created_at,
    )


class PgNotificationStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def record(self, change: StatusChange, notification: Notification) -> Outcome:
        event = change.event
        with self.pool.transaction() as conn:
            # the order's row lock first: events of one order (and duplicates of one event) take turns here
            conn.run(
                "INSERT INTO order_progress (order_id, last_event_id) VALUES (:o, 0) ON CONFLICT DO NOTHING",
                o=change.order_id,
            )
            last = conn.run(
                "SELECT last_event_id FROM order_progress WHERE order_id = :o FOR UPDATE", o=change.order_id
            )[0][0]
            outcome = Outcome.OUT_OF_ORDER if event.id < int(last) else Outcome.NOTIFIED
            claimed = conn.run(
                "INSERT INTO processed_events (event_source, event_id, order_id, outcome)"
                " VALUES (:s, :e, :o, :outcome) ON CONFLICT DO NOTHING RETURNING 1",
                s=event.source,
                e=event.id,
                o=change.order_id,
                outcome=outcome.value,
            )
            if not claimed:
                return Outcome.DUPLICATE
            if outcome is Outcome.OUT_OF_ORDER:
                return outcome
            conn.run(
                "UPDATE order_progress SET last_event_id = :e WHERE order_id = :o",
                e=event.id,
                o=change.order_id,
            )
            conn.run(
                f"INSERT INTO notifications ({_COLUMNS}) VALUES (:s, :e, :o, :u, :status, :message, :at)",
                s=event.source,
                e=event.id,
                o=notification.order_id,
                u=notification.user_id,
                status=notification.status,
                message=notification.message,
                at=notification.created_at,
            )
            conn.run(
                "INSERT INTO history_versions (user_id, version) VALUES (:u, 1)"
                " ON CONFLICT (user_id) DO UPDATE SET version = history_versions.version + 1",
                u=notification.user_id,
            )
            return outcome

    def deliver_once(self, event: EventKey, deliver: Callable[[Notification], str | None]) -> bool:
        # The row stays locked while the sink is called: a concurrent duplicate skips it (SKIP LOCKED) instead
        # of delivering twice. If this process dies, the lock goes with its connection and the event, never
        # acknowledged, comes again.
        with self.pool.transaction() as conn:
            rows = conn.run(
                f"SELECT {_COLUMNS} FROM notifications"
                " WHERE event_source = :s AND event_id = :e AND delivered_at IS NULL FOR UPDATE SKIP LOCKED",
                s=event.source,
                e=event.id,
            )
            if not rows:
                return False
            refusal = deliver(_notification(rows[0]))
            conn.run(
                "UPDATE notifications SET delivered_at = now(), delivery_error = :r"
                " WHERE event_source = :s AND event_id = :e",
                r=refusal,
                s=event.source,
                e=event.id,
            )
            return True


class PgNotificationHistory:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def version(self, user_id: int) -> int:
        rows = self.pool.run("SELECT version FROM history_versions WHERE user_id = :u", u=user_id)
        return int(rows[0][0]) if rows else 0

    def between(self, user_id: int, start: datetime, end: datetime) -> list[Notification]:
        rows = self.pool.run(
            f"SELECT {_COLUMNS} FROM notifications"
            " WHERE user_id = :u AND created_at >= :a AND created_at <= :b ORDER BY created_at, event_id",
            u=user_id,
            a=start,
            b=end,
        )
        return [_notification(row) for row in rows]
