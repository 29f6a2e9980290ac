"""Test stand-ins for the far ends of an event flow: a CloudEvent function with scripted answers, served on a
real local port, plus bounded polling and producing helpers. No sleeps: waits end when the condition holds."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cloudevents.http
from werkzeug.wrappers import Request, Response

from shared_lib.events import Event, kafka_message
from tests.fixtures.kafka import read_records
from tests.integration.shared_lib.serving import serve_in_thread


def event_from_http(headers: Mapping[str, str], body: bytes) -> Event:
    """The event a binary-mode CloudEvent request holds (what a CloudEvent function is given), read by the
    cloudevents SDK, its data the bytes they are."""
    sdk = cloudevents.http.from_http(headers, body, data_unmarshaller=lambda data: data)
    return Event(
        id=sdk["id"],
        source=sdk["source"],
        type=sdk["type"],
        data=sdk.get_data() or b"",
        time=datetime.fromisoformat(sdk["time"]),
        subject=sdk.get("subject"),
        traceparent=headers.get("traceparent"),
        content_type=sdk.get("datacontenttype") or "application/json",
    )


def kafka_headers(event: Event) -> list[tuple[str, bytes]]:
    """The headers of `event`'s binary-mode Kafka record, as kafka-python takes them."""
    return list(kafka_message(event).headers.items())


@dataclass(frozen=True, slots=True)
class Answer:
    status: int = 200
    delay: float = 0.0  # seconds before answering


Script = Callable[[Event, int], Answer]  # (event, its attempt number from 1) -> what to answer


def always_ok(_event: Event, _attempt: int) -> Answer:
    return Answer()


@dataclass
class Sink:
    """Records every request (`received`) and every one it answered 2xx (`accepted`), in arrival order."""

    script: Script = always_ok
    received: list[Event] = field(default_factory=list)
    accepted: list[Event] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[Any] = field(default_factory=Counter)
    max_in_flight: Counter[Any] = field(default_factory=Counter)
    arrived_at: dict[str, float] = field(default_factory=dict)  # first 2xx per event id (monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self._answer(Request(environ))(environ, start_response)

    def _answer(self, request: Request) -> Response:
        event = event_from_http({k.lower(): v for k, v in request.headers.items()}, request.get_data())
        lane = partition_of(event)
        with self.lock:
            self.received.append(event)
            self.attempts[event.id] += 1
            attempt = self.attempts[event.id]
            self.in_flight[lane] += 1
            self.max_in_flight[lane] = max(self.max_in_flight[lane], self.in_flight[lane])
        answer = self.script(event, attempt)
        if answer.delay:
            time.sleep(answer.delay)  # the sink is slow on purpose: this is the behaviour under test
        with self.lock:
            self.in_flight[lane] -= 1
            if 200 <= answer.status < 300:
                self.accepted.append(event)
                self.arrived_at.setdefault(event.id, time.monotonic())
        return Response("", status=answer.status)

    def accepted_ids(self) -> list[str]:
        with self.lock:
            return [e.id for e in self.accepted]

    def accepted_numbers(self, partition: int | None = None) -> list[int]:
        """The `n` of each accepted event (of one partition's events when given), in arrival order."""
        with self.lock:
            events = list(self.accepted)
        return [e.json()["n"] for e in events if partition is None or partition_of(e) == partition]


def partition_of(event: Event) -> Any:
    try:
        return event.json().get("p")
    except (ValueError, AttributeError):
        return None


@contextmanager
def serving(sink: Sink) -> Iterator[str]:
    with serve_in_thread(sink) as url:
        yield url + "/events/test"


def numbered(topic: str, partition: int, n: int, key: str | None = None) -> Event:
    return Event(
        id=f"{topic}-{partition}-{n}",
        source="/test/events",
        type="test.numbered",
        data=json.dumps({"p": partition, "n": n}).encode(),
        key=(key or f"k{partition}").encode(),
    )


def produce(bootstrap: str, topic: str, records: Iterable[tuple[int, Event]]) -> None:
    """Write each (partition, event) as a binary-mode CloudEvent record, acknowledged by the broker."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        futures = [
            producer.send(topic, key=e.key, value=e.data, headers=kafka_headers(e), partition=p)
            for p, e in records
        ]
        for future in futures:
            future.get(timeout=10)
    finally:
        producer.close(timeout=5)


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 10.0) -> list[Any]:
    """The first `expected` records of `topic` (all partitions, from the beginning), or fewer on timeout."""
    return read_records(bootstrap, topic, lambda records: len(records) >= expected, timeout)
