"""shared_lib.redrive against the real broker: dead letters the event source really wrote go back to their
topic with their key and original headers, are delivered once, and a second redrive changes nothing; a dry
run lists each letter and changes nothing; an envelope is listed, never republished."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from kafka import KafkaProducer

from shared_lib import deadletters, redrive
from shared_lib.eventsource import KafkaEventSource
from tests.fixtures.kafka import MakeTopic
from tests.integration.events.sink import Answer, Sink, numbered, produce, read_all, serving
from tests.polling import wait_for as eventually

pytestmark = pytest.mark.integration


def test_a_redrive_applies_each_dead_letter_once_and_a_second_changes_nothing(
    kafka_bootstrap: str, fresh_topic: MakeTopic, running: list[KafkaEventSource]
) -> None:
    topic = fresh_topic(2)
    dlq = f"{topic}.dlq"
    events = [numbered(topic, n % 2, n) for n in range(10)]
    rejected = {e.id for e in events if e.json()["n"] in (1, 4, 7)}
    fixed = {"yet": False}  # the function refuses three events until it is fixed
    sink = Sink(lambda e, _a: Answer(422) if e.id in rejected and not fixed["yet"] else Answer())
    produce(kafka_bootstrap, topic, [(e.json()["p"], e) for e in events])
    # an envelope among the letters, as the dead-letter publisher writes one for a record too large to copy
    value, headers = deadletters.envelope(
        deadletters.DeadLetter("too large", topic, 0, 99, b"k0", b"x" * 64, []), "MessageSizeTooLargeError"
    )
    with serving(sink) as url:
        source = KafkaEventSource(
            kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}", url, backoff_delay=0.01
        )
        running.append(source)
        source.start()
        eventually(lambda: source.stats.dead_lettered == 3, what="three dead letters")
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        producer.send(dlq, key=b"k0", value=value, headers=headers).get(timeout=10)
        producer.close(5)
        letters = read_all(kafka_bootstrap, dlq, expected=4)
        assert len(letters) == 4

        out = io.StringIO()
        dry = redrive.main(["--bootstrap", kafka_bootstrap, "--topic", dlq, "--dry-run"], stdout=out)
        listing = out.getvalue()
        assert dry == 0
        for letter in letters[:3]:
            info = deadletters.describe(letter.headers)
            assert f"partition={info.source_partition} offset={info.source_offset}" in listing
            assert "reason='permanent: HTTP 422 after 1 attempt'" in listing
        assert "envelope, not replayable" in listing
        assert "dry run: 3 to republish, 1 envelopes" in listing
        assert not any(e.id in rejected for e in sink.accepted)  # a dry run changes nothing

        fixed["yet"] = True
        first = redrive.redrive(kafka_bootstrap, dlq, out=lambda _line: None)
        assert (first.republished, first.envelopes) == (3, 1)
        eventually(lambda: {e.id for e in sink.accepted} >= rejected, what="the redriven events delivered")
        second = redrive.redrive(kafka_bootstrap, dlq, out=lambda _line: None)
        assert (second.republished, second.envelopes, second.listed) == (0, 0, 0)
        eventually(lambda: source.stats.delivered == 10, what="every event delivered")
    applied = Counter(e.id for e in sink.accepted)
    assert set(applied) == {e.id for e in events}
    assert all(count == 1 for count in applied.values()), applied  # each applied exactly once
    # republished with key and original headers, without the dead-letter annotations
    replayed = [r for r in read_all(kafka_bootstrap, topic, expected=13) if r.offset >= 5]
    assert len(replayed) == 3
    for record in replayed:
        names = {name for name, _ in record.headers}
        assert not names & set(deadletters.ANNOTATIONS)
        original = next(e for e in events if e.id == dict(record.headers)["ce_id"].decode())
        assert record.key == original.key and record.value == original.data


def test_the_redrive_command_runs_as_a_module(kafka_bootstrap: str, fresh_topic: MakeTopic) -> None:
    topic = fresh_topic(1)
    letter = deadletters.DeadLetter("permanent: HTTP 400 after 1 attempt", topic, 0, 3, b"k", b"{}", [])
    publisher = deadletters.KafkaDeadLetterPublisher(kafka_bootstrap, f"{topic}.dlq")
    publisher.publish([letter])
    publisher.close()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared_lib.redrive",
            "--bootstrap",
            kafka_bootstrap,
            "--topic",
            f"{topic}.dlq",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"source={topic} partition=0 offset=3" in result.stdout
    assert "reason='permanent: HTTP 400 after 1 attempt'" in result.stdout
