"""The order viewer's Kafka: the dead-letter publisher, and the batch stream that feeds the ingest worker.

The only modules of the order viewer that import kafka-python (with adapters/postgres for pg8000).
Dead letters carry the record's original key, bytes and headers, plus `reason`, `source_topic`,
`source_partition` and `source_offset` (the last two `unknown` when the delivery did not say).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from functions.orders.domain import DeadLetter, SourceRecord
from shared_lib.errors import TransientError
from shared_lib.events import kafka_consumer, kafka_reachable
from shared_lib.retry import Backoff

log = logging.getLogger(__name__)

DLQ_HEADERS = ("reason", "source_topic", "source_partition", "source_offset")
MAX_REASON = 1000  # characters: a header is no place for an essay


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    record = letter.record
    kept = [(name, value) for name, value in record.headers if name.lower() not in DLQ_HEADERS]
    unknown = "unknown"
    return [
        *kept,
        ("reason", letter.reason[:MAX_REASON].encode()),
        ("source_topic", record.topic.encode()),
        ("source_partition", str(record.partition if record.partition is not None else unknown).encode()),
        ("source_offset", str(record.offset if record.offset is not None else unknown).encode()),
    ]


class KafkaDeadLetters:
    """Publishes dead letters with an idempotent producer (acks=all); `send` returns once the broker has
    every one of them, else raises TransientError (the caller must not acknowledge the records)."""

    def __init__(self, bootstrap: str, topic: str, timeout_seconds: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_seconds = timeout_seconds
        self._producer: Any = None
        self._lock = threading.Lock()

    def _ensure(self) -> Any:
        with self._lock:
            if self._producer is None:
                from kafka import KafkaProducer

                timeout_ms = int(self.timeout_seconds * 1000)
                try:
                    self._producer = KafkaProducer(
                        bootstrap_servers=self.bootstrap,
                        client_id="orders-dead-letters",
                        acks="all",
                        enable_idempotence=True,
                        linger_ms=2,
                        request_timeout_ms=timeout_ms,
                        max_block_ms=timeout_ms,
                        bootstrap_timeout_ms=timeout_ms,
                    )
                except Exception as exc:
                    raise TransientError("Kafka is unavailable") from exc
            return self._producer

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        producer = self._ensure()
        try:
            futures = [
                producer.send(
                    self.topic, key=l.record.key, value=l.record.value, headers=dead_letter_headers(l)
                )
                for l in letters  # noqa: E741
            ]
            producer.flush(timeout=self.timeout_seconds)
            for future in futures:
                future.get(timeout=self.timeout_seconds)
        except Exception as exc:
            self.close()
            raise TransientError("publishing dead letters failed") from exc

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=self.timeout_seconds)
            except Exception:
                log.warning("closing the dead-letter producer failed", exc_info=True)


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


class KafkaOrderStream:
    """Consumes a topic in batches with a consumer group and hands each batch to `handle`; commits the
    batch's offsets only once `handle` returned. A TransientError from `handle` rewinds to the batch's
    first records and tries them again after a backoff: at least once, never a loss, never a skip.

    It joins the group the dev server's KafkaSource stand-in would use for ingest_order, so the two can never
    both take the same partition.
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
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self.batch_size = batch_size
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.initial_offset = initial_offset
        self.check_crcs = check_crcs
        self.assigned = threading.Event()

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
