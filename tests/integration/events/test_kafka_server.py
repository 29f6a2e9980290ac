"""The local broker: topics created idempotently, and a stop and start that keeps topics, records and the
consumer groups' committed offsets (what `make run` and the restart tests rely on)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from shared_lib.devtools import kafka_server
from shared_lib.devtools.kafka_server import KafkaServer
from tests.fixtures.kafka import MakeTopic
from tests.integration.events.sink import read_all

pytestmark = pytest.mark.integration


def test_creating_existing_topics_again_is_fine(kafka_server: KafkaServer) -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    kafka_server.create_topics({name: 2})
    kafka_server.create_topics({name: 2, f"{name}.dlq": 1})
    consumer = KafkaConsumer(bootstrap_servers=kafka_server.bootstrap)
    try:
        assert consumer.partitions_for_topic(name) == {0, 1}
        assert consumer.partitions_for_topic(f"{name}.dlq") == {0}
    finally:
        consumer.close()


def test_a_restart_keeps_topics_records_and_committed_offsets(
    kafka_server: KafkaServer, fresh_topic: MakeTopic
) -> None:
    topic = fresh_topic(1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, acks="all")
    for n in range(3):
        producer.send(topic, value=f"r{n}".encode()).get(timeout=10)
    producer.close()
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_server.bootstrap, group_id=group, enable_auto_commit=False
    )
    consumer.assign([tp])
    consumer.commit({tp: OffsetAndMetadata(2, "", -1)})
    consumer.close(autocommit=False)

    try:
        kafka_server.stop()
        assert not kafka_server.running()
    finally:
        kafka_server.start()

    assert [r.value for r in read_all(kafka_server.bootstrap, topic, expected=3)] == [b"r0", b"r1", b"r2"]
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_server.bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        assert consumer.committed(tp) == 2
    finally:
        consumer.close(autocommit=False)


def test_availability_says_why_not(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "mvn" else f"/bin/{name}")
    ok, why = kafka_server.available()
    assert not ok and "mvn is not on PATH" in why
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    ok, why = kafka_server.available()
    assert not ok and "java is not on PATH" in why


def test_the_cli_resolves_the_jars_into_the_cache(capsys: pytest.CaptureFixture[str]) -> None:
    assert kafka_server.main(["resolve"]) == 0
    cache = Path(capsys.readouterr().out.strip())
    assert kafka_server.jars_cached(cache)
    assert any(cache.glob("kafka_2.13-4.1.1.jar")) and any(cache.glob("log4j-slf4j-impl-*.jar"))
    assert not any(cache.glob("*reload4j*"))
