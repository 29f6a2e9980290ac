"""CloudEvents binary mode on Kafka records and HTTP, KafkaSource's wrapping of plain records, dead-letter
headers, and the HTTP sender's retry policy (against a closed local port: no server needed)."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from datetime import UTC, datetime

import cloudevents.http
import pytest

from shared_lib import deadletters
from shared_lib.devtools.ports import free_port
from shared_lib.errors import TransientError
from shared_lib.events import (
    DeliveryOutcome,
    Event,
    HttpDeliveryPublisher,
    HttpEventSender,
    MalformedEventError,
    from_kafka,
    http_request,
    kafka_message,
)
from shared_lib.eventsource import KAFKA_EVENT_TYPE, event_of

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


def kafka_headers(event: Event) -> list[tuple[str, bytes]]:
    """The headers of `event`'s binary-mode Kafka record, as kafka-python takes them."""
    return list(kafka_message(event).headers.items())


def closed_port() -> int:
    """A port nothing listens on, below the ephemeral range: a client cannot connect to itself there."""
    return free_port()


def test_an_event_survives_a_kafka_record_round_trip() -> None:
    assert from_kafka(kafka_headers(EVENT), EVENT.data, EVENT.key) == EVENT


def test_a_record_without_cloudevent_headers_is_malformed_for_from_kafka() -> None:
    with pytest.raises(MalformedEventError):
        from_kafka([("content-type", b"application/json")], b"{}", None)


def test_the_record_carries_the_headers_its_consumers_read() -> None:
    assert EVENT.traceparent is not None
    assert dict(kafka_headers(EVENT)) == {
        "ce_specversion": b"1.0",
        "ce_id": b"17",
        "ce_source": b"/loms/orders",
        "ce_type": b"loms.order.status-changed",
        "ce_time": b"2026-11-22T08:00:00Z",
        "ce_subject": b"order/1",
        "content-type": b"application/json",
        "traceparent": EVENT.traceparent.encode(),
    }
    assert len(kafka_headers(EVENT)) == 8  # each once
    message = kafka_message(EVENT)
    assert (message.key, message.value) == (EVENT.key, EVENT.data)  # the bytes as they are, the order's key


def test_the_http_delivery_is_what_the_sdk_and_functions_framework_read() -> None:
    headers, body = http_request(EVENT)
    assert headers["traceparent"] == EVENT.traceparent  # the W3C header, not a ce- attribute
    assert "ce-key" not in headers and "ce-partitionkey" not in headers
    read = cloudevents.http.from_http(headers, body)  # as functions-framework reads it
    assert (read["id"], read["source"], read["type"], read["subject"], read["time"]) == (
        "17",
        "/loms/orders",
        "loms.order.status-changed",
        "order/1",
        "2026-11-22T08:00:00Z",
    )
    assert read.get_data() == json.loads(EVENT.data)


STRUCTURED = {
    "specversion": "1.0",
    "id": "17",
    "source": "/loms/orders",
    "type": "loms.order.status-changed",
    "time": "2026-11-22T08:00:00Z",
    "subject": "order/1",
    "datacontenttype": "application/json",
    "data": {"order_id": 1, "status": "new"},
}


def test_a_structured_mode_record_is_read_too() -> None:
    envelope = json.dumps(STRUCTURED).encode()
    headers = [("content-type", b"application/cloudevents+json"), ("traceparent", b"00-ab-cd-01")]
    expected = dataclasses.replace(EVENT, data=b'{"order_id":1,"status":"new"}', traceparent="00-ab-cd-01")
    assert from_kafka(headers, envelope, EVENT.key) == expected
    as_bytes = {**STRUCTURED, "data_base64": base64.b64encode(b"\x00\x01").decode()}
    del as_bytes["data"]
    assert from_kafka(headers, json.dumps(as_bytes).encode(), None).data == b"\x00\x01"


@pytest.mark.parametrize(
    "headers",
    [
        [("ce_id", b"17"), ("ce_source", b"/s"), ("ce_type", b"t")],  # the SDK would assume 1.0
        [("ce_specversion", b"1.0"), ("ce_source", b"/s"), ("ce_type", b"t")],  # the SDK would make up an id
        [("ce_specversion", b"0.3"), ("ce_id", b"17"), ("ce_source", b"/s"), ("ce_type", b"t")],
        [("ce_specversion", b"1.0"), ("ce_id", b""), ("ce_source", b"/s"), ("ce_type", b"t")],
        [("ce_specversion", b"1.0"), ("ce_id", b"\xff"), ("ce_source", b"/s"), ("ce_type", b"t")],
        [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"1"),
            ("ce_source", b"/s"),
            ("ce_type", b"t"),
            ("ce_time", b"x"),
        ],
    ],
    ids=["no-specversion", "no-id", "0.3", "empty-id", "not-utf8", "bad-time"],
)
def test_a_record_that_is_not_a_whole_cloudevent_1_0_is_malformed(headers: list[tuple[str, bytes]]) -> None:
    with pytest.raises(MalformedEventError):
        from_kafka(headers, b"{}", None)


@pytest.mark.parametrize(
    "envelope",
    [b"[1]", b"not json", json.dumps({**STRUCTURED, "id": 17}).encode(), b'{"data": ' + b"1" * 5000 + b"}"],
    ids=["array", "not-json", "numeric-id", "huge-number"],
)
def test_an_unreadable_structured_record_is_malformed(envelope: bytes) -> None:
    with pytest.raises(MalformedEventError):
        from_kafka([("content-type", b"application/cloudevents+json")], envelope, None)


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
    letter = deadletters.DeadLetter("HTTP 500 after 6 attempts", "orders", 1, 41, None, None, original)
    headers = deadletters.annotated_headers(letter)
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
