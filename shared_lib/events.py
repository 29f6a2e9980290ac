"""CloudEvents over Kafka and HTTP, encoded by the `cloudevents` SDK, and a Kafka publisher with
broker-acknowledged sends.

`Event` is what the shop publishes (loms' outbox rows) and what the event source delivers: its attributes, its
data as the bytes they are (never decoded or re-encoded here), the Kafka record key and the producer's trace
context. On the wire it is a CloudEvent in binary mode, written by the SDK (`cloudevents.kafka.to_binary` on
records: `ce_id`, `ce_source`, … headers; `cloudevents.conversion.to_binary` on HTTP: `ce-id`, `ce-source`, …)
and read back from records by it (`from_binary`; a structured-mode record, one JSON envelope of content type
`application/cloudevents+json`, too; functions-framework reads what HTTP delivers). The record key travels as
the record's key, never as an attribute; `traceparent` travels as its own W3C Trace Context header beside the
event on both transports, as consumers expect it. A publish is timed, counted and (when tracing) a producer
span linked to each event's producer. Nothing service-specific here.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cloudevents.conversion
import cloudevents.http
import cloudevents.kafka
from cloudevents.abstract import AnyCloudEvent
from cloudevents.exceptions import GenericException

from shared_lib.errors import TransientError
from shared_lib.observability import metrics, tracing
from shared_lib.retry import Backoff

log = logging.getLogger(__name__)

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents"  # the content type of structured mode (`…+json`)
REQUIRED = ("id", "source", "type")


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


class MalformedEventError(ValueError):
    """A record or request that is not a CloudEvents 1.0 event: poison, never worth a retry."""


def as_is(value: Any) -> Any:
    """The SDK's data (un)marshaller for data that stays the bytes it is: the shop's payloads are JSON bytes
    written once by their producer and decoded once by their consumer."""
    return value


def cloudevent(event: Event) -> cloudevents.http.CloudEvent:
    """The SDK's CloudEvent for `event` (its data the bytes, its key and traceparent left out)."""
    attributes = {
        "specversion": SPECVERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": rfc3339(event.time),
        "datacontenttype": event.content_type,
    }
    if event.subject:
        attributes["subject"] = event.subject
    return cloudevents.http.CloudEvent(attributes, event.data)


def kafka_message(event: Event) -> cloudevents.kafka.KafkaMessage:
    """The binary-mode Kafka record of `event`: key, value, and the headers (`ce_…`, `content-type`,
    `traceparent`)."""
    message = cloudevents.kafka.to_binary(
        cloudevent(event), data_marshaller=as_is, key_mapper=lambda _: event.key
    )
    if event.traceparent:
        message.headers["traceparent"] = event.traceparent.encode()
    return message


class Received(cloudevents.http.CloudEvent):
    """The SDK's CloudEvent as read from the wire (the event type the SDK's readers are given), refusing an
    event without what the SDK would otherwise make up: it fills in a missing id (a uuid), specversion (1.0)
    and time (now), and reads CloudEvents 0.3 too."""

    @classmethod
    def create(cls, attributes: Mapping[str, Any], data: Any) -> Received:
        if attributes.get("specversion") != SPECVERSION:
            raise MalformedEventError("not a CloudEvents 1.0 event")
        missing = [a for a in REQUIRED if not isinstance(attributes.get(a), str) or not attributes.get(a)]
        if missing:
            raise MalformedEventError("missing CloudEvent attributes: " + ", ".join(missing))
        return cls(attributes, data)


# What the SDK's readers raise on input they cannot read: their own errors, and the builtin error a few inputs
# reach them as (a header that is not UTF-8, a JSON number of thousands of digits, deep nesting, an envelope
# that is not a JSON object)
UNREADABLE = (GenericException, ValueError, RecursionError, AttributeError, TypeError)


