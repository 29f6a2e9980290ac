"""The event source under faults, on the real broker: a backlog of several times its max_backlog (also after a
restart), a sink down for longer than the old retry budget, a poison answer, a broker SIGKILLed and restarted
while records wait, a record too large to dead-letter whole. Nothing lost, nothing stuck, order kept."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from shared_lib.devtools.kafka_server import KafkaServer
from shared_lib.devtools.ports import free_ports
from shared_lib.events import Event
from shared_lib.eventsource import KafkaEventSource
from tests.fixtures.kafka import MakeTopic
from tests.integration.events.sink import (
    Answer,
    Sink,
    kafka_headers,
    numbered,
    produce,
    read_all,
    serving,
)
from tests.polling import wait_for as eventually

pytestmark = pytest.mark.integration


def source_for(
    bootstrap: str, topic: str, url: str, group: str | None = None, max_backlog: int = 500
) -> KafkaEventSource:
    """A source with the default retry policy (budget, no count limit) on a fast backoff schedule."""
    group = group or f"g-{uuid.uuid4().hex[:8]}"
    return KafkaEventSource(
        bootstrap,
        topic,
        group,
        url,
        max_backlog=max_backlog,
        backoff_delay=0.01,
        backoff_max=0.05,
        timeout_seconds=5,
    )


def started(sources: list[KafkaEventSource], source: KafkaEventSource) -> KafkaEventSource:
    sources.append(source)
    source.start()
    return source


def first_arrivals(sink: Sink, partition: int) -> list[int]:
    return list(dict.fromkeys(sink.accepted_numbers(partition)))


def dead_letter_count(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


def test_a_backlog_of_three_times_max_backlog_is_delivered_whole_also_after_a_restart(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    # partition 1 runs dry while partition 0 has three backlogs' worth: the client's drained record set of
    # partition 1 then sits in its one slot, which is what kept a paused partition 0 from ever resuming
    topic = fresh_topic(2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    max_backlog = 20
    sink = Sink(lambda _e, _a: Answer(delay=0.002))
    produce(kafka_bootstrap, topic, [(1, numbered(topic, 1, n)) for n in range(3)])
    produce(kafka_bootstrap, topic, [(0, numbered(topic, 0, n)) for n in range(3 * max_backlog)])
    with serving(sink) as url:
        first = started(running, source_for(kafka_bootstrap, topic, url, group, max_backlog))
        eventually(
            lambda: len(set(sink.accepted_ids())) == 3 * max_backlog + 3, what="the whole first backlog"
        )
        assert first_arrivals(sink, 0) == list(range(3 * max_backlog))
        # stopped mid-stream with a backlog of three times max_backlog waiting, then restarted
        more = 3 * max_backlog
        slow = Sink(lambda _e, _a: Answer(delay=0.01))
        first.stop(5)
        produce(
            kafka_bootstrap,
            topic,
            [(0, numbered(topic, 0, n)) for n in range(3 * max_backlog, 3 * max_backlog + more)],
        )
    with serving(slow) as url:
        second = started(running, source_for(kafka_bootstrap, topic, url, group, max_backlog))
        eventually(lambda: len(slow.accepted_numbers(0)) >= 10, what="some of the backlog after the restart")
        second.stop(5)
        third = started(running, source_for(kafka_bootstrap, topic, url, group, max_backlog))
        eventually(
            lambda: set(slow.accepted_numbers(0)) >= set(range(3 * max_backlog, 6 * max_backlog)),
            timeout=60,
            what="every record of the second backlog after two restarts",
        )
    assert first_arrivals(slow, 0) == list(range(3 * max_backlog, 6 * max_backlog))
    assert third.stats.dead_lettered == 0 and third.stats.rejoins == 0


def test_a_sink_down_longer_than_the_old_budget_loses_nothing_and_a_400_dead_letters_at_once(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    topic = fresh_topic(2)
    outage = 40  # failed answers in a row, well past the old budget of 6 attempts per record
    seen = {"failures": 0}

    def script(event: Event, _attempt: int) -> Answer:
        if event.json()["n"] == 5:
            return Answer(400)  # the function says: never
        if seen["failures"] < outage:
            seen["failures"] += 1
            return Answer(503)
        return Answer()

    sink = Sink(script)
    produce(kafka_bootstrap, topic, [(n % 2, numbered(topic, n % 2, n)) for n in range(12)])
    with serving(sink) as url:
        source = started(running, source_for(kafka_bootstrap, topic, url))
        eventually(lambda: len(sink.accepted_ids()) == 11, timeout=60, what="all but the poison delivered")
    assert seen["failures"] == outage
    assert first_arrivals(sink, 0) == [0, 2, 4, 6, 8, 10]
    assert first_arrivals(sink, 1) == [1, 3, 7, 9, 11]
    assert len(sink.accepted_ids()) == len(set(sink.accepted_ids()))  # each once
    [dead] = read_all(kafka_bootstrap, f"{topic}.dlq", expected=1)
    headers = dict(dead.headers)
    assert headers["reason"] == b"permanent: HTTP 400 after 1 attempt"
    assert headers["ce_id"] == f"{topic}-1-5".encode()
    assert sink.attempts[f"{topic}-1-5"] == 1
    eventually(lambda: source.stats.dead_lettered == 1, what="the poison counted")
    assert dead_letter_count(kafka_bootstrap, f"{topic}.dlq") == 1  # no transient failure dead-lettered


def test_a_record_too_large_to_dead_letter_whole_goes_as_an_envelope_and_the_stream_goes_on(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    from kafka import KafkaProducer

    topic = fresh_topic(1)
    big = near_limit_event(topic)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=2 * 1024 * 1024)
    try:
        for event in (numbered(topic, 0, 0), big, numbered(topic, 0, 2)):
            producer.send(
                topic, key=event.key, value=event.data, headers=kafka_headers(event), partition=0
            ).get(30)
    finally:
        producer.close(5)
    sink = Sink(lambda e, _a: Answer(413) if e.id == big.id else Answer())
    with serving(sink) as url:
        source = started(running, source_for(kafka_bootstrap, topic, url))
        eventually(
            lambda: sink.accepted_numbers() == [0, 2], timeout=60, what="the records around the big one"
        )
    [letter] = read_all(kafka_bootstrap, f"{topic}.dlq", expected=1)
    headers = dict(letter.headers)
    assert headers["dead_letter_envelope"] == b"1"
    assert headers["source_offset"] == b"1" and headers["source_partition"] == b"0"
    body = json.loads(letter.value)
    assert body["reason"] == "permanent: HTTP 413 after 1 attempt"
    assert body["source_topic"] == topic and body["source_offset"] == 1
    assert body["value_size"] == len(big.data) and body["size"] > len(big.data)
    assert base64.b64decode(body["prefix_base64"]) == big.data[: body["prefix_bytes"]]
    assert 0 < body["prefix_bytes"] <= 4096
    assert source.stats.envelopes == 1


BROKER_LIMIT = 1_048_588  # the broker's message.max.bytes (its default): a record batch at most this large


def near_limit_event(topic: str) -> Event:
    """An event whose record the broker accepts with ~50 bytes to spare: no dead-letter copy of it fits."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    def event(pad: int) -> Event:
        data = b'{"p": 0, "n": 1, "pad": "' + b"x" * pad + b'"}'
        return Event(id=f"{topic}-big", source="/test/events", type="test.numbered", data=data, key=b"k0")

    base = event(0)
    overhead = DefaultRecordBatchBuilder.estimate_size_in_bytes(base.key, base.data, kafka_headers(base))
    big = event(BROKER_LIMIT - 50 - overhead)
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(big.key, big.data, kafka_headers(big))
    assert BROKER_LIMIT - 60 <= size <= BROKER_LIMIT - 40, size
    return big


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaServer]:
    """A broker of this test's own, to SIGKILL without disturbing the session's."""
    from shared_lib.devtools.kafka_server import available

    ok, why = available()
    if not ok:
        pytest.fail(f"no Kafka broker can be started: {why}")
    port, controller = free_ports(2)
    server = KafkaServer(tmp_path / "kafka", port, controller)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_broker_sigkilled_and_restarted_while_records_wait_loses_nothing(
    own_broker: KafkaServer, running: list[KafkaEventSource]
) -> None:
    topic = f"kill-{uuid.uuid4().hex[:8]}"
    own_broker.create_topics({topic: 2, f"{topic}.dlq": 1})
    bootstrap = own_broker.bootstrap
    per_partition = 150
    sink = Sink(lambda _e, _a: Answer(delay=0.005))
    produce(bootstrap, topic, [(p, numbered(topic, p, n)) for n in range(per_partition) for p in (0, 1)])
    with serving(sink) as url:
        source = started(
            running,
            source_for(bootstrap, topic, url, max_backlog=20),
        )
        eventually(lambda: len(sink.accepted_ids()) >= 40, what="the stream under way")
        own_broker.kill()
        assert not own_broker.running()
        own_broker.start()
        produce(
            bootstrap,
            topic,
            [(p, numbered(topic, p, n)) for n in range(per_partition, 2 * per_partition) for p in (0, 1)],
        )
        eventually(
            lambda: all(set(sink.accepted_numbers(p)) >= set(range(2 * per_partition)) for p in (0, 1)),
            timeout=120,
            what="every record delivered after the broker's restart",
        )
    for p in (0, 1):
        assert first_arrivals(sink, p) == list(range(2 * per_partition))  # at least once, never out of order
    assert source.stats.dead_lettered == 0
