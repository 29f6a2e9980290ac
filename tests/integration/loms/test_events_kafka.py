"""loms's status events through the relay to a real Kafka broker, read back from the topic: the sequence,
keys and CloudEvents headers of each kind of order; the broker stopped and restarted under 1,000 changes;
a relay killed between send and mark; several relays at once over two shards.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from functions.loms.domain import InsufficientStockError, Item
from functions.loms.service import EVENT_SOURCE, EVENT_TYPE, ORDER_EVENTS_TOPIC
from shared_lib.devtools.kafka_server import topic_size
from shared_lib.errors import TransientError
from shared_lib.events import Event, KafkaPublisher, PartialPublishError
from tests.fixtures.kafka import MakeTopic, read_records
from tests.integration.loms.conftest import MakeShards, PgLoms, relays_running
from tests.polling import wait_for

pytestmark = pytest.mark.integration
UniqueId = Callable[[], int]
N, A, F, P, C = "new", "awaiting payment", "failed", "paid", "cancelled"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: str
    value: dict[str, Any]
    headers: dict[str, str]

    @property
    def ce_id(self) -> int:
        return int(self.headers["ce_id"])


def read_topic(
    bootstrap: str, topic: str, done: Callable[[list[Record]], bool], timeout: float = 30
) -> list[Record]:
    """Every record of `topic` from the beginning, polled until `done(records)` or the timeout."""
    records = read_records(bootstrap, topic, done, timeout, convert=_record)
    return sorted(records, key=lambda r: (r.partition, r.offset))


def _record(r: Any) -> Record:
    headers = {name: raw.decode() for name, raw in r.headers}
    return Record(r.partition, r.offset, r.key.decode(), json.loads(r.value), headers)


def distinct_ids(records: list[Record]) -> set[int]:
    return {r.ce_id for r in records}


def assert_each_order_in_order(records: list[Record]) -> dict[int, list[str]]:
    """Per order, the first occurrence of each event in offset order: ascending ids, a legal sequence, one
    partition. Returns the statuses per order."""
    seen: set[int] = set()
    orders: dict[int, list[Record]] = {}
    for record in records:  # sorted by partition, then offset
        if record.ce_id not in seen:
            seen.add(record.ce_id)
            orders.setdefault(int(record.key), []).append(record)
    statuses = {}
    for order_id, changes in orders.items():
        assert len({r.partition for r in changes}) == 1, order_id
        assert [r.ce_id for r in changes] == sorted(r.ce_id for r in changes), order_id
        statuses[order_id] = [r.value["status"] for r in changes]
        assert statuses[order_id] in ([N, A], [N, F], [N, A, P], [N, A, C], [N, C]), (order_id, statuses)
    return statuses


@pytest.fixture
def publishers(kafka_bootstrap: str) -> Iterator[Callable[[], KafkaPublisher]]:
    made: list[KafkaPublisher] = []

    def make() -> KafkaPublisher:
        made.append(KafkaPublisher(kafka_bootstrap, client_id="loms-test", timeout_seconds=3))
        return made[-1]

    yield make
    for publisher in made:
        publisher.close()


def test_the_events_of_created_failed_paid_cancelled_and_swept_orders(
    make_shards: MakeShards,
    unique_id: UniqueId,
    kafka_bootstrap: str,
    publishers: Callable[[], KafkaPublisher],
) -> None:
    loms, sku, scarce = PgLoms(make_shards(2)), unique_id(), unique_id()
    loms.put_stock(sku, 100)
    loms.put_stock(scarce, 1)
    expected: dict[int, list[str]] = {}
    users: dict[int, int] = {}
    for shard in (0, 1):
        user = unique_id() * 2 + shard
        awaiting = loms.service.create_order(user, [Item(sku, 1)])
        paid = loms.service.create_order(user, [Item(sku, 1)])
        loms.service.pay_order(paid)
        cancelled = loms.service.create_order(user, [Item(sku, 1)])
        loms.service.cancel_order(cancelled)
        with pytest.raises(InsufficientStockError) as refused:
            loms.service.create_order(user, [Item(scarce, 5)])
        assert refused.value.order_id is not None
        swept = loms.service.create_order(user, [Item(sku, 2)])
        loms.backdate(swept, 3600)
        expected |= {awaiting: [N, A], paid: [N, A, P], cancelled: [N, A, C], refused.value.order_id: [N, F]}
        expected[swept] = [N, A, C]
        users |= {o: user for o in (awaiting, paid, cancelled, refused.value.order_id, swept)}
    assert loms.sweeper().run().cancelled == 2
    traced = next(iter(expected))
    loms.shards.primaries[traced % 2].run(
        "UPDATE outbox SET traceparent = :t WHERE order_id = :o", t=TRACEPARENT, o=traced
    )
    relay = loms.relay(publishers())  # the default topic, shared: read back only this test's orders
    try:
        assert relay.drain() == sum(len(s) for s in expected.values())
    finally:
        relay.close()
    ours = sum(len(s) for s in expected.values())
    mine = set(users.values())  # order ids repeat across the tests' fresh databases; user ids do not

    def is_ours(record: Record) -> bool:
        return record.value["user_id"] in mine

    records = [
        r
        for r in read_topic(kafka_bootstrap, ORDER_EVENTS_TOPIC, lambda rs: sum(map(is_ours, rs)) >= ours)
        if is_ours(r)
    ]
    assert len(records) == ours and len(distinct_ids(records)) == ours
    assert assert_each_order_in_order(records) == expected
    rows = {
        int(e): (int(o), m)
        for pool in loms.shards.primaries
        for e, o, m in pool.run("SELECT event_id, order_id, moment FROM outbox")
    }
    for record in records:
        order_id, moment = rows[record.ce_id]
        assert record.key == str(order_id)
        assert set(record.value) == {"order_id", "user_id", "status", "moment"}
        assert (record.value["order_id"], record.value["user_id"]) == (order_id, users[order_id])
        assert record.value["moment"].endswith("Z")
        assert datetime.fromisoformat(record.value["moment"]) == moment
        assert record.headers["ce_specversion"] == "1.0"
        assert (record.headers["ce_source"], record.headers["ce_type"]) == (EVENT_SOURCE, EVENT_TYPE)
        assert record.headers["ce_time"] == record.value["moment"]
        assert record.headers["content-type"] == "application/json"
        assert record.headers.get("traceparent") == (TRACEPARENT if order_id == traced else None)
    assert loms.unsent() == 0


class FailureLog:
    """Delegates, and remembers the event ids of every batch whose publish failed: the broker may have
    stored part of such a batch (one partition acknowledged, the other not) before the relay gave up on it."""

    def __init__(self, inner: KafkaPublisher) -> None:
        self.inner = inner
        self.failed: set[int] = set()
        self.failures = 0

    def publish(self, topic: str, events: Sequence[Event]) -> None:
        try:
            self.inner.publish(topic, events)
        except TransientError:
            self.failed.update(int(e.id) for e in events)
            self.failures += 1
            raise


class DiesAfterPublishing:
    """Delegates, then raises as if the process died before it could mark the batch sent."""

    def __init__(self, inner: KafkaPublisher, batches: int) -> None:
        self.inner = inner
        self.batches = batches

    def publish(self, topic: str, events: Sequence[Event]) -> None:
        self.inner.publish(topic, events)
        if self.batches:
            self.batches -= 1
            raise TransientError("killed after the broker acknowledged")


def test_a_relay_killed_between_send_and_mark_loses_nothing(
    make_shards: MakeShards,
    unique_id: UniqueId,
    kafka_bootstrap: str,
    fresh_topic: MakeTopic,
    publishers: Callable[[], KafkaPublisher],
) -> None:
    loms, sku, topic = PgLoms(make_shards(2)), unique_id(), fresh_topic(2)
    loms.put_stock(sku, 1000)
    for i in range(60):
        order_id = loms.service.create_order(unique_id() * 2 + i % 2, [Item(sku, 1)])
        (loms.service.pay_order if i % 2 else loms.service.cancel_order)(order_id)
    rows = loms.outbox_ids()
    dying = loms.relay(DiesAfterPublishing(publishers(), batches=2), batch_size=25, topic=topic)
    try:
        with pytest.raises(TransientError):
            dying.drain()  # each shard's first batch is on the topic, unmarked
    finally:
        dying.close()
    assert loms.unsent() == len(rows)
    heir = loms.relay(publishers(), batch_size=25, topic=topic)
    try:
        assert heir.drain() == len(rows)
    finally:
        heir.close()
    records = read_topic(kafka_bootstrap, topic, lambda rs: len(rs) >= len(rows) + 50)
    assert distinct_ids(records) == set(rows)
    copies = Counter(r.ce_id for r in records)
    assert len(records) == len(rows) + 50 and set(copies.values()) == {1, 2}  # the two killed batches again
    assert_each_order_in_order(records)
    assert loms.unsent() == 0


def test_several_relays_at_once_on_two_shards(
    make_shards: MakeShards,
    unique_id: UniqueId,
    kafka_bootstrap: str,
    fresh_topic: MakeTopic,
    publishers: Callable[[], KafkaPublisher],
) -> None:
    loms, sku, topic = PgLoms(make_shards(2)), unique_id(), fresh_topic(2)
    loms.put_stock(sku, 10_000)
    relays = [loms.relay(publishers(), batch_size=20, poll_seconds=0.1, topic=topic) for _ in range(3)]
    with relays_running(relays):

        def shop(i: int) -> None:
            order_id = loms.service.create_order(unique_id() * 2 + i % 2, [Item(sku, 1)])
            (loms.service.pay_order if i % 3 else loms.service.cancel_order)(order_id)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(shop, range(150)))
        records = read_topic(kafka_bootstrap, topic, lambda rs: len(rs) >= 450)
    assert distinct_ids(records) == set(loms.outbox_ids())
    assert len(records) == 450  # one relay per shard at a time: not even a duplicate
    assert_each_order_in_order(records)


def test_kafka_stopped_and_restarted_in_the_middle_of_a_thousand_changes(
    make_shards: MakeShards,
    unique_id: UniqueId,
    kafka_server: Any,
    fresh_topic: MakeTopic,
    publishers: Callable[[], KafkaPublisher],
) -> None:
    loms, sku, topic = PgLoms(make_shards(2)), unique_id(), fresh_topic(2)
    loms.put_stock(sku, 10_000)
    log = FailureLog(publishers())
    relay = loms.relay(log, batch_size=50, poll_seconds=0.2, topic=topic)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run_until, args=(stop,))
    thread.start()
    orders: list[int] = []

    def shop(i: int) -> None:  # three changes per order: new, awaiting payment, then paid or cancelled
        order_id = loms.service.create_order(unique_id() * 2 + i % 2, [Item(sku, 1)])
        (loms.service.pay_order if i % 2 else loms.service.cancel_order)(order_id)
        orders.append(order_id)

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(shop, range(110)))
            kafka_server.stop()
            try:
                list(pool.map(shop, range(110, 230)))  # every order operation still succeeds
                stuck = loms.unsent()
                assert stuck > 0
                # the outage lasts until the relay has failed a publish (its producer may first wait out
                # its metadata timeout): the orders above can be done sooner than that
                wait_for(lambda: log.failures, timeout=60, what="a publish failing while Kafka is down")
            finally:
                kafka_server.start()
            list(pool.map(shop, range(230, 334)))
        deadline = time.monotonic() + 90
        while loms.unsent() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert loms.unsent() == 0
    finally:
        stop.set()
        thread.join(timeout=15)
        relay.close()
    rows = loms.outbox_ids()
    assert len(rows) == 334 * 3 == 1002
    records = read_topic(kafka_server.bootstrap, topic, lambda rs: len(distinct_ids(rs)) >= len(rows))
    assert distinct_ids(records) == set(rows)  # nothing lost
    assert log.failures > 0  # the relay did try while the broker was away
    # A duplicate comes only from a batch whose publish failed after the broker had stored part of it (the
    # publisher is all-or-nothing, the broker acknowledges per partition); never from anything else.
    duplicated = {ce_id for ce_id, n in Counter(r.ce_id for r in records).items() if n > 1}
    assert duplicated <= log.failed
    assert len(records) - len(rows) == sum(n - 1 for n in Counter(r.ce_id for r in records).values())
    statuses = assert_each_order_in_order(records)
    assert len(statuses) == 334 and {len(s) for s in statuses.values()} == {3}


class _KillsTheBrokerAt(Sequence[Event]):
    """A batch that, while the publisher walks it, waits at event `at` until the broker has stored every
    event before it, then SIGKILLs the broker: the rest of the batch is sent to a dead broker."""

    def __init__(self, events: Sequence[Event], at: int, server: Any, topic: str) -> None:
        self.events, self.at, self.server, self.topic = events, at, server, topic
        self.killed = False

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: Any) -> Any:
        return self.events[index]

    def __iter__(self) -> Iterator[Event]:
        for index, event in enumerate(self.events):
            if index == self.at and not self.killed:
                wait_for(lambda: topic_size(self.server.bootstrap, self.topic) >= self.at, timeout=60)
                self.server.kill()
                self.killed = True
            yield event


class KillsTheBrokerMidBatch:
    """Publishes its first batch through a broker SIGKILLed once `at` of the batch's events were stored."""

    def __init__(self, inner: KafkaPublisher, at: int, server: Any) -> None:
        self.inner, self.at, self.server = inner, at, server
        self.partial: list[PartialPublishError] = []
        self.batches = 0

    def publish(self, topic: str, events: Sequence[Event]) -> None:
        self.batches += 1
        if self.batches == 1:
            events = _KillsTheBrokerAt(events, self.at, self.server, topic)
        try:
            self.inner.publish(topic, events)
        except PartialPublishError as exc:
            self.partial.append(exc)
            raise


