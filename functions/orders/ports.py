"""What the order viewer's service needs from the outside world: small protocols, no implementations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from functions.orders.domain import DeadLetter, EncodedOrder, Order, OrderSummary, StoreResult


class OrderRepository(Protocol):
    def store(self, orders: Sequence[EncodedOrder]) -> StoreResult:
        """Store every order whose uid is new, in one transaction; an order with a stored uid changes nothing.
        Each order comes with its canonical JSON and fingerprint (stored with it), encoded once by the caller.

        The result names the uids inserted now and, for every uid of `orders`, the fingerprint stored under it
        (so the caller tells a redelivery from a conflict). Raises OrderRejectedError when the database
        refused the batch for good (a constraint: retrying the same batch cannot help), TransientError when
        it is unavailable. `orders` holds distinct uids.
        """
        ...

    def get(self, order_uid: str) -> Order | None: ...

    def recent(self, limit: int) -> list[OrderSummary]:
        """The most recently ingested orders, newest first."""
        ...

    def count(self, order_uids: Sequence[str]) -> int:
        """How many of these uids are stored."""
        ...


class DeadLetters(Protocol):
    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Publish each record's original bytes to the dead-letter topic with its reason and source offset;
        returns once all are acknowledged. Raises TransientError (none may be taken as sent)."""
        ...


class Counters(Protocol):
    def increment(self, name: str, by: int = 1) -> None: ...
