"""The order viewer's Kafka: the dead-letter publisher, and the batch stream that feeds the ingest worker.

The only modules of the order viewer that import kafka-python (with adapters/postgres for pg8000).
Dead letters carry the record's original key, bytes and headers, plus `reason`, `source_topic`,
`source_partition` and `source_offset` (the last two `unknown` when the delivery did not say); one too large
to copy whole goes as an envelope (shared_lib.deadletters).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from functions.orders.domain import DeadLetter, SourceRecord
from shared_lib import deadletters
from shared_lib.errors import TransientError
from shared_lib.events import kafka_consumer, kafka_reachable
from shared_lib.observability import metrics
from shared_lib.retry import Backoff

log = logging.getLogger(__name__)


def _shared(letter: DeadLetter) -> deadletters.DeadLetter:
    record = letter.record
    return deadletters.DeadLetter(
        letter.reason, record.topic, record.partition, record.offset, record.key, record.value, record.headers
    )


class KafkaDeadLetters:
    """Publishes dead letters through shared_lib.deadletters (idempotent, acks=all): `send` returns once the
    broker has every one of them, whole or, when too large to copy, as an envelope; else it raises
    TransientError (the caller must not acknowledge the records)."""

    def __init__(self, bootstrap: str, topic: str, timeout_seconds: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_seconds = timeout_seconds
        self._publisher = deadletters.KafkaDeadLetterPublisher(
            bootstrap, topic, "orders-dead-letters", timeout_seconds
        )

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if letters:
            self._publisher.publish([_shared(letter) for letter in letters])

    def close(self) -> None:
        self._publisher.close()


class LogDeadLetters:
    """Where dead letters go without Kafka (the dev server's embedded mode): the log, and this list."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def send(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            log.error("dead letter from %s (no Kafka here): %s", letter.record.where(), letter.reason)
        self.letters.extend(letters)


# --- the batch stream --------------------------------------------------------------------------------------

_RECONNECT = Backoff(base=0.2, max=5.0)
DLQ_INTERVAL_SECONDS = 10.0


class KafkaOrderStream:
    """Consumes a topic in batches with a consumer group and hands each batch to `handle`; commits the
    batch's offsets only once `handle` returned. A TransientError from `handle` rewinds to the batch's
    first records and tries them again after a backoff: at least once, never a loss, never a skip.

    `last_pass` is when its loop last went round (time.monotonic(); None before the first): a poll, a
    reconnect's wait or a batch handled; the worker's /healthz reads it.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        *,
        batch_size: int = 1000,
        fetch_max_wait_ms: int = 50,
        initial_offset: str = "earliest",
        check_crcs: bool = False,
        dead_letter_topic: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self.batch_size = batch_size
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.initial_offset = initial_offset
        self.check_crcs = check_crcs
        self.assigned = threading.Event()
        self.dead_letter_topic = dead_letter_topic or f"{topic}.dlq"
        self._dlq_backlog = deadletters.DeadLetterBacklog(bootstrap, self.dead_letter_topic)
        self._dlq_measured = 0.0
        self.last_pass: float | None = None

    def _connect(self) -> Any | None:
        if not kafka_reachable(self.bootstrap):
            return None
        try:
            return kafka_consumer(
                self.bootstrap,
                self.group,
                f"orders-ingest-{self.group}",
                initial_offset=self.initial_offset,
                fetch_max_wait_ms=self.fetch_max_wait_ms,
                max_poll_records=self.batch_size,
                request_timeout_ms=15_000,
                # kafka-python checks CRCs in pure Python unless the crc32c wheel is installed: a third of
                # the worker's time. The broker checked them when the records were produced.
                check_crcs=self.check_crcs,
            )
        except Exception as exc:
            log.warning("cannot reach Kafka at %s: %r", self.bootstrap, exc)
            return None

    def run(self, handle: Callable[[list[SourceRecord]], object], stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            self.last_pass = time.monotonic()
            consumer = self._connect()
            if consumer is None:
                failures += 1
                if failures == 1:
                    log.warning("%s: Kafka at %s is unreachable; retrying", self.topic, self.bootstrap)
                stop.wait(_RECONNECT.delay(failures))
                continue
            try:
                consumer.subscribe([self.topic])
                # metadata before the first poll joins the group: kafka-python assigns from the metadata it
                # has, and without the topic's it hands out no partition and may not rebalance for a long time
                if not consumer.partitions_for_topic(self.topic):
                    failures += 1
                    if failures == 1:
                        log.warning("topic %s does not exist (yet); waiting for it", self.topic)
                    stop.wait(_RECONNECT.delay(failures))
                    continue
                failures = 0
                self._consume(consumer, handle, stop)
            except Exception:
                log.exception("consuming %s failed; reconnecting", self.topic)
                stop.wait(_RECONNECT.delay(1))
            finally:
                self.assigned.clear()
                self._dlq_backlog.close()
                try:
                    consumer.close(autocommit=False, timeout_ms=2_000)
                except Exception:
                    log.warning("closing the consumer of %s failed", self.topic, exc_info=True)

    def _consume(
        self, consumer: Any, handle: Callable[[list[SourceRecord]], object], stop: threading.Event
    ) -> None:
        from kafka.structs import OffsetAndMetadata

        failures = 0
        while not stop.is_set():
            self.last_pass = time.monotonic()
            self._measure_dead_letters()
            polled = consumer.poll(timeout_ms=200, max_records=self.batch_size)
            if consumer.assignment():
                self.assigned.set()
            if not polled:
                continue
            records = [
                SourceRecord(
                    value=r.value or b"",
                    key=r.key,
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    headers=tuple((name, value or b"") for name, value in (r.headers or [])),
                )
                for batch in polled.values()
                for r in batch
            ]
            try:
                handle(records)
            except TransientError as exc:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "a batch of %d records failed (%s); trying again", len(records), exc.message)
                for tp, batch in polled.items():
                    consumer.seek(tp, batch[0].offset)
                stop.wait(_RECONNECT.delay(failures))
                continue
            if failures:
                log.info("batches go through again")
            failures = 0
            offsets = {tp: OffsetAndMetadata(batch[-1].offset + 1, "", -1) for tp, batch in polled.items()}
            try:
                consumer.commit(offsets=offsets)
            except Exception as exc:  # a rebalance: the new owner redelivers; a redelivery changes nothing
                log.warning("committing offsets of %s failed: %r", self.topic, exc)

    def _measure_dead_letters(self) -> None:
        """The dead-letter topic's backlog (records no redrive passed yet), every few seconds."""
        now = time.monotonic()
        if now - self._dlq_measured < DLQ_INTERVAL_SECONDS:
            return
        self._dlq_measured = now
        waiting = self._dlq_backlog.measure()
        if waiting is not None:
            metrics.DEAD_LETTERS_WAITING.labels(self.dead_letter_topic).set(waiting)
