"""CloudEvents binary mode on Kafka records and HTTP, KafkaSource's wrapping of plain records, dead-letter
headers, and the HTTP sender's retry policy (against a closed local port: no server needed)."""

from __future__ import annotations

import dataclasses
import socket
import threading
from datetime import UTC, datetime

import pytest

from shared_lib.errors import TransientError
from shared_lib.events import (
    DeliveryOutcome,
    Event,
    HttpDeliveryPublisher,
    HttpEventSender,
    MalformedEventError,
    from_http,
    from_kafka,
    http_headers,
    kafka_headers,
)
from shared_lib.eventsource import KAFKA_EVENT_TYPE, dead_letter_headers, event_of

EVENT = Event(
    id="17",
    source="/loms/orders",
    type="loms.order.status-changed",
    data=b'{"order_id": 1, "status": "new"}',
    time=datetime(2026, 11, 22, 8, 0, tzinfo=UTC),
    key=b"1",
    subject="order/1",
    traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_event_survives_a_kafka_record_round_trip() -> None:
    assert from_kafka(kafka_headers(EVENT), EVENT.data, EVENT.key) == EVENT


def test_an_event_survives_an_http_round_trip_except_its_key() -> None:
    got = from_http(http_headers(EVENT), EVENT.data)
    assert got == dataclasses.replace(EVENT, key=None)


def test_a_record_without_cloudevent_headers_is_malformed_for_from_kafka() -> None:
    with pytest.raises(MalformedEventError):
        from_kafka([("content-type", b"application/json")], b"{}", None)


def test_a_cloudevent_record_is_delivered_as_it_is() -> None:
    assert event_of("loms.order-events", 1, 41, EVENT.key, EVENT.data, kafka_headers(EVENT)) == EVENT


def test_a_plain_record_is_wrapped_as_kafkasource_does() -> None:
    moment = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    event = event_of(
        "orders", 1, 41, b"k", b'{"a": 1}', [("traceparent", b"00-ab-cd-01")], int(moment.timestamp() * 1000)
    )
    assert (event.id, event.source, event.type) == (
        "partition:1/offset:41",
        "/kafka/orders",
        KAFKA_EVENT_TYPE,
    )
    assert event.data == b'{"a": 1}' and event.key == b"k"
    assert event.time == moment
    assert event.traceparent == "00-ab-cd-01"
    assert event.subject == "partition:1#41"


def test_dead_letter_headers_keep_the_original_ones_and_replace_earlier_annotations() -> None:
    original = [*kafka_headers(EVENT), ("reason", b"an older failure"), ("source_offset", b"3")]
    headers = dead_letter_headers(original, "HTTP 500 after 6 attempts", "orders", 1, 41)
    assert headers[: len(kafka_headers(EVENT))] == kafka_headers(EVENT)
    annotations = dict(headers[len(kafka_headers(EVENT)) :])
    assert annotations == {
        "reason": b"HTTP 500 after 6 attempts",
        "source_topic": b"orders",
        "source_partition": b"1",
        "source_offset": b"41",
    }


def test_an_outcome_describes_itself_for_the_reason_header() -> None:
    assert DeliveryOutcome(False, 6, "HTTP 500").describe() == "HTTP 500 after 6 attempts"
    assert DeliveryOutcome(False, 1, "timed out").describe() == "timed out after 1 attempt"


def test_backoff_is_exponential_from_the_delay_and_capped() -> None:
    sender = HttpEventSender(retries=5, backoff_delay=0.2, backoff_max=1.0)
    assert [sender.backoff.delay(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_an_unreachable_sink_is_tried_once_plus_the_retries() -> None:
    sender = HttpEventSender(retries=2, backoff_delay=0.001, timeout_seconds=1.0)
    outcome = sender.send(f"http://127.0.0.1:{closed_port()}/", EVENT)
    assert outcome == DeliveryOutcome(False, 3, "unreachable")


def test_a_cancelled_delivery_stops_waiting_between_attempts() -> None:
    sender = HttpEventSender(retries=5, backoff_delay=1000.0, backoff_max=1000.0, timeout_seconds=1.0)
    cancel = threading.Event()
    cancel.set()
    outcome = sender.send(f"http://127.0.0.1:{closed_port()}/", EVENT, cancel)  # 1000 s pauses, never waited
    assert outcome.cancelled and not outcome.delivered and outcome.attempts == 1


def test_the_http_publisher_raises_transient_when_a_subscriber_stays_unreachable() -> None:
    publisher = HttpDeliveryPublisher(
        {"orders": [f"http://127.0.0.1:{closed_port()}/"]},
        retries=1,
        timeout_seconds=1.0,
        backoff_delay=0.001,
    )
    with pytest.raises(TransientError, match="unreachable after 2 attempts"):
        publisher.publish("orders", [EVENT])


def test_the_http_publisher_has_nothing_to_do_for_a_topic_without_subscribers() -> None:
    HttpDeliveryPublisher({"orders": ["http://127.0.0.1:1/"]}).publish("elsewhere", [EVENT])
