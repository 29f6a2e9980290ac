"""A KafkaSource of our own: consumes a topic with a consumer group and POSTs each record to a CloudEvent
function's URL as a binary-mode CloudEvent, with KafkaSource's order, retry and dead-letter semantics.

What the cluster's KafkaSource does, for the dev server, the tests and OpenFaaS (run as a Deployment). A
transient failure is retried until it passes (within a time budget, 60 minutes by default) while the
partition waits; only a permanent answer, or a spent budget, dead-letters (see shared_lib.deadletters).
Its lag, deliveries, dead letters, delivery delays, the age of each partition's oldest undelivered record and
the dead-letter topic's backlog are metrics. Nothing service-specific here.
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

from kafka import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata, TopicPartition

from shared_lib import deadletters, lifecycle
from shared_lib.errors import TransientError
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
# between tries to reach Kafka: a consumer, the topic, a dead letter's publish
_RECONNECT = Backoff(base=0.2, max=2.0)
LAG_INTERVAL_SECONDS = 1.0
DLQ_INTERVAL_SECONDS = 10.0
FETCH_MAX_WAIT_MS = 20  # a record waits at most this long on the broker for more to fetch with it
DEFAULT_RETRY_MINUTES = 60.0  # a transient failure is retried this long: rides out a 15-minute outage
# Every poll takes all the records the fetcher holds. kafka-python 3.0.12 parks the rest of a partly taken
# fetch when its partition is paused and brings it back on resume only if its one "next records" slot is
# None, which after the first fetch it never is again (a drained record set stays there): the partition is
# then never fetched again, silently, until a rebalance. Taking everything leaves nothing to park; memory
# stays bounded by the fetch size (max_partition_fetch_bytes per partition), not by a record count.
MAX_POLL_RECORDS = 1_000_000


def event_of(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    timestamp_ms: int = -1,
) -> Event:
    """The CloudEvent a record stands for: the one it holds (binary or structured mode, read by the
    `cloudevents` SDK), or, for a record that holds none, the wrapping KafkaSource applies (id
    `partition:<p>/offset:<o>`, source `/kafka/<topic>`)."""
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


@dataclass
class SourceStats:
    delivered: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0  # attempts that did not get a 2xx (each retry counts)
    envelopes: int = 0  # dead letters too large to copy whole, published as envelopes
    rejoins: int = 0  # times the consumer was rebuilt because fetching a partition had stopped


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
        self._current: Any = None  # the record being delivered
        self.failing = ""  # why the record under way last failed ("" while none failed)
        self.progress_at = time.monotonic()  # when a record was last handled (or the worker started)
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

    def oldest(self) -> Any | None:
        """The oldest record not handled yet (the one under way, else the first queued), or None."""
        with self._wake:
            if self._busy and self._current is not None:
                return self._current
            return self._records[0] if self._records else None

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
            self._current = self._records.popleft()
            return self._current

    def _run(self) -> None:
        if self.predecessor is not None:
            self.predecessor.thread.join()
            self.predecessor = None
        try:
            while (record := self._next()) is not None:
                handled = self.source._handle(record, self)
                with self._wake:
                    self._busy = False
                    self._current = None
                if not handled:
                    return  # cancelled mid-way: the record stays uncommitted and is delivered again later
                self.progress_at = time.monotonic()
                self.failing = ""
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
        self.source._assigned.set()


class KafkaEventSource:
    """Delivers `topic`'s records to the CloudEvent function at `sink`, as the cluster's KafkaSource does.

    - One consumer group member; per partition one worker: order within a partition, partitions in parallel.
    - What the function's answer means: shared_lib.events.transient_status. A transient failure (no answer,
      a timeout, 404/408/409/429, a 5xx) is retried with exponential backoff from `backoff_delay` seconds,
      capped at `backoff_max`, until it passes, while the partition waits (order is kept); only after
      `retry_for` seconds (None: never) or `retries` retries (None: no count limit) is it dead-lettered. A
      permanent answer (any other 4xx) is dead-lettered at once. A dead letter goes to `<topic>.dlq` with the
      original key, value and headers plus `reason`, `source_topic`, `source_partition`, `source_offset`
      (an envelope when too large; see shared_lib.deadletters), and the partition moves on.
    - The offset after a record is committed only once it was delivered or dead-lettered: after a restart
      consumption resumes at the first record not yet handled (at least once; never a loss).
    - At most about `max_backlog` records wait in memory per partition (plus one fetch): fetching a partition
      pauses while its worker is that far behind. Per partition, the age of the oldest record not handled is
      a metric; when records wait and nothing moved for `stall_warning_seconds`, a warning says why, and if
      the reason is that the consumer stopped fetching them, the consumer is rebuilt.
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
        retries: int | None = None,
        retry_for: float | None = DEFAULT_RETRY_MINUTES * 60,
        backoff_delay: float = 0.2,
        backoff_max: float = 10.0,
        timeout_seconds: float = 10.0,
        initial_offset: Literal["earliest", "latest"] = "earliest",
        max_backlog: int = 500,
        stall_warning_seconds: float = 60.0,
    ) -> None:
        if max_backlog < 1:
            raise ValueError("max_backlog must be at least 1")
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self.sink = sink
        self.dead_letter_topic = f"{topic}.dlq"
        self.initial_offset = initial_offset
        self.max_backlog = max_backlog
        self.timeout_seconds = timeout_seconds
        self.stall_warning_seconds = stall_warning_seconds
        self.retry_for = retry_for
        self.sender = HttpEventSender(
            retries=retries,
            retry_for=retry_for,
            backoff_delay=backoff_delay,
            backoff_max=backoff_max,
            timeout_seconds=timeout_seconds,
        )
        self.dead_letters = deadletters.KafkaDeadLetterPublisher(
            bootstrap, self.dead_letter_topic, f"eventsource-{group}-dlq", timeout_seconds
        )
        self._dlq_backlog = deadletters.DeadLetterBacklog(bootstrap, self.dead_letter_topic)
        self.stats = SourceStats()
        self._stats_lock = threading.Lock()
        self._workers: dict[TopicPartition, _Worker] = {}
        self._retired: dict[TopicPartition, _Worker] = {}
        self._workers_lock = threading.Lock()
        self._completed: Queue[tuple[_Worker, int]] = Queue()
        self._assigned = threading.Event()
        self._stopping = threading.Event()
        self._broken = threading.Event()  # a worker died: start over from the committed offsets
        self._thread: threading.Thread | None = None
        self._deadline = 0.0
        self._next: dict[TopicPartition, int] = {}  # per partition: the first offset not yet handled
        self._enqueued: dict[TopicPartition, int] = {}  # per partition: the first offset not yet enqueued
        self._behind_since: dict[TopicPartition, float] = {}  # records wait on the broker, none in hand
        self._warned_at: dict[TopicPartition, float] = {}
        self._lag_measured = 0.0
        self._dlq_measured = 0.0

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

    def wait_assigned(self, timeout: float) -> bool:
        """True once the group gave this source its partitions (records before that are not lost, only
        not yet fetched)."""
        return self._assigned.wait(timeout)

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
        self.dead_letters.close()
        self._dlq_backlog.close()

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
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                max_poll_records=MAX_POLL_RECORDS,
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
                    if not records:
                        continue
                    expected = self._enqueued.get(tp)
                    if expected is not None and records[0].offset < expected:
                        # already in a worker's hands (a seek back may refetch them): never twice
                        records = [r for r in records if r.offset >= expected]
                        if not records:
                            continue
                    self._next.setdefault(tp, records[0].offset)
                    self._enqueued[tp] = records[-1].offset + 1
                    self._behind_since.pop(tp, None)
                    self._worker(tp).add(records)
                backlogs = {tp: w.backlog() for tp, w in self._workers.items()}
            self._flow_control(consumer, backlogs)
            self._commit(consumer, pending, timeout=5.0)
            if self._measure(consumer):
                break  # fetching stopped for good: commit what was handled, then a new consumer
        self._finish(consumer, pending)

    def _worker(self, tp: TopicPartition) -> _Worker:
        worker = self._workers.get(tp)
        if worker is None:
            worker = self._workers[tp] = _Worker(self, tp, self._retired.pop(tp, None))
        return worker

    def _flow_control(self, consumer: Any, backlogs: dict[TopicPartition, int]) -> None:
        """Bounded memory: stop fetching a partition whose worker is far behind, until it has caught up
        halfway. On resume the fetch position is set to the first record not yet enqueued, whatever the
        client kept meanwhile: a resumed partition continues exactly where its worker's queue ends."""
        paused = consumer.paused()
        for tp, backlog in backlogs.items():
            if backlog >= self.max_backlog and tp not in paused:
                consumer.pause(tp)
            elif backlog <= self.max_backlog // 2 and tp in paused:
                consumer.resume(tp)
                enqueued = self._enqueued.get(tp)
                if enqueued is not None and tp in consumer.assignment():
                    consumer.seek(tp, enqueued)

    def _measure(self, consumer: Any) -> bool:
        """Lag, the age of each partition's oldest undelivered record and stall warnings, at most once a
        second; the dead-letter topic's backlog every few seconds. True when a partition has records waiting
        on the broker that this consumer stopped fetching (then the caller rebuilds the consumer)."""
        now = time.monotonic()
        if now - self._dlq_measured >= DLQ_INTERVAL_SECONDS:
            self._dlq_measured = now
            waiting = self._dlq_backlog.measure()
            if waiting is not None:
                metrics.DEAD_LETTERS_WAITING.labels(self.dead_letter_topic).set(waiting)
        if now - self._lag_measured < LAG_INTERVAL_SECONDS:
            return False
        self._lag_measured = now
        assigned = list(consumer.assignment())
        ends: dict[TopicPartition, int] = {}
        if assigned:
            try:  # asked of the broker: a partition not fetched any more has no fresh high watermark
                ends = consumer.end_offsets(assigned, timeout_ms=1_000)
            except Exception:
                ends = {tp: high for tp in assigned if (high := consumer.highwater(tp)) is not None}
        lag = 0
        stuck = False
        paused = consumer.paused()
        for tp in assigned:
            end = ends.get(tp)
            handled_up_to = self._next.get(tp)
            waiting_on_broker = 0
            if end is not None:
                start = handled_up_to if handled_up_to is not None else self._committed(consumer, tp)
                if start is not None:
                    waiting_on_broker = max(0, end - start)
            lag += waiting_on_broker
            with self._workers_lock:
                worker = self._workers.get(tp)
            in_hand = worker.backlog() if worker is not None else 0
            oldest = worker.oldest() if worker is not None else None
            if in_hand == 0 and waiting_on_broker > 0:
                since = self._behind_since.setdefault(tp, now)
            else:
                self._behind_since.pop(tp, None)
                since = now
            if oldest is not None and oldest.timestamp is not None and oldest.timestamp >= 0:
                age = max(0.0, time.time() - oldest.timestamp / 1000)
            else:
                age = now - since
            metrics.EVENTSOURCE_OLDEST_AGE.labels(self.topic, str(tp.partition)).set(age)
            if waiting_on_broker == 0 and in_hand == 0:
                self._warned_at.pop(tp, None)
                continue
            progress = max(worker.progress_at if worker is not None else 0.0, since)
            quiet_for = now - progress
            if quiet_for < self.stall_warning_seconds:
                continue
            if now - self._warned_at.get(tp, 0.0) >= self.stall_warning_seconds:
                self._warned_at[tp] = now
                self._warn_stalled(tp, quiet_for, waiting_on_broker, in_hand, worker, tp in paused)
            if in_hand == 0 and tp not in paused:
                stuck = True
        metrics.EVENTSOURCE_LAG.labels(self.topic).set(lag)
        if stuck:
            with self._stats_lock:
                self.stats.rejoins += 1
            log.warning(
                "%s: records wait that the consumer does not fetch; rebuilding the consumer", self.topic
            )
        return stuck

    def _committed(self, consumer: Any, tp: TopicPartition) -> int | None:
        try:
            committed = consumer.committed(tp, timeout_ms=1_000)
        except Exception:
            return None
        return int(committed) if committed is not None else None

    def _warn_stalled(
        self,
        tp: TopicPartition,
        quiet_for: float,
        waiting: int,
        in_hand: int,
        worker: _Worker | None,
        paused: bool,
    ) -> None:
        metrics.EVENTSOURCE_STALLS.labels(self.topic).inc()
        failing = worker.failing if worker is not None else ""
        if failing:
            why = f"the sink keeps failing ({failing}); retrying, the partition waits"
        elif in_hand:
            why = "the sink is slow" + (" (fetching paused: backlog full)" if paused else "")
        else:
            why = "the consumer is not fetching them"
        log.warning(
            "%s partition %d: nothing moved for %.0f s while %d records wait "
            "(%d in hand, first offset %s): %s",
            tp.topic,
            tp.partition,
            quiet_for,
            max(waiting, in_hand),
            in_hand,
            self._next.get(tp, "unknown"),
            why,
        )

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
        budget = self._deadline if self._stopping.is_set() else time.monotonic() + self.timeout_seconds + 3.0
        for worker in workers:  # leaves time within stop()'s budget to commit and to leave the group
            worker.thread.join(max(0.0, budget - time.monotonic() - 3.0))
        self._commit(consumer, pending, timeout=max(0.5, budget - time.monotonic() - 2.0))

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
        self._assigned.clear()
        self._next.clear()
        self._enqueued.clear()
        self._behind_since.clear()

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
                self._enqueued.pop(tp, None)
                self._behind_since.pop(tp, None)
                worker = self._workers.pop(tp, None)
                if worker is not None:
                    worker.retire()
                    self._retired[tp] = worker
        self._assigned.clear()

    # -- one record (on its partition's worker thread) -------------------------------------------------------

    def _handle(self, record: Any, worker: _Worker) -> bool:
        """Deliver or dead-letter one record; False when cancelled before either happened."""
        cancel = worker.cancel
        headers = list(record.headers or [])
        event = event_of(
            record.topic, record.partition, record.offset, record.key, record.value, headers, record.timestamp
        )

        def failed(attempt: int, reason: str) -> None:
            worker.failing = f"{reason}, attempt {attempt}"
            metrics.EVENTSOURCE_FAILED_ATTEMPTS.labels(record.topic).inc()
            if attempt == 1:
                budget = "for ever" if self.retry_for is None else f"for up to {self.retry_for / 60:g} min"
                log.warning(
                    "%s partition %d offset %d (%s): %s; retrying %s while the partition waits",
                    record.topic,
                    record.partition,
                    record.offset,
                    event.id,
                    reason,
                    budget,
                )

        outcome = self.sender.send(self.sink, event, cancel, on_failure=failed)
        with self._stats_lock:
            self.stats.failed_attempts += outcome.attempts - int(outcome.delivered)
            self.stats.delivered += int(outcome.delivered)
        if outcome.delivered:
            if outcome.attempts > 1:
                log.info(
                    "%s partition %d offset %d delivered after %d attempts",
                    record.topic,
                    record.partition,
                    record.offset,
                    outcome.attempts,
                )
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
        letter = deadletters.DeadLetter(
            reason, record.topic, record.partition, record.offset, record.key, record.value, headers
        )
        tries = 0
        while True:
            tries += 1
            try:
                envelopes = self.dead_letters.publish([letter])
                break
            except TransientError as exc:  # the broker is away: the partition waits for it
                log.warning(
                    "dead-lettering to %s failed (will retry): %s", self.dead_letter_topic, exc.message
                )
                if cancel.wait(_RECONNECT.delay(tries)):
                    return False
        with self._stats_lock:
            self.stats.dead_lettered += 1
            self.stats.envelopes += envelopes
        metrics.EVENTSOURCE_DEAD_LETTERED.labels(record.topic).inc()
        return True


