"""CloudEvents over Kafka (binary mode) and over HTTP, and a Kafka publisher with broker-acknowledged sends.

Binary mode: the event's attributes travel as headers (`ce_id`, `ce_source`, … on Kafka records; `ce-id`,
`ce-source`, … on HTTP), the payload as the record value / request body. Nothing service-specific here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared_lib.errors import TransientError

log = logging.getLogger(__name__)

SPECVERSION = "1.0"
_ATTRIBUTES = ("id", "source", "type", "time", "subject")


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    source: str
    type: str
    data: bytes  # the JSON payload, as bytes
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    key: bytes | None = None  # the Kafka record key (ordering); not a CloudEvents attribute
    subject: str | None = None
    traceparent: str | None = None
    content_type: str = "application/json"

    def json(self) -> Any:
        return json.loads(self.data)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def kafka_headers(event: Event) -> list[tuple[str, bytes]]:
    headers = [
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", event.id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
        ("ce_time", rfc3339(event.time).encode()),
        ("content-type", event.content_type.encode()),
    ]
    if event.subject:
        headers.append(("ce_subject", event.subject.encode()))
    if event.traceparent:
        headers.append(("traceparent", event.traceparent.encode()))
    return headers


class MalformedEventError(ValueError):
    """A record or request that is not a binary-mode CloudEvent: poison, never worth a retry."""


def from_kafka(headers: Iterable[tuple[str, bytes | None]], value: bytes | None, key: bytes | None) -> Event:
    found = {name.lower(): (raw or b"").decode("utf-8", "replace") for name, raw in headers}
    return _build(
        {a: found.get(f"ce_{a}") for a in _ATTRIBUTES},
        found,
        value,
        key,
        found.get("content-type"),
        found.get("traceparent"),
    )


def http_headers(event: Event) -> dict[str, str]:
    """The binary-mode HTTP headers for delivering `event` to a CloudEvent function (as KafkaSource does)."""
    headers = {
        "ce-specversion": SPECVERSION,
        "ce-id": event.id,
        "ce-source": event.source,
        "ce-type": event.type,
        "ce-time": rfc3339(event.time),
        "Content-Type": event.content_type,
    }
    if event.subject:
        headers["ce-subject"] = event.subject
    if event.traceparent:
        headers["traceparent"] = event.traceparent
    return headers


def from_http(headers: Any, body: bytes) -> Event:
    get = headers.get
    return _build(
        {a: get(f"ce-{a}") for a in _ATTRIBUTES},
        {"ce_specversion": get("ce-specversion") or ""},
        body,
        None,
        get("Content-Type"),
        get("traceparent"),
    )


def _build(
    attributes: dict[str, str | None],
    found: dict[str, str],
    value: bytes | None,
    key: bytes | None,
    content_type: str | None,
    traceparent: str | None,
) -> Event:
    if found.get("ce_specversion") != SPECVERSION:
        raise MalformedEventError("not a CloudEvents 1.0 binary-mode event")
    missing = [a for a in ("id", "source", "type") if not attributes.get(a)]
    if missing:
        raise MalformedEventError("missing CloudEvent attributes: " + ", ".join(missing))
    stamp = attributes.get("time")
    try:
        moment = parse_time(stamp) if stamp else datetime.now(UTC)
    except ValueError as exc:
        raise MalformedEventError("ce_time is not RFC 3339") from exc
    return Event(
        id=str(attributes["id"]),
        source=str(attributes["source"]),
        type=str(attributes["type"]),
        data=value or b"",
        time=moment,
        key=key,
        subject=attributes.get("subject"),
        traceparent=traceparent,
        content_type=content_type or "application/json",
    )


class KafkaPublisher:
    """kafka-python's idempotent producer (acks=all): `publish` returns only once the broker acknowledged
    every record, in order per key; any failure is a TransientError and the caller must not mark them sent."""

    def __init__(
        self, bootstrap_servers: str, client_id: str = "shop", timeout_seconds: float = 10.0
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.timeout_seconds = timeout_seconds
        self._producer: Any = None

    def _ensure(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            try:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=self.client_id,
                    enable_idempotence=True,
                    acks="all",
                    linger_ms=2,
                    max_in_flight_requests_per_connection=5,
                    request_timeout_ms=int(self.timeout_seconds * 1000),
                    max_block_ms=int(self.timeout_seconds * 1000),
                )
            except Exception as exc:
                raise TransientError("Kafka is unavailable") from exc
        return self._producer

    def publish(self, topic: str, events: Sequence[Event]) -> None:
        if not events:
            return
        producer = self._ensure()
        try:
            futures = [
                producer.send(topic, key=e.key, value=e.data, headers=kafka_headers(e)) for e in events
            ]
            producer.flush(timeout=self.timeout_seconds)
            for future in futures:
                future.get(timeout=self.timeout_seconds)
        except Exception as exc:
            self.close()  # a fresh producer next time: no half-sent state carried over
            raise TransientError("publishing to Kafka failed") from exc

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=self.timeout_seconds)
            except Exception:  # noqa: BLE001 - closing a broken producer must not mask the real error
                log.warning("closing the Kafka producer failed", exc_info=True)
