"""Dead letters: the one way a record that cannot be handled goes to its `<topic>.dlq`, and how it is read
back.

A dead letter is the record's key, bytes and headers plus why and where from (`reason`, `source_topic`,
`source_partition`, `source_offset`). A record too large to be copied whole (its bytes plus headers over the
producer's or the broker's size limit) goes as an envelope instead: a JSON description with its size and a
bounded prefix of its bytes, marked `dead_letter_envelope`; it cannot be replayed. A permanent publish error
is never retried; a transient one (broker down, timeout) is a TransientError. Nothing service-specific here.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared_lib.errors import TransientError
from shared_lib.events import close_producer, kafka_producer, kafka_reachable

log = logging.getLogger(__name__)

REASON = "reason"
SOURCE_TOPIC = "source_topic"
SOURCE_PARTITION = "source_partition"
SOURCE_OFFSET = "source_offset"
ENVELOPE = "dead_letter_envelope"
# the annotations a dead letter carries besides the original headers (dropped again on a redrive)
ANNOTATIONS = (REASON, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, ENVELOPE)
MAX_REASON = 1000  # characters: a header is no place for an essay
ENVELOPE_PREFIX_BYTES = 1024  # of the record's value, in the envelope: enough to recognise it, never too big
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record to dead-letter: where it came from (partition/offset None when the delivery did not say)."""

    reason: str
    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()

    def size(self) -> int:
        """Key, value and header bytes: what counts against a broker's record size limit."""
        return (
            len(self.key or b"")
            + len(self.value or b"")
            + sum(len(name.encode()) + len(raw or b"") for name, raw in self.headers)
        )


def _where(value: int | None) -> bytes:
    return str(value if value is not None else UNKNOWN).encode()


