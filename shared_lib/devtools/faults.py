"""The event path under faults, shared by the whole-flow fault tests (tests/e2e/test_faults.py) and `make
chaos` (bench/faults.py): a stream of orders created and paid through loms' HTTP API, and what became of
their status events - at the notifier (lost, duplicated, out of order) and in the Kafka topics.

Nothing here starts the shop or injects a fault; the callers do (a PostgreSQL server stopped, a broker
SIGKILLed, a relay killed) around a running `OrderStream`, then ask `delivery()` for the figures.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared_lib.postgres import ConnectionPool

ORDER_EVENTS = "loms.order-events"
ORDER_EVENTS_DLQ = f"{ORDER_EVENTS}.dlq"
SKU = 139275865  # the seed's largest stock (65,534): every order of a stream reserves one


def _post(url: str, body: Any, timeout: float) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


@dataclass
class OrderStream:
    """Orders created and paid through loms (`loms`: its base URL) by `threads` threads, one order at a time
    each, so each order's three status events (new, awaiting payment, paid) happen in that order.

    `limit` caps how many orders are created (None: no cap); raise it with `allow(n)` to let the stream go
    on. `orders` holds every order created (paid or not), `failures` every refused or failed request.
    """

    loms: str
    user: int
    threads: int = 1
    limit: int | None = None
    timeout: float = 30.0
    orders: list[int] = field(default_factory=list, init=False, repr=False)
    failures: list[str] = field(default_factory=list, init=False)
    _started: int = field(default=0, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)

    @property
    def count(self) -> int:
        """Orders created so far."""
        with self._changed:
            return len(self.orders)

    def allow(self, limit: int | None) -> None:
        with self._changed:
            self.limit = limit
            self._changed.notify_all()

    def _slot(self) -> bool:
        """Wait for leave to create one more order; False once stopped."""
        with self._changed:
            while not self._stop.is_set() and self.limit is not None and self._started >= self.limit:
                self._changed.wait(0.5)
            if self._stop.is_set():
                return False
            self._started += 1
            return True

    def _one(self) -> None:
        created = False
        try:
            status, body = _post(
                f"{self.loms}/order/create",
                {"userId": self.user, "items": [{"sku": SKU, "count": 1}]},
                self.timeout,
            )
            if status != 200:
                self.failures.append(f"create: HTTP {status}")
                return
            order_id = int(body["orderId"])
            with self._changed:
                self.orders.append(order_id)
            created = True
            status, _ = _post(f"{self.loms}/order/pay", {"orderId": order_id}, self.timeout)
            if status != 200:
                self.failures.append(f"pay {order_id}: HTTP {status}")
        except OSError as exc:
            self.failures.append(f"{'pay' if created else 'create'}: {exc!r}")
        finally:
            if not created:
                with self._changed:
                    self._started -= 1  # the slot goes to another try

    def _run(self) -> None:
        while self._slot():
            self._one()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    @contextlib.contextmanager
    def running(self) -> Iterator[OrderStream]:
        """The stream's threads run inside the block; on leaving, the orders under way finish."""
        workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self.stop()
            for worker in workers:
                worker.join(2 * self.timeout + 5)


# --- what became of the orders' status events -------------------------------------------------------------


@dataclass
class Delivery:
    """The notifications of a set of orders against their status events in loms' outbox."""

    orders: int
    expected: int  # status events in loms' outbox
    lost: list[int]  # events without a notification
    duplicated: int  # notifications beyond one per (order, status)
    out_of_order: list[int]  # orders whose notifications do not follow loms' order of their statuses
    misordered_events: int  # events the notifier itself found older than one it had applied

    @property
    def clean(self) -> bool:
        return not self.lost and not self.duplicated and not self.out_of_order and not self.misordered_events

    def summary(self) -> str:
        return (
            f"{self.orders} orders, {self.expected} events: {len(self.lost)} lost, {self.duplicated} "
            f"duplicated, {len(self.out_of_order)} orders out of order, {self.misordered_events} events the "
            "notifier found out of order"
        )


def delivery(loms: Sequence[ConnectionPool], notifier: ConnectionPool, orders: Sequence[int]) -> Delivery:
    """Per order: the statuses of its outbox events (in loms' shards `loms`), in event order, against its
    notifications in the order the notifier recorded them."""
    wanted = list(orders)
    events: dict[int, list[tuple[int, str]]] = {}
    for shard in loms:
        rows = shard.run(
            "SELECT order_id, event_id, status FROM outbox WHERE order_id = ANY(CAST(:o AS bigint[]))",
            o=wanted,
        )
        for order_id, event_id, status in rows:
            events.setdefault(int(order_id), []).append((int(event_id), str(status)))
    notified: dict[int, list[tuple[int, str]]] = {}
    rows = notifier.run(
        "SELECT order_id, event_id, status FROM notifications WHERE order_id = ANY(CAST(:o AS bigint[]))"
        " ORDER BY recorded_at, event_id",
        o=wanted,
    )
    for order_id, event_id, status in rows:
        notified.setdefault(int(order_id), []).append((int(event_id), str(status)))
    misordered = notifier.run(
        "SELECT count(*) FROM processed_events WHERE outcome = 'out_of_order'"
        " AND order_id = ANY(CAST(:o AS bigint[]))",
        o=wanted,
    )
    lost: list[int] = []
    duplicated = 0
    out_of_order: list[int] = []
    for order_id in wanted:
        expected = sorted(events.get(order_id, []))
        got = notified.get(order_id, [])
        seen = {event_id for event_id, _ in got}
        lost += [event_id for event_id, _ in expected if event_id not in seen]
        notified_statuses = [status for _, status in got]
        duplicated += sum(n - 1 for n in Counter(notified_statuses).values())
        first_seen = list(dict.fromkeys(notified_statuses))  # a duplicate counts above, not here
        if first_seen != [status for _, status in expected if status in first_seen]:
            out_of_order.append(order_id)
    return Delivery(
        orders=len(wanted),
        expected=sum(len(events.get(o, [])) for o in wanted),
        lost=sorted(lost),
        duplicated=duplicated,
        out_of_order=out_of_order,
        misordered_events=int(misordered[0][0]),
    )


# --- the topics -------------------------------------------------------------------------------------------


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> the offset after its last record, now."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def records_since(bootstrap: str, topic: str, start: dict[int, int], bound: float = 60.0) -> list[Any]:
    """The records of `topic` from `start` (partition -> offset; 0 where absent) to the end offsets of now,
    read within `bound` seconds."""
    from kafka import KafkaConsumer, TopicPartition

    end = end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    records: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in end]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start.get(tp.partition, 0))
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline and any(
            consumer.position(tp) < end[tp.partition] for tp in partitions
        ):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def records_added(bootstrap: str, topic: str, start: dict[int, int]) -> int:
    """How many records `topic` gained since `start` (partition -> offset; 0 where absent)."""
    end = end_offsets(bootstrap, topic)
    return sum(end[p] - start.get(p, 0) for p in end)


def copies(records: Sequence[Any], orders: Sequence[int]) -> int:
    """Extra copies of the status events of `orders` among loms.order-events `records` (keyed by order id,
    identified by their `ce_id` header): what a relay published again."""
    wanted = {str(order_id).encode() for order_id in orders}
    seen = Counter(dict(r.headers).get("ce_id", b"") for r in records if r.key in wanted)
    return sum(n - 1 for n in seen.values())