def from_kafka(headers: Iterable[tuple[str, bytes | None]], value: bytes | None, key: bytes | None) -> Event:
    """The event a Kafka record holds, binary or structured; MalformedEventError when it holds none."""
    found = {name.lower(): raw or b"" for name, raw in headers}
    structured = found.get("content-type", b"").startswith(STRUCTURED.encode())
    # structured: no headers, or the SDK would make each an attribute, the content type `datacontenttype`
    message = cloudevents.kafka.KafkaMessage({} if structured else found, key, value or b"")
    read = cloudevents.kafka.from_structured if structured else cloudevents.kafka.from_binary
    try:
        sdk = read(message, Received, as_is)
    except MalformedEventError:
        raise
    except UNREADABLE as exc:
        raise MalformedEventError(f"not a readable CloudEvent ({type(exc).__name__})") from None
    traceparent = found.get("traceparent")
    return _event(sdk, sdk.get_data(), key, traceparent.decode("utf-8", "replace") if traceparent else None)


def http_request(event: Event) -> tuple[dict[str, str], bytes]:
    """The binary-mode HTTP headers and body for delivering `event` to a CloudEvent function (as KafkaSource
    does; the key is not sent)."""
    headers, body = cloudevents.conversion.to_binary(cloudevent(event), data_marshaller=as_is)
    if event.traceparent:
        headers["traceparent"] = event.traceparent
    return headers, body


def _event(sdk: AnyCloudEvent, data: Any, key: bytes | None, traceparent: str | None) -> Event:
    stamp = sdk.get("time")
    try:
        moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else datetime.now(UTC)
    except ValueError as exc:
        raise MalformedEventError("the CloudEvent's time is not RFC 3339") from exc
    subject = sdk.get("subject")
    content_type = sdk.get("datacontenttype")
    content_type = content_type if isinstance(content_type, str) and content_type else "application/json"
    return Event(
        id=sdk["id"],
        source=sdk["source"],
        type=sdk["type"],
        data=_bytes(data, content_type),
        time=moment,
        key=key,
        subject=subject if isinstance(subject, str) else None,
        traceparent=traceparent,
        content_type=content_type,
    )


def _bytes(data: Any, content_type: str) -> bytes:
    """An event's data as bytes: as it came in binary mode (and from a structured event's `data_base64`); a
    structured event's `data` encoded again, as JSON unless its content type says text."""
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str) and "json" not in content_type:
        return data.encode()
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


MAX_LINKS = 64  # a span links to at most this many producers: a batch of a thousand events needs no more
_field_counters: dict[str, tuple[metrics.Family, str]] = {}


def count_by_field(topic: str, family: metrics.Family, field: str) -> None:
    """Count the events of `topic` that a publisher got acknowledged by one field of their JSON payload, in a
    one-label family (loms: order status changes by status). One family and field per topic."""
    _field_counters[topic] = (family, field)


def _count_fields(topic: str, events: Sequence[Event]) -> None:
    counter = _field_counters.get(topic)
    if counter is None:
        return
    family, name = counter
    counts: collections.Counter[str] = collections.Counter()
    for event in events:
        try:
            payload = event.json()
        except (ValueError, RecursionError):
            payload = None
        value = payload.get(name) if isinstance(payload, dict) else None
        known = isinstance(value, (str, int)) and not isinstance(value, bool)
        counts[str(value) if known else "unknown"] += 1
    for label, count in counts.items():
        family.labels(label).inc(count)


@contextlib.contextmanager
def publishing(topic: str, events: Sequence[Event], transport: str) -> Iterator[None]:
    """Observe one publish of `events` to `topic`: its duration and outcome, the events acknowledged, how long
    each waited since its change, and a producer span linked to the events' producers."""
    backend = tracing.backend()
    attributes: dict[str, tracing.Attribute] = {}
    links: list[str] = []
    if not isinstance(backend, tracing.NoopBackend):
        attributes = {
            "messaging.system": transport,
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": len(events),
        }
        links = [e.traceparent for e in events if e.traceparent][:MAX_LINKS]
    outcome = "error"
    started = time.perf_counter()
    with backend.span(f"publish {topic}", "producer", attributes, links) as span:
        try:
            yield
            outcome = "ok"
        finally:
            metrics.PUBLISH_DURATION.labels(topic, outcome).observe(time.perf_counter() - started)
        now = datetime.now(UTC)
        waits = [max(0.0, (now - e.time).total_seconds()) for e in events]
        if waits:
            span.set("shop.outbox.oldest_wait_seconds", round(max(waits), 6))
    metrics.EVENTS_PUBLISHED.labels(topic).inc(len(events))
    _count_fields(topic, events)
    delay = metrics.RELAY_DELAY.labels(topic)
    for wait in waits:
        delay.observe(wait)


