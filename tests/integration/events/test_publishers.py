"""Both event publishers: KafkaPublisher against the real broker, the embedded HttpDeliveryPublisher against
local subscribers. One contract: `publish` returns once everything was delivered, else TransientError."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from shared_lib.devtools.ports import free_port
from shared_lib.errors import TransientError
from shared_lib.events import Event, HttpDeliveryPublisher, KafkaPublisher, from_kafka
from tests.fixtures.kafka import MakeTopic
from tests.integration.events.sink import Answer, Sink, numbered, read_all, serving

pytestmark = pytest.mark.integration


def status_event(n: int, order_id: int = 1) -> Event:
    return Event(
        id=str(n),
        source="/loms/orders",
        type="loms.order.status-changed",
        data=json.dumps({"order_id": order_id, "status": "new", "n": n}).encode(),
        time=datetime(2026, 11, 22, 8, 0, n, tzinfo=UTC),
        key=str(order_id).encode(),
        subject=f"order/{order_id}",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )


def test_kafka_publisher_records_carry_the_event_in_binary_mode(
    kafka_bootstrap: str, fresh_topic: MakeTopic
) -> None:
    topic = fresh_topic(2)
    events = [status_event(n, order_id=7) for n in range(3)]
    publisher = KafkaPublisher(kafka_bootstrap, timeout_seconds=5.0)
    try:
        publisher.publish(topic, events)
    finally:
        publisher.close()

    records = read_all(kafka_bootstrap, topic, expected=3)
    assert len({r.partition for r in records}) == 1  # one key, one partition: its order is kept
    assert [from_kafka(r.headers, r.value, r.key) for r in records] == events


def test_kafka_publisher_fails_transiently_when_the_broker_is_down() -> None:
    publisher = KafkaPublisher(f"127.0.0.1:{free_port()}", timeout_seconds=1.0)
    with pytest.raises(TransientError):  # at its timeout, rather than blocking on a broker that never comes
        publisher.publish("loms.order-events", [status_event(1)])


def test_http_publisher_delivers_each_event_in_order_to_every_subscriber() -> None:
    first, second = Sink(), Sink()
    events = [numbered("orders", 0, n) for n in range(4)]
    with serving(first) as one, serving(second) as two:
        HttpDeliveryPublisher({"orders": [one, two]}).publish("orders", events)
    for sink in (first, second):
        assert sink.accepted == [dataclass_without_key(e) for e in events]


def test_http_publisher_retries_a_failing_subscriber() -> None:
    sink = Sink(lambda e, attempt: Answer(503) if attempt == 1 else Answer())
    with serving(sink) as url:
        HttpDeliveryPublisher({"orders": [url]}, backoff_delay=0.01).publish(
            "orders", [numbered("orders", 0, 1)]
        )
    assert sink.accepted_numbers() == [1]
    assert len(sink.received) == 2


def test_http_publisher_raises_transient_when_delivery_keeps_failing_and_stops_there() -> None:
    sink = Sink(lambda e, _a: Answer(500) if e.json()["n"] == 1 else Answer())
    events = [numbered("orders", 0, n) for n in range(3)]
    with serving(sink) as url:
        publisher = HttpDeliveryPublisher({"orders": [url]}, retries=2, backoff_delay=0.01)
        with pytest.raises(TransientError, match="HTTP 500 after 3 attempts"):
            publisher.publish("orders", events)
    assert sink.accepted_numbers() == [0]  # nothing after the failure: order is kept for the next try


def dataclass_without_key(event: Event) -> Event:
    return dataclasses.replace(event, key=None)  # the key is Kafka's; HTTP delivery has none
