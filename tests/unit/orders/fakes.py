"""Stateful in-memory stand-ins for the order viewer's ports, records to feed it, and a service on them.

The same behavioural suite runs InMemoryOrders and PgOrderRepository (tests/integration/orders/
test_repository.py), so they agree.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from functions.orders import bootstrap as composition
from functions.orders.domain import (
    DeadLetter,
    EncodedOrder,
    Order,
    OrderRejectedError,
    OrderSummary,
    SourceRecord,
    StoreResult,
)
from functions.orders.service import OrdersService
from functions.orders.settings import OrdersSettings
from shared_lib.cache import InProcessCache
from shared_lib.counters import InProcessCounters
from shared_lib.errors import TransientError

SAMPLE_PATH = Path(__file__).resolve().parents[3] / "functions" / "orders" / "data" / "wb-order-sample.json"
SAMPLE_BYTES = SAMPLE_PATH.read_bytes()
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def sample(**changes: Any) -> dict[str, Any]:
    """The sample order as a dict; `changes` replace top-level fields."""
    order: dict[str, Any] = json.loads(SAMPLE_BYTES)
    order.update(copy.deepcopy(changes))
    return order


def record(value: Any, offset: int = 0, partition: int = 0, key: bytes | None = None) -> SourceRecord:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return SourceRecord(value=data, key=key, topic="orders", partition=partition, offset=offset)


class InMemoryOrders:
    """Orders in a dict; `refuse` holds uids the "database" refuses (as a constraint would)."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.ingested: list[str] = []
        self.refuse: set[str] = set()
        self.down = False
        self.reads = 0
        self.batches: list[int] = []  # the size of every store() call
        self._lock = threading.Lock()

    def store(self, orders: Sequence[EncodedOrder]) -> StoreResult:
        if self.down:
            raise TransientError("the database is unavailable")
        self.batches.append(len(orders))
        if any(o.order_uid in self.refuse for o in orders):
            raise OrderRejectedError("invalid: the database refused the order (SQLSTATE 23514)")
        with self._lock:
            inserted = frozenset(o.order_uid for o in orders if o.order_uid not in self.orders)
            for encoded in orders:
                assert encoded == EncodedOrder.of(encoded.order)  # the caller's encoding is the order's
                if encoded.order_uid in inserted:
                    self.orders[encoded.order_uid] = encoded.order
                    self.ingested.append(encoded.order_uid)
            return StoreResult(inserted, {o.order_uid: self.orders[o.order_uid].fingerprint for o in orders})

    def get(self, order_uid: str) -> Order | None:
        if self.down:
            raise TransientError("the database is unavailable")
        self.reads += 1
        return self.orders.get(order_uid)

    def recent(self, limit: int) -> list[OrderSummary]:
        if self.down:
            raise TransientError("the database is unavailable")
        newest = list(reversed(self.ingested))[:limit]
        return [
            OrderSummary(
                uid,
                self.orders[uid].date_created,
                self.orders[uid].payment.amount,
                self.orders[uid].payment.currency,
                len(self.orders[uid].items),
            )
            for uid in newest
        ]

    def count(self, order_uids: Sequence[str]) -> int:
        return sum(uid in self.orders for uid in set(order_uids))


@dataclass
class RecordingDeadLetters:
    letters: list[DeadLetter] = field(default_factory=list)
    down: bool = False

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if self.down and letters:
            raise TransientError("publishing dead letters failed")
        self.letters.extend(letters)

    def reasons(self) -> list[str]:
        return [letter.reason for letter in self.letters]


@dataclass
class Viewer:
    """A service wired to fakes, with the fakes at hand."""

    orders: InMemoryOrders = field(default_factory=InMemoryOrders)
    dead_letters: RecordingDeadLetters = field(default_factory=RecordingDeadLetters)
    cache: InProcessCache = field(default_factory=InProcessCache)
    counters: InProcessCounters = field(default_factory=InProcessCounters)
    warm_cache: bool = True
    local: InProcessCache | None = None  # the service's tier in this process, in front of `cache`

    @property
    def service(self) -> OrdersService:
        return OrdersService(
            orders=self.orders,
            dead_letters=self.dead_letters,
            cache=self.cache,
            counters=self.counters,
            warm_cache=self.warm_cache,
            clock=lambda: NOW,
            local=self.local,
        )

    def bootstrap(self) -> composition.Root:
        """The order viewer's composition root on these fakes, made the one its handlers use (`reset()`
        after); the page fetches orders from its own origin."""
        return composition.bootstrap(
            OrdersSettings(warm_cache=self.warm_cache, api_url=""),
            orders=self.orders,
            dead_letters=self.dead_letters,
            cache=self.cache,
            counters=self.counters,
            clock=lambda: NOW,
            local_cache=self.local,
        )