def _minutes(text: str) -> float | None:
    minutes = float(text)
    if minutes < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return None if minutes == 0 else minutes * 60


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a broker")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True, help="the consumer group")
    parser.add_argument("--sink", required=True, help="the CloudEvent function's URL")
    parser.add_argument(
        "--retry-minutes",
        type=_minutes,
        default=DEFAULT_RETRY_MINUTES * 60,
        dest="retry_for",
        help="minutes a transient failure is retried before it is dead-lettered "
        f"(default {DEFAULT_RETRY_MINUTES:g}; 0: for ever)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help="at most this many retries as well (default: no count limit)",
    )
    parser.add_argument("--backoff-delay", type=float, default=0.2, help="seconds before the first retry")
    parser.add_argument(
        "--backoff-max", type=float, default=10.0, help="longest wait between retries, seconds"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the sink's answer")
    parser.add_argument("--max-backlog", type=int, default=500, help="records waiting per partition, at most")
    parser.add_argument(
        "--stall-warning-seconds",
        type=float,
        default=60.0,
        help="warn when records wait and nothing moved for this long",
    )
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
        retry_for=args.retry_for,
        backoff_delay=args.backoff_delay,
        backoff_max=args.backoff_max,
        timeout_seconds=args.timeout,
        max_backlog=args.max_backlog,
        stall_warning_seconds=args.stall_warning_seconds,
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
