"""KafkaEventSource against a real broker and a scripted sink: order per partition, retries, dead letters,
restarts of the source and of the broker. Each test has its own topics and consumer group."""

from __future__ import annotations

import uuid

import pytest

from shared_lib.devtools.kafka_server import KafkaServer
from shared_lib.events import Event, KafkaPublisher
from shared_lib.eventsource import KAFKA_EVENT_TYPE, KafkaEventSource
from tests.fixtures.kafka import MakeTopic
from tests.integration.events.sink import Answer, Sink, numbered, produce, read_all, serving
from tests.polling import wait_for as eventually

pytestmark = pytest.mark.integration


def source_for(
    bootstrap: str, topic: str, url: str, group: str | None = None, **settings: object
) -> KafkaEventSource:
    settings = {"retries": 3, "backoff_delay": 0.02, "backoff_max": 0.2, "timeout_seconds": 2.0, **settings}
    return KafkaEventSource(bootstrap, topic, group or f"g-{uuid.uuid4().hex[:8]}", url, **settings)  # type: ignore[arg-type]


def test_each_partition_in_order_while_partitions_proceed_independently(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    topic = fresh_topic(2)
    sink = Sink(lambda e, _a: Answer(delay=0.15) if e.json()["p"] == 0 else Answer())
    produce(kafka_bootstrap, topic, [(p, numbered(topic, p, n)) for n in range(6) for p in (0, 1)])
    with serving(sink) as url:
        source = source_for(kafka_bootstrap, topic, url)
        running.append(source)
        source.start()
        eventually(lambda: len(sink.accepted_ids()) == 12, what="all 12 records delivered")

    assert sink.accepted_numbers(partition=0) == list(range(6))
    assert sink.accepted_numbers(partition=1) == list(range(6))
    assert sink.max_in_flight[0] == 1 and sink.max_in_flight[1] == 1  # the next waits for the previous 2xx
    # the slow partition did not hold the other back: partition 1 was done before partition 0 half was
    assert sink.arrived_at[f"{topic}-1-5"] < sink.arrived_at[f"{topic}-0-2"]


def test_a_full_backlog_pauses_fetching_without_losing_or_reordering_records(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    topic = fresh_topic(1)
    sink = Sink(lambda _e, _a: Answer(delay=0.01))
    produce(kafka_bootstrap, topic, [(0, numbered(topic, 0, n)) for n in range(25)])
    with serving(sink) as url:
        source = source_for(kafka_bootstrap, topic, url, max_backlog=3)
        running.append(source)
        source.start()
        eventually(lambda: len(sink.accepted_ids()) == 25, what="all 25 records delivered")
    assert sink.accepted_numbers() == list(range(25))


def test_a_record_failing_twice_is_delivered_once_after_retries_and_in_order(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    topic = fresh_topic(1)
    sink = Sink(lambda e, attempt: Answer(503) if e.json()["n"] == 2 and attempt <= 2 else Answer())
    produce(kafka_bootstrap, topic, [(0, numbered(topic, 0, n)) for n in range(5)])
    with serving(sink) as url:
        source = source_for(kafka_bootstrap, topic, url)
        running.append(source)
        source.start()
        eventually(lambda: len(sink.accepted_ids()) == 5, what="all 5 records delivered")

    assert sink.accepted_numbers() == [0, 1, 2, 3, 4]
    assert sink.attempts[f"{topic}-0-2"] == 3
    assert source.stats.delivered == 5 and source.stats.dead_lettered == 0
    assert source.stats.failed_attempts == 2


def test_a_record_that_always_fails_is_dead_lettered_and_the_stream_moves_on(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    topic = fresh_topic(1)
    sink = Sink(lambda e, _a: Answer(500) if e.json()["n"] == 1 else Answer())
    poison = numbered(topic, 0, 1)
    produce(kafka_bootstrap, topic, [(0, numbered(topic, 0, 0)), (0, poison), (0, numbered(topic, 0, 2))])
    with serving(sink) as url:
        source = source_for(kafka_bootstrap, topic, url, retries=2)
        running.append(source)
        source.start()
        eventually(lambda: len(sink.accepted_ids()) == 2, what="the good records delivered")

    assert sink.accepted_numbers() == [0, 2]
    assert sink.attempts[poison.id] == 3  # the first attempt and two retries
    [dead] = read_all(kafka_bootstrap, f"{topic}.dlq", expected=1)
    headers = dict(dead.headers)
    assert dead.key == poison.key and dead.value == poison.data  # the original bytes
    assert headers["ce_id"] == poison.id.encode() and headers["ce_type"] == b"test.numbered"
    assert headers["reason"] == b"HTTP 500 after 3 attempts"
    assert headers["source_offset"] == b"1" and headers["source_partition"] == b"0"
    assert headers["source_topic"] == topic.encode()
    assert source.stats.dead_lettered == 1


def test_an_unreachable_sink_dead_letters_with_the_reason(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    from shared_lib.devtools.ports import free_port

    topic = fresh_topic(1)
    produce(kafka_bootstrap, topic, [(0, numbered(topic, 0, 0))])
    source = source_for(kafka_bootstrap, topic, f"http://127.0.0.1:{free_port()}/", retries=1)
    running.append(source)
    source.start()
    [dead] = read_all(kafka_bootstrap, f"{topic}.dlq", expected=1, timeout=15)
    assert dict(dead.headers)["reason"] == b"unreachable after 2 attempts"


def test_a_record_without_cloudevent_headers_is_wrapped_as_kafkasource_does(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    from kafka import KafkaProducer

    topic = fresh_topic(1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(topic, key=b"k", value=b'{"p": 0, "n": 7}', partition=0).get(timeout=10)
    producer.close()
    sink = Sink()
    with serving(sink) as url:
        source = source_for(kafka_bootstrap, topic, url)
        running.append(source)
        source.start()
        eventually(lambda: len(sink.accepted_ids()) == 1, what="the plain record delivered")

    [event] = sink.accepted
    assert event.id == "partition:0/offset:0"
    assert event.source == f"/kafka/{topic}"
    assert event.type == KAFKA_EVENT_TYPE
    assert event.data == b'{"p": 0, "n": 7}'


def test_a_new_source_in_the_same_group_resumes_at_the_first_record_not_handled(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    topic = fresh_topic(1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    sink = Sink(lambda _e, _a: Answer(delay=0.03))
    produce(kafka_bootstrap, topic, [(0, numbered(topic, 0, n)) for n in range(30)])
    with serving(sink) as url:
        first = source_for(kafka_bootstrap, topic, url, group)
        running.append(first)
        first.start()
        eventually(lambda: len(sink.accepted_ids()) >= 5, what="some records delivered")
        first.stop(5)
        handled = len(sink.accepted_ids())
        assert handled < 30, "the sink was too fast to stop the source mid-stream"

        second = source_for(kafka_bootstrap, topic, url, group)
        running.append(second)
        second.start()
        eventually(lambda: len(sink.accepted_ids()) >= 30, what="the rest delivered")

    # a graceful stop commits the record under way: nothing lost, nothing twice, the second starts right after
    assert sink.accepted_numbers() == list(range(30))
    assert second.stats.delivered == 30 - handled


def test_nothing_is_lost_when_the_broker_restarts_under_a_running_source(
    kafka_server: KafkaServer, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    topic = fresh_topic(2)
    bootstrap = kafka_server.bootstrap
    sink = Sink()
    publisher = KafkaPublisher(bootstrap, timeout_seconds=5.0)
    before = [numbered(topic, n % 2, n, key=f"k{n % 2}") for n in range(10)]
    after = [numbered(topic, n % 2, n, key=f"k{n % 2}") for n in range(10, 20)]
    with serving(sink) as url:
        source = source_for(bootstrap, topic, url)
        running.append(source)
        source.start()
        publisher.publish(topic, before)
        eventually(lambda: len(sink.accepted_ids()) >= 10, what="the first records delivered")
        try:
            kafka_server.stop()
            assert not kafka_server.running()
        finally:
            kafka_server.start()
        publish_when_back(publisher, topic, after)
        eventually(
            lambda: {e.id for e in sink.accepted} >= {e.id for e in before + after},
            timeout=30,
            what="every record delivered after the restart",
        )
    publisher.close()

    for key in ("k0", "k1"):
        seen = [e.json()["n"] for e in sink.accepted if e.key == key.encode()]
        firsts = list(dict.fromkeys(seen))  # duplicates are allowed (at least once), disorder is not
        assert firsts == sorted(firsts)


def publish_when_back(publisher: KafkaPublisher, topic: str, events: list[Event]) -> None:
    from shared_lib.errors import TransientError

    def published() -> bool:
        try:
            publisher.publish(topic, events)
            return True
        except TransientError:
            return False

    eventually(published, timeout=20, what="the broker accepting records again")