def _annotations(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """Why and where from."""
    return [
        (REASON, letter.reason[:MAX_REASON].encode()),
        (SOURCE_TOPIC, letter.topic.encode()),
        (SOURCE_PARTITION, _where(letter.partition)),
        (SOURCE_OFFSET, _where(letter.offset)),
    ]


def annotated_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The original headers (minus any earlier dead-letter annotations) plus why and where from."""
    return [*original_headers(letter.headers), *_annotations(letter)]


def original_headers(headers: Iterable[tuple[str, bytes | None]]) -> list[tuple[str, bytes]]:
    """A dead letter's headers without the dead-letter annotations: what the record carried first."""
    return [(name, raw or b"") for name, raw in headers if name.lower() not in ANNOTATIONS]


def envelope(letter: DeadLetter, why_whole_failed: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of the envelope that stands for a letter too large to copy whole."""
    value = letter.value or b""
    body = {
        "reason": letter.reason[:MAX_REASON],
        "not_copied_because": why_whole_failed[:MAX_REASON],
        "source_topic": letter.topic,
        "source_partition": letter.partition,
        "source_offset": letter.offset,
        "size": letter.size(),
        "value_size": len(value),
        "header_names": [name for name, _ in letter.headers][:100],
        "prefix_base64": base64.b64encode(value[:ENVELOPE_PREFIX_BYTES]).decode(),
        "prefix_bytes": min(len(value), ENVELOPE_PREFIX_BYTES),
    }
    return json.dumps(body).encode(), [*_annotations(letter), (ENVELOPE, b"1")]


def permanent_publish_error(exc: BaseException) -> bool:
    """Whether publishing failed for good (no retry will ever pass): the record is over a size limit or the
    broker refuses it as invalid. Anything else (broker down, timeouts, a leader moving) is transient."""
    import kafka.errors

    permanent = (
        kafka.errors.MessageSizeTooLargeError,
        kafka.errors.RecordListTooLargeError,
        kafka.errors.InvalidRecordError,
    )
    seen: BaseException | None = exc
    while seen is not None:  # the producer may wrap the broker's error
        if isinstance(seen, permanent):
            return True
        seen = seen.__cause__
    return False


class KafkaDeadLetterPublisher:
    """Publishes dead letters to one dead-letter topic with an idempotent producer (acks=all). `publish`
    returns once the broker has each of them, whole or as an envelope; a transient failure is a
    TransientError (the caller must not acknowledge the records, and tries again). Thread-safe."""

    def __init__(
        self, bootstrap: str, topic: str, client_id: str = "dead-letters", timeout_seconds: float = 10.0
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_id = client_id
        self.timeout_seconds = timeout_seconds
        self._producer: Any = None
        self._lock = threading.Lock()

    def _ensure(self) -> Any:
        with self._lock:
            if self._producer is None:
                self._producer = kafka_producer(
                    self.bootstrap, self.client_id, self.timeout_seconds, reconnect_backoff_max_ms=1_000
                )
            return self._producer

    def publish(self, letters: Sequence[DeadLetter]) -> int:
        """Every letter on the dead-letter topic, whole where possible, else as an envelope; returns how many
        went as envelopes (too large to copy whole)."""
        if not letters:
            return 0
        producer = self._ensure()
        try:
            futures = [
                self._send(producer, letter.key, letter.value, annotated_headers(letter))
                for letter in letters
            ]
            producer.flush(timeout=self.timeout_seconds)
            too_large: list[tuple[DeadLetter, BaseException]] = []
            for letter, future in zip(letters, futures, strict=True):
                error = self._outcome(future)
                if error is None:
                    continue
                if permanent_publish_error(error):
                    too_large.append((letter, error))
                else:
                    raise error
            envelopes = []
            for letter, error in too_large:
                why = f"{type(error).__name__}: {error}"
                log.warning(
                    "dead letter from %s partition %s offset %s (%d bytes) cannot be copied whole (%s); "
                    "publishing an envelope",
                    letter.topic,
                    letter.partition,
                    letter.offset,
                    letter.size(),
                    why,
                )
                value, headers = envelope(letter, why)
                envelopes.append(
                    self._send(
                        producer, letter.key[:ENVELOPE_PREFIX_BYTES] if letter.key else None, value, headers
                    )
                )
            if envelopes:
                producer.flush(timeout=self.timeout_seconds)
                for future in envelopes:
                    error = self._outcome(future)
                    if error is not None:
                        raise error
        except TransientError:
            self.close()
            raise
        except Exception as exc:
            self.close()  # a fresh producer next time: no half-sent state carried over
            raise TransientError(f"publishing dead letters to {self.topic} failed") from exc
        return len(envelopes)

    def _send(
        self, producer: Any, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Any:
        try:
            return producer.send(self.topic, key=key, value=value, headers=headers)
        except Exception as exc:  # kafka-python raises a too-large record at once, before any future
            if permanent_publish_error(exc):
                return exc
            raise

    def _outcome(self, future: Any) -> BaseException | None:
        if isinstance(future, BaseException):
            return future
        try:
            future.get(timeout=self.timeout_seconds)
        except Exception as exc:
            return exc
        return None

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            close_producer(producer, self.timeout_seconds)


# --- reading dead letters back ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """What a dead-letter record says about itself."""

    reason: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    is_envelope: bool


def describe(headers: Iterable[tuple[str, bytes | None]]) -> DeadLetterInfo:
    found: Mapping[str, str] = {
        name.lower(): (raw or b"").decode("utf-8", "replace")
        for name, raw in headers
        if name.lower() in ANNOTATIONS
    }

    def number(name: str) -> int | None:
        try:
            return int(found.get(name, ""))
        except ValueError:
            return None

    return DeadLetterInfo(
        reason=found.get(REASON, ""),
        source_topic=found.get(SOURCE_TOPIC) or None,
        source_partition=number(SOURCE_PARTITION),
        source_offset=number(SOURCE_OFFSET),
        is_envelope=found.get(ENVELOPE) == "1",
    )


def redrive_group(dead_letter_topic: str) -> str:
    """The consumer group a redrive of `dead_letter_topic` commits its progress in."""
    return f"redrive.{dead_letter_topic}"


class DeadLetterBacklog:
    """Counts the records of a dead-letter topic that no redrive has passed yet: its end offsets minus the
    redrive group's committed offsets (or the topic's first offsets where it has none). Asks the broker with
    a consumer that never joins a group. `measure` returns None while the broker does not answer."""

    def __init__(self, bootstrap: str, topic: str, timeout_seconds: float = 2.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_ms = int(timeout_seconds * 1000)
        self._consumer: Any = None

    def measure(self) -> int | None:
        from kafka.structs import TopicPartition

        try:
            if self._consumer is None:
                from kafka import KafkaConsumer

                if not kafka_reachable(self.bootstrap):  # a consumer that cannot bootstrap leaks its thread
                    return None

                self._consumer = KafkaConsumer(
                    bootstrap_servers=self.bootstrap,
                    group_id=redrive_group(self.topic),
                    client_id=f"dead-letter-backlog-{self.topic}",
                    enable_auto_commit=False,
                    request_timeout_ms=max(self.timeout_ms, 1_000) + 500,
                    bootstrap_timeout_ms=self.timeout_ms,
                    reconnect_backoff_max_ms=1_000,
                )
            partitions = self._consumer.partitions_for_topic(self.topic)
            if not partitions:
                return None
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            ends = self._consumer.end_offsets(tps, timeout_ms=self.timeout_ms)
            starts = self._consumer.beginning_offsets(tps, timeout_ms=self.timeout_ms)
            waiting = 0
            for tp in tps:
                passed = self._consumer.committed(tp, timeout_ms=self.timeout_ms)
                start = max(starts.get(tp, 0), passed or 0)
                waiting += max(0, ends.get(tp, 0) - start)
            return waiting
        except Exception as exc:
            log.debug("measuring the backlog of %s failed: %r", self.topic, exc)
            self.close()
            return None

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close(autocommit=False)
            except Exception:
                log.debug("closing the backlog consumer of %s failed", self.topic, exc_info=True)
