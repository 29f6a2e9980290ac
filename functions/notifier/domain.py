"""The notifier's domain: order status changes, the notifications they make, and the notifier's errors.

No I/O here. Instants cross the edges as RFC 3339 text and live here as timezone-aware datetimes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from shared_lib.errors import DomainError, InvalidInputError, ShopError

_MESSAGES = {
    "new": "Order {order} was created",
    "awaiting payment": "Order {order} is reserved and awaiting payment",
    "failed": "Order {order} could not be placed: there was not enough stock",
    "paid": "Order {order} is paid",
    "cancelled": "Order {order} was cancelled",
}

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,30})?([Zz]|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True, slots=True, order=True)
class EventKey:
    """A CloudEvent's identity: its id (loms' outbox row id) within its source."""

    source: str
    id: int

    @property
    def dedupe_key(self) -> str:
        """What a sink is told to deduplicate on: the same for every delivery of this event."""
        return str(self.id)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One `loms.order-events` event: an order entered `status` at `moment`."""

    event: EventKey
    order_id: int
    user_id: int
    status: str
    moment: datetime


@dataclass(frozen=True, slots=True)
class Notification:
    event: EventKey
    order_id: int
    user_id: int
    status: str
    message: str
    created_at: datetime  # when the status changed (the event's moment): the history's time


class Outcome(enum.Enum):
    NOTIFIED = "notified"  # applied: a notification was recorded
    DUPLICATE = "duplicate"  # this event was claimed before: nothing changed
    OUT_OF_ORDER = "out_of_order"  # older than an event already applied for its order: recorded, not notified


def message_for(order_id: int, status: str) -> str:
    return _MESSAGES[status].format(order=order_id)


def notification_for(change: StatusChange) -> Notification:
    return Notification(
        event=change.event,
        order_id=change.order_id,
        user_id=change.user_id,
        status=change.status,
        message=message_for(change.order_id, change.status),
        created_at=change.moment,
    )


def parse_instant(text: str, name: str) -> datetime:
    """An RFC 3339 date-time with an offset (`2026-01-01T00:00:00Z`), else InvalidInputError naming it."""
    if not _RFC3339.match(text):
        raise InvalidInputError(f"{name} must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z")
    try:  # fractions beyond microseconds are dropped; an offset that leaves years 1-9999 is out of range
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInputError(f"{name} is not a valid date-time") from None


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class InvalidPeriodError(InvalidInputError):
    def __init__(self) -> None:
        super().__init__("from must not be after to")


class PoisonEventError(ShopError):
    """An event that can never be handled (not a CloudEvent, not JSON, bad fields): counted, acknowledged."""


class DeliveryRefusedError(DomainError):
    """The sink answered that it will never take this notification; retrying cannot help."""