class PartialPublishError(TransientError):
    """A publish that did not complete: the transport acknowledged the events whose ids are in `acknowledged`
    (possibly none) and not the others, which may or may not have arrived. The caller may mark the
    acknowledged ones sent (keeping per-key order: not an event after an unacknowledged one of its key)."""

    def __init__(self, message: str, acknowledged: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged


class KafkaPublisher:
    """kafka-python's idempotent producer (acks=all): `publish` returns only once the broker acknowledged
    every record, in order per key; any failure is a PartialPublishError (a TransientError) naming the
    events the broker did acknowledge, and the caller must not mark the others sent.

    A broker that goes away mid-publish is waited for up to three times `timeout_seconds`: meanwhile the
    producer retries the very records it sent (same idempotent sequence numbers), so a broker back in time
    stores each exactly once, even one whose acknowledgement was lost with the connection."""

    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str = "shop",
        timeout_seconds: float = 10.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.timeout_seconds = timeout_seconds
        # Kafka requires delivery.timeout >= request.timeout + linger (2 ms): so for any timeout over 1 ms
        self.delivery_timeout_seconds = 3 * timeout_seconds
        self._producer: Any = None

    def _ensure(self) -> Any:
        if self._producer is None:
            self._producer = kafka_producer(
                self.bootstrap_servers,
                self.client_id,
                self.timeout_seconds,
                max_in_flight_requests_per_connection=5,
                # kafka-python's own metrics (sensors recorded per record and per request) are read by
                # nobody here: the shop counts and times publishes itself (shared_lib.observability)
                metrics_enabled=False,
                delivery_timeout_ms=int(self.delivery_timeout_seconds * 1000),
            )
        return self._producer

    def publish(self, topic: str, events: Sequence[Event]) -> None:
        if not events:
            return
        with publishing(topic, events, "kafka"):
            futures: list[Any] = []
            failure: BaseException | None = None
            try:
                producer = self._ensure()
                for e in events:
                    message = kafka_message(e)
                    headers = list(message.headers.items())
                    futures.append(
                        producer.send(topic, key=message.key, value=message.value, headers=headers)
                    )
                producer.flush(timeout=self.delivery_timeout_seconds + self.timeout_seconds)
            except Exception as exc:
                failure = exc
            if failure is None and all(f.is_done and f.succeeded() for f in futures):
                return
            if failure is None:
                failure = next((f.exception for f in futures if f.is_done and f.failed()), None)
            # a fresh producer next time: no half-sent state carried over. Closing ends every record still
            # pending, so each future below has its final answer (one the broker took meanwhile counts)
            self.close()
            sent = zip(events, futures, strict=False)  # fewer futures when a send itself failed
            acknowledged = frozenset(e.id for e, f in sent if f.is_done and f.succeeded())
            raise PartialPublishError(
                f"publishing to Kafka failed ({len(acknowledged)} of {len(events)} acknowledged)",
                acknowledged,
            ) from failure

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            close_producer(producer, self.timeout_seconds)


# What a CloudEvent function's answer means for the record (the same classes as Knative's dispatcher retries):
# 2xx delivered; no answer (unreachable, timed out, connection dropped), 404 (not deployed yet), 408, 409,
# 429 and every 5xx (a handler's TransientError is 503, an unhandled exception 500) are transient and retried;
# any other status (400, 413, 422, ...: the function says the event can never be handled) is permanent.
TRANSIENT_STATUSES = frozenset({404, 408, 409, 429})


def transient_status(status: int) -> bool:
    return status >= 500 or status in TRANSIENT_STATUSES


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    delivered: bool
    attempts: int  # HTTP attempts made
    reason: str = ""  # why the last attempt failed ("HTTP 500", "timed out", …); empty when delivered
    cancelled: bool = False  # given up early because the caller asked to stop; not delivered
    permanent: bool = False  # the sink refused it for good (a 4xx): dead-letter at once, never retry
    elapsed: float = field(default=0.0, compare=False)  # seconds from the first attempt to the last answer

    def describe(self) -> str:
        kind = "permanent: " if self.permanent else ""
        text = f"{kind}{self.reason} after {self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.elapsed >= 60:
            text += f" over {self.elapsed / 60:.1f} min"
        return text


class HttpEventSender:
    """POSTs binary-mode CloudEvents to a CloudEvent function's URL the way KafkaSource delivers them.

    A 2xx is a delivery. A transient failure (see `transient_status`; connection errors and timeouts too) is
    retried with capped exponential backoff (`backoff_delay` * 2**n, at most `backoff_max` seconds) until it
    passes, or until `retries` retries (None: no count limit) or `retry_for` seconds since the first attempt
    (None: no time limit) are used up. A permanent answer is not retried. Keep-alive connections; thread-safe.
    """

    def __init__(
        self,
        retries: int | None = None,
        backoff_delay: float = 0.2,
        backoff_max: float = 10.0,
        timeout_seconds: float = 10.0,
        retry_for: float | None = None,
    ) -> None:
        if retries is not None and retries < 0:
            raise ValueError("retries must not be negative")
        if retry_for is not None and retry_for < 0:
            raise ValueError("retry_for must not be negative")
        self.retries = retries
        self.retry_for = retry_for
        self.backoff = Backoff(base=backoff_delay, max=backoff_max, jitter=False)
        # imported by the first sender, not with this module: loms' functions import it for its events and
        # never post one (the relay does), and urllib3 was ~10 ms of their cold start
        import urllib3

        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=8,  # keep-alive connections per sink
            retries=False,  # the retry policy is ours, counted and spaced above
            timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds),
        )

    def _post(self, url: str, event: Event) -> tuple[str, bool]:
        """One POST: ("", False) on a 2xx, else (reason, whether the failure is permanent)."""
        import urllib3

        headers, body = http_request(event)
        try:
            response = self._pool.request(
                "POST",
                url,
                body=body,
                headers=headers,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.NewConnectionError:  # before TimeoutError: urllib3 makes it a subclass
            return "unreachable", False
        except urllib3.exceptions.TimeoutError:
            return "timed out", False
        except urllib3.exceptions.ProtocolError:
            return "connection dropped", False
        except urllib3.exceptions.HTTPError as exc:
            return f"failed ({type(exc).__name__})", False
        if 200 <= response.status < 300:
            return "", False
        return f"HTTP {response.status}", not transient_status(response.status)

    def send(
        self,
        url: str,
        event: Event,
        cancel: threading.Event | None = None,
        on_failure: Callable[[int, str], None] | None = None,
    ) -> DeliveryOutcome:
        """Deliver with retries. A set `cancel` ends the waiting between attempts (an attempt under way is
        finished first): the outcome is then `cancelled`, not delivered. `on_failure(attempt, reason)` is
        told of each transient failure (to log the first one, or show what a partition waits for)."""
        attempts = 0
        started = time.monotonic()
        while True:
            attempts += 1
            reason, permanent = self._post(url, event)
            elapsed = time.monotonic() - started
            if not reason:
                return DeliveryOutcome(True, attempts, elapsed=elapsed)
            if permanent:
                return DeliveryOutcome(False, attempts, reason, permanent=True, elapsed=elapsed)
            if on_failure is not None:
                on_failure(attempts, reason)
            delay = self.backoff.delay(attempts)
            out_of_retries = self.retries is not None and attempts > self.retries
            out_of_time = self.retry_for is not None and elapsed + delay > self.retry_for
            if out_of_retries or out_of_time:
                return DeliveryOutcome(False, attempts, reason, elapsed=elapsed)
            if cancel is not None and cancel.wait(delay):
                return DeliveryOutcome(False, attempts, reason, cancelled=True, elapsed=elapsed)
            if cancel is None:
                time.sleep(delay)

    def close(self) -> None:
        self._pool.clear()


class HttpDeliveryPublisher:
    """The embedded stand-in for Kafka plus KafkaSource, for machines without a broker: `publish` POSTs each
    event, in order, to every subscriber URL of the topic as a binary-mode CloudEvent, and returns only once
    all of them answered 2xx. Any delivery that still fails after the retries is a TransientError, so the
    caller keeps the events and tries again later: at-least-once and in order per key, as with Kafka, but
    without a dead-letter topic (a poison event is retried until it is fixed)."""

    def __init__(
        self,
        routes: Mapping[str, Sequence[str]],
        retries: int = 3,
        timeout_seconds: float = 5.0,
        backoff_delay: float = 0.1,
    ) -> None:
        self.routes = {topic: tuple(urls) for topic, urls in routes.items()}
        self._sender = HttpEventSender(
            retries=retries, backoff_delay=backoff_delay, backoff_max=2.0, timeout_seconds=timeout_seconds
        )

    def publish(self, topic: str, events: Sequence[Event]) -> None:
        if not events:
            return
        with publishing(topic, events, "http"):
            for index, event in enumerate(events):
                for url in self.routes.get(topic, ()):
                    outcome = self._sender.send(url, event)
                    if not outcome.delivered:
                        raise PartialPublishError(
                            f"delivering {event.id} to {url} failed: {outcome.describe()}",
                            frozenset(e.id for e in events[:index]),  # in order: every one before it
                        )

    def close(self) -> None:
        self._sender.close()


# --- Kafka clients ---------------------------------------------------------------------------------------


def kafka_producer(bootstrap: str, client_id: str, timeout_seconds: float, **overrides: Any) -> Any:
    """kafka-python's idempotent producer (acks=all), every wait bounded by `timeout_seconds`;
    TransientError when it cannot be made."""
    from kafka import KafkaProducer

    timeout_ms = int(timeout_seconds * 1000)
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 2,
        "request_timeout_ms": timeout_ms,
        "max_block_ms": timeout_ms,
        # without it the constructor waits 30 s for an unreachable broker, whatever the timeout
        "bootstrap_timeout_ms": timeout_ms,
    }
    options.update(overrides)
    try:
        return KafkaProducer(**options)
    except Exception as exc:
        raise TransientError("Kafka is unavailable") from exc