def test_a_broker_killed_mid_batch_leaves_no_duplicate_in_the_topic(
    make_shards: MakeShards,
    unique_id: UniqueId,
    kafka_server: Any,
    fresh_topic: MakeTopic,
) -> None:
    """The relay marks what the broker acknowledged before it died; the rest goes again, and only the rest."""
    loms, sku, topic = PgLoms(make_shards(1)), unique_id(), fresh_topic(2)
    loms.put_stock(sku, 10_000)
    for i in range(300):
        order_id = loms.service.create_order(unique_id(), [Item(sku, 1)])
        if i % 3 == 0:
            loms.service.pay_order(order_id)
    rows = loms.outbox_ids()
    assert len(rows) == 700
    publisher = KafkaPublisher(kafka_server.bootstrap, client_id="loms-test", timeout_seconds=1.5)
    killing = KillsTheBrokerMidBatch(publisher, at=250, server=kafka_server)
    relay = loms.relay(killing, batch_size=1000, topic=topic)
    try:
        try:
            with pytest.raises(TransientError):
                relay.drain()  # the broker stays down past the publisher's delivery timeout
        finally:
            kafka_server.start()
        failure = killing.partial[0]
        assert len(failure.acknowledged) >= 250  # what the broker stored before it died was acknowledged
        marked = len(rows) - loms.unsent()
        assert 250 <= marked <= len(failure.acknowledged)  # per order, the acknowledged prefix
        assert relay.drain() == len(rows) - marked
    finally:
        relay.close()
        publisher.close()
    records = read_topic(kafka_server.bootstrap, topic, lambda rs: len(distinct_ids(rs)) >= len(rows))
    assert distinct_ids(records) == set(rows)  # nothing lost
    copies = Counter(r.ce_id for r in records)
    assert [ce_id for ce_id, n in copies.items() if n > 1] == []  # and nothing twice
    assert_each_order_in_order(records)
    assert loms.unsent() == 0
