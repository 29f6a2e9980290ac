"""A local KafkaSource: consumes a topic with a consumer group and POSTs each record to a CloudEvent
function's URL as a binary-mode CloudEvent, with KafkaSource's order, retry and dead-letter semantics.

What the cluster's KafkaSource does, for the dev server and the tests. Its lag, deliveries, dead letters and
delivery delays are metrics per topic. Nothing service-specific here.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from queue import Empty, Queue
from typing import Any, Literal

from kafka import ConsumerRebalanceListener, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from shared_lib import lifecycle
from shared_lib.events import (
    Event,
    HttpEventSender,
    MalformedEventError,
    from_kafka,
    kafka_consumer,
    kafka_reachable,
)
from shared_lib.observability import logs, metrics
from shared_lib.retry import Backoff

log = logging.getLogger(__name__)

KAFKA_EVENT_TYPE = "dev.knative.kafka.event"
# headers the dead-letter copy carries besides the original ones
DLQ_HEADERS = ("reason", "source_topic", "source_partition", "source_offset")
_RECONNECT = Backoff(base=0.2, max=2.0)
LAG_INTERVAL_SECONDS = 1.0


def event_of(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    timestamp_ms: int = -1,
) -> Event:
    """The CloudEvent a record stands for: its binary-mode headers, or, for a record without them, the
    wrapping KafkaSource applies (id `partition:<p>/offset:<o>`, source `/kafka/<topic>`)."""
    try:
        return from_kafka(headers, value, key)
    except MalformedEventError:
        pass
    found = {name.lower(): (raw or b"").decode("utf-8", "replace") for name, raw in headers}
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms >= 0 else datetime.now(UTC)
    return Event(
        id=f"partition:{partition}/offset:{offset}",
        source=f"/kafka/{topic}",
        type=KAFKA_EVENT_TYPE,
        data=value or b"",
        time=moment,
        key=key,
        subject=f"partition:{partition}#{offset}",
        traceparent=found.get("traceparent"),
        content_type=found.get("content-type") or "application/json",
    )


def dead_letter_headers(
    headers: Iterable[tuple[str, bytes | None]], reason: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The original headers (minus any earlier dead-letter annotations) plus why and where from."""
    kept = [(name, raw or b"") for name, raw in headers if name.lower() not in DLQ_HEADERS]
    return [
        *kept,
        ("reason", reason.encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


@dataclass
class SourceStats:
    delivered: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0  # attempts that did not get a 2xx (each retry counts)


class _Worker:
    """Delivers one partition's records strictly in order, each one only after the previous got a 2xx or was
    dead-lettered. Retired on revocation or stop: the attempt under way finishes, nothing new starts."""

    def __init__(self, source: KafkaEventSource, tp: TopicPartition, predecessor: _Worker | None) -> None:
        self.source = source
        self.tp = tp
        self.predecessor = predecessor  # the previous owner of the partition here: it must finish first
        self.cancel = threading.Event()
        self._records: collections.deque[Any] = collections.deque()
        self._wake = threading.Condition()
        self._busy = False
        self.thread = threading.Thread(
            target=self._run, name=f"eventsource-{tp.topic}-{tp.partition}", daemon=True
        )
        self.thread.start()

    def add(self, records: Sequence[Any]) -> None:
        with self._wake:
            self._records.extend(records)
            self._wake.notify()

    def backlog(self) -> int:
        with self._wake:
            return len(self._records) + int(self._busy)

    def retire(self) -> None:
        self.cancel.set()
        with self._wake:
            self._wake.notify()

    def _next(self) -> Any | None:
        with self._wake:
            while not self._records and not self.cancel.is_set():
                self._wake.wait()
            if self.cancel.is_set():
                return None
            self._busy = True
            return self._records.popleft()

    def _run(self) -> None:
        if self.predecessor is not None:
            self.predecessor.thread.join()
            self.predecessor = None
        try:
            while (record := self._next()) is not None:
                handled = self.source._handle(record, self.cancel)
                with self._wake:
                    self._busy = False
                if not handled:
                    return  # cancelled mid-way: the record stays uncommitted and is delivered again later
                self.source._completed.put((self, record.offset + 1))
        except Exception:
            log.exception("delivering from %s failed unexpectedly; reconnecting", self.tp)
            self.source._broken.set()


# per partition: the worker that handled records up to (excluding) the offset, not committed yet
_Pending = dict[TopicPartition, tuple[_Worker, int]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaEventSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.source._revoke(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.source._assign(assigned)


class KafkaEventSource:
    """Delivers `topic`'s records to the CloudEvent function at `sink`, as the cluster's KafkaSource does.

    - One consumer group member; per partition one worker: order within a partition, partitions in parallel.
    - A record is retried `retries` times (exponential backoff from `backoff_delay` seconds, capped at
      `backoff_max`) on connection errors, timeouts and non-2xx; then it goes to `<topic>.dlq` with the
      original key, value and headers plus `reason`, `source_topic`, `source_partition`, `source_offset`,
      and the partition moves on.
    - The offset after a record is committed only once it was delivered or dead-lettered: after a restart
      consumption resumes at the first record not yet handled (at least once; never a loss).
    - A group without committed offsets starts at `initial_offset` ("earliest" here, so that nothing
      published before the source first started is skipped; KafkaSource's own default is "latest").
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        sink: str,
        *,
        retries: int = 5,
        backoff_delay: float = 0.2,
        backoff_max: float = 10.0,
        timeout_seconds: float = 10.0,
        dead_letter_topic: str | None = None,
        initial_offset: Literal["earliest", "latest"] = "earliest",
        fetch_max_wait_ms: int = 20,
        max_backlog: int = 500,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self.sink = sink
        self.dead_letter_topic = dead_letter_topic or f"{topic}.dlq"
        self.initial_offset = initial_offset
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_backlog = max_backlog
        self.timeout_seconds = timeout_seconds
        self.sender = HttpEventSender(
            retries=retries,
            backoff_delay=backoff_delay,
            backoff_max=backoff_max,
            timeout_seconds=timeout_seconds,
        )
        self.stats = SourceStats()
        self._stats_lock = threading.Lock()
        self._workers: dict[TopicPartition, _Worker] = {}
        self._retired: dict[TopicPartition, _Worker] = {}
        self._workers_lock = threading.Lock()
        self._completed: Queue[tuple[_Worker, int]] = Queue()
        self._assignment: frozenset[int] = frozenset()
        self._assigned = threading.Event()
        self._stopping = threading.Event()
        self._broken = threading.Event()  # a worker died: start over from the committed offsets
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        self._producer_lock = threading.Lock()
        self._deadline = 0.0
        self._next: dict[TopicPartition, int] = {}  # per partition: the first offset not yet handled
        self._lag_measured = 0.0

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start consuming in the background; returns at once (see wait_assigned). Once per instance."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=f"eventsource-{self.topic}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the deliveries under way, commit what was handled, leave the group and close."""
        thread = self._thread
        if thread is None:
            return
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("event source for %s did not stop within %.1f s", self.topic, timeout)
        self.sender.close()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_assigned(self, timeout: float) -> bool:
        """True once the group gave this source its partitions (records before that are not lost, only
        not yet fetched)."""
        return self._assigned.wait(timeout)

    @property
    def assignment(self) -> frozenset[int]:
        """The partitions of `topic` this source currently owns."""
        return self._assignment

    def __enter__(self) -> KafkaEventSource:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- the consumer thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            consumer = self._connect(quiet=failures > 0)
            if consumer is None:
                failures += 1
                self._stopping.wait(_RECONNECT.delay(failures))
                continue
            try:
                # metadata before the first poll joins the group: otherwise kafka-python may assign from
                # stale metadata, handing out no partition at all or rebalancing again right away
                consumer.subscribe([self.topic], listener=_Listener(self))
                if not consumer.partitions_for_topic(self.topic):
                    failures += 1
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(level, "topic %s does not exist (yet); waiting for it", self.topic)
                    self._stopping.wait(_RECONNECT.delay(failures))
                    continue
                failures = 0
                self._consume(consumer)
            except Exception:
                log.exception("consuming %s failed; reconnecting", self.topic)
                self._retire_all()
                self._stopping.wait(_RECONNECT.delay(1))
            finally:
                self._close(consumer)
        self._close_producer()

    def _connect(self, quiet: bool) -> Any | None:
        """A new consumer, or None while Kafka is unreachable (said once per outage, not per try)."""
        if not kafka_reachable(self.bootstrap):
            # checked first: a KafkaConsumer whose bootstrap fails leaves its IO thread running, one per try
            log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "%s: Kafka at %s is unreachable",
                self.topic,
                self.bootstrap,
            )
            return None
        try:
            return kafka_consumer(
                self.bootstrap,
                self.group,
                f"eventsource-{self.group}",
                initial_offset=self.initial_offset,
                fetch_max_wait_ms=self.fetch_max_wait_ms,
                max_poll_records=self.max_backlog,
            )
        except Exception as exc:
            log.warning("event source for %s cannot reach Kafka at %s: %r", self.topic, self.bootstrap, exc)
            return None

    def _consume(self, consumer: Any) -> None:
        pending: _Pending = {}
        while not self._stopping.is_set():
            if self._broken.is_set():
                self._broken.clear()
                raise RuntimeError("a partition worker failed")
            batches = consumer.poll(timeout_ms=50)
            with self._workers_lock:
                for tp, records in batches.items():
                    if records:
                        self._next.setdefault(tp, records[0].offset)
                    self._worker(tp).add(records)
                backlogs = {tp: w.backlog() for tp, w in self._workers.items()}
            self._flow_control(consumer, backlogs)
            self._commit(consumer, pending, timeout=5.0)
            self._measure_lag(consumer)
        self._finish(consumer, pending)

    def _measure_lag(self, consumer: Any) -> None:
        """Records of the topic not handled yet: the broker's high watermark (as of the last fetch) minus the
        first offset not handled, summed over this source's partitions; at most once a second."""
        now = time.monotonic()
        if now - self._lag_measured < LAG_INTERVAL_SECONDS:
            return
        self._lag_measured = now
        lag = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            handled_up_to = self._next.get(tp)
            if high is not None and handled_up_to is not None:
                lag += max(0, high - handled_up_to)
        metrics.EVENTSOURCE_LAG.labels(self.topic).set(lag)

    def _worker(self, tp: TopicPartition) -> _Worker:
        worker = self._workers.get(tp)
        if worker is None:
            worker = self._workers[tp] = _Worker(self, tp, self._retired.pop(tp, None))
        return worker

    def _flow_control(self, consumer: Any, backlogs: dict[TopicPartition, int]) -> None:
        """Bounded memory: stop fetching a partition whose worker is far behind, until it catches up."""
        paused = consumer.paused()
        for tp, backlog in backlogs.items():
            if backlog >= self.max_backlog and tp not in paused:
                consumer.pause(tp)
            elif backlog < self.max_backlog and tp in paused:
                consumer.resume(tp)

    def _commit(self, consumer: Any, pending: _Pending, timeout: float) -> None:
        while True:
            try:
                worker, next_offset = self._completed.get_nowait()
            except Empty:
                break
            pending[worker.tp] = (worker, next_offset)
            self._next[worker.tp] = max(next_offset, self._next.get(worker.tp, 0))
        with self._workers_lock:
            # a retired worker's progress is not ours to commit any more: its successor redelivers from the
            # last committed offset (a duplicate, never a loss)
            for tp, (worker, _) in list(pending.items()):
                if self._workers.get(tp) is not worker:
                    del pending[tp]
        if not pending:
            return
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, (_, offset) in pending.items()}
        try:
            consumer.commit(offsets=offsets, timeout_ms=int(max(timeout, 0.5) * 1000))
        except Exception as exc:
            log.warning("committing offsets of %s failed (kept for the next try): %r", self.topic, exc)
            return
        pending.clear()

    def _finish(self, consumer: Any, pending: _Pending) -> None:
        """Graceful stop: let every worker finish its attempt under way, commit, then leave the group."""
        with self._workers_lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.retire()
        for worker in workers:  # leaves time within stop()'s budget to commit and to leave the group
            worker.thread.join(max(0.0, self._deadline - time.monotonic() - 3.0))
        self._commit(consumer, pending, timeout=max(0.5, self._deadline - time.monotonic() - 2.0))

    def _close(self, consumer: Any) -> None:
        try:
            consumer.close(autocommit=False, timeout_ms=2_000)
        except Exception:  # leaving the group is a courtesy: the session times out anyway
            log.warning("closing the consumer of %s failed", self.topic, exc_info=True)
        with self._workers_lock:
            leftovers, self._workers = self._workers, {}
        for worker in leftovers.values():
            worker.retire()
        self._retired.update(leftovers)
        self._assignment = frozenset()
        self._assigned.clear()
        self._next.clear()

    def _retire_all(self) -> None:
        with self._workers_lock:
            workers, self._workers = self._workers, {}
            for tp, worker in workers.items():
                worker.retire()
                self._retired[tp] = worker

    # -- rebalance callbacks (on the consumer's IO thread) ---------------------------------------------------

    def _revoke(self, revoked: Iterable[TopicPartition]) -> None:
        with self._workers_lock:
            for tp in revoked:
                self._next.pop(tp, None)
                worker = self._workers.pop(tp, None)
                if worker is not None:
                    worker.retire()
                    self._retired[tp] = worker
        self._assignment = frozenset()
        self._assigned.clear()

    def _assign(self, assigned: Iterable[TopicPartition]) -> None:
        self._assignment = frozenset(tp.partition for tp in assigned if tp.topic == self.topic)
        self._assigned.set()

    # -- one record (on its partition's worker thread) -------------------------------------------------------

    def _handle(self, record: Any, cancel: threading.Event) -> bool:
        """Deliver or dead-letter one record; False when cancelled before either happened."""
        headers = list(record.headers or [])
        event = event_of(
            record.topic, record.partition, record.offset, record.key, record.value, headers, record.timestamp
        )
        outcome = self.sender.send(self.sink, event, cancel)
        with self._stats_lock:
            self.stats.failed_attempts += outcome.attempts - int(outcome.delivered)
            self.stats.delivered += int(outcome.delivered)
        if outcome.delivered:
            metrics.EVENTSOURCE_DELIVERED.labels(record.topic).inc()
            if record.timestamp is not None and record.timestamp >= 0:
                delay = max(0.0, time.time() - record.timestamp / 1000)
                metrics.EVENTSOURCE_DELIVERY_DELAY.labels(record.topic).observe(delay)
            return True
        if outcome.cancelled:
            return False
        reason = outcome.describe()
        log.warning(
            "dead-lettering %s partition %d offset %d (%s): %s",
            record.topic,
            record.partition,
            record.offset,
            event.id,
            reason,
        )
        value = record.value
        dlq_headers = dead_letter_headers(headers, reason, record.topic, record.partition, record.offset)
        tries = 0
        while True:
            tries += 1
            try:
                self._dead_letter_producer().send(
                    self.dead_letter_topic, key=record.key, value=value, headers=dlq_headers
                ).get(timeout=self.timeout_seconds)
                break
            except Exception as exc:
                log.warning("dead-lettering to %s failed (will retry): %r", self.dead_letter_topic, exc)
                self._reset_producer()
                if cancel.wait(_RECONNECT.delay(tries)):
                    return False
        with self._stats_lock:
            self.stats.dead_lettered += 1
        metrics.EVENTSOURCE_DEAD_LETTERED.labels(record.topic).inc()
        return True

    def _dead_letter_producer(self) -> Any:
        with self._producer_lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    client_id=f"eventsource-{self.group}-dlq",
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=0,
                    request_timeout_ms=int(self.timeout_seconds * 1000),
                    max_block_ms=int(self.timeout_seconds * 1000),
                    bootstrap_timeout_ms=5_000,
                    reconnect_backoff_max_ms=1_000,
                )
            return self._producer

    def _reset_producer(self) -> None:
        with self._producer_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:
                log.debug("closing the dead-letter producer failed", exc_info=True)

    def _close_producer(self) -> None:
        self._reset_producer()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a broker")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True, help="the consumer group")
    parser.add_argument("--sink", required=True, help="the CloudEvent function's URL")
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument("--backoff-delay", type=float, default=0.2, help="seconds before the first retry")
    parser.add_argument("--initial-offset", choices=["earliest", "latest"], default="earliest")
    args = parser.parse_args(argv)
    logs.set_process(service="eventsource", function=args.group)
    logs.configure()  # JSON lines on stdout; kafka's INFO (every connection and rebalance step) kept out
    stop = lifecycle.stop_on_signals()
    source = KafkaEventSource(
        args.bootstrap,
        args.topic,
        args.group,
        args.sink,
        retries=args.retries,
        backoff_delay=args.backoff_delay,
        initial_offset=args.initial_offset,
    )
    source.start()
    log.info("delivering %s (group %s) to %s", args.topic, args.group, args.sink)
    stop.wait()
    source.stop()
    stats = source.stats
    log.info("stopped: %d delivered, %d dead-lettered", stats.delivered, stats.dead_lettered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