def close_producer(producer: Any, timeout_seconds: float) -> None:
    """Close a kafka-python producer, waiting up to `timeout_seconds` for what it still holds. Never raises:
    closing a broken producer must not mask the real error."""
    try:
        producer.close(timeout=timeout_seconds)
    except Exception:
        log.warning("closing the Kafka producer failed; closing without waiting", exc_info=True)
        try:
            producer.close(timeout=0)  # else it stays open and its finaliser raises again later
        except Exception:  # nothing more to do for a producer that cannot close
            log.debug("the Kafka producer could not be closed", exc_info=True)


def kafka_reachable(bootstrap: str) -> bool:
    """Whether any bootstrap server accepts a TCP connection. Asked before building a consumer: a
    KafkaConsumer whose bootstrap fails leaves its IO thread running, one per try."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=1.0):
                return True
        except (OSError, ValueError):
            continue
    return False


def kafka_consumer(
    bootstrap: str,
    group: str,
    client_id: str,
    *,
    initial_offset: str,
    fetch_max_wait_ms: int,
    max_poll_records: int,
    **overrides: Any,
) -> Any:
    """A kafka-python consumer as every consumer of the shop wants it: offsets committed by the caller only
    after the records were handled, quick to notice a dead broker, a lost member or a new partition."""
    from kafka import KafkaConsumer

    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "client_id": client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": initial_offset,
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "max_poll_records": max_poll_records,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
        "request_timeout_ms": 10_000,
        "bootstrap_timeout_ms": 5_000,
        "reconnect_backoff_max_ms": 1_000,
        "metadata_max_age_ms": 10_000,  # a new partition or a missed update is noticed within seconds
    }
    options.update(overrides)
    return KafkaConsumer(**options)
