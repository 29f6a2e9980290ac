"""The ingest worker against the real broker and database: valid, duplicate, conflicting and every invalid
kind; the dead-letter topic holds exactly the refused records, each with its original bytes, its reason and
its source offset; a poison record first in a partition does not hold up the ones after it; the database
down, an oversized record, JSON Python cannot hold; and the worker as its own process (as the dev server and
the cluster's Deployment run it): its probes and metrics, SIGTERM, and a restart going on where it left off.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from functions.devtools import orders_generator as generator
from functions.orders import bootstrap
from shared_lib.devtools.ports import free_port
from shared_lib.postgres import ConnectionPool
from tests.fixtures.kafka import MakeTopic
from tests.integration.orders.conftest import Apps, read_topic
from tests.polling import wait_for as wait_until

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.integration, pytest.mark.function("ingest_worker")]


@pytest.fixture
def workload() -> generator.Plan:
    """Valid orders, a duplicate and a conflict of the first, and one record of every invalid kind; the first
    record of the first key is a poison (malformed JSON under the key of valid orders that follow it)."""
    rng = random.Random(uuid.uuid4().int)
    plan = generator.Plan()
    valid = [generator.make_order(rng) for _ in range(12)]
    poison_key = valid[0]["order_uid"]
    plan.records.append((poison_key, b'{"order_uid": "' + poison_key.encode() + b'", ', "malformed_json"))
    for order in valid:
        plan.records.append((order["order_uid"], generator.encode(order), "valid"))
    plan.records.append((valid[0]["order_uid"], generator.encode(valid[0]), "duplicate"))
    changed = json.loads(generator.encode(valid[1]))
    changed["delivery"]["address"] = "Somewhere else 1"
    plan.records.append((valid[1]["order_uid"], generator.encode(changed), "conflict"))
    for kind in generator.INVALID_KINDS:
        key, value = generator.invalid(kind, rng)
        plan.records.append((key, value, kind))
    return plan


def send(bootstrap_servers: str, topic: str, plan: generator.Plan) -> dict[bytes, tuple[int, int]]:
    """Produce in order; returns value -> (partition, offset) for the refused records."""
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    where: dict[bytes, tuple[int, int]] = {}
    try:
        for key, value, kind in plan.records:
            metadata = producer.send(topic, key=key.encode(), value=value).get(timeout=30)
            if kind not in ("valid", "duplicate"):
                where[value] = (metadata.partition, metadata.offset)
    finally:
        producer.close(5)
    return where


def stored(pool: ConnectionPool, uids: set[str]) -> int:
    return int(
        pool.run("SELECT count(*) FROM orders WHERE order_uid = ANY(CAST(:u AS text[]))", u=list(uids))[0][0]
    )


def check_outcome(
    kafka_bootstrap: str, topic: str, pool: ConnectionPool, plan: generator.Plan, where: dict[bytes, Any]
) -> None:
    wait_until(lambda: stored(pool, plan.valid_uids) == len(plan.valid_uids), timeout=60)
    letters = read_topic(kafka_bootstrap, f"{topic}.dlq", expected=len(where), timeout=30)
    assert sorted(r.value for r in letters) == sorted(where)  # exactly the refused ones, once each
    kinds = {value: kind for _, value, kind in plan.records}
    for letter in letters:
        headers = {name: value.decode() for name, value in letter.headers}
        partition, offset = where[letter.value]
        assert headers["source_offset"] == str(offset)
        assert headers["source_partition"] == str(partition)
        assert headers["source_topic"] == topic
        expected = "conflict: " if kinds[letter.value] == "conflict" else "invalid: "
        assert headers["reason"].startswith(expected), (kinds[letter.value], headers["reason"])
    # the conflict changed nothing: the first body is the one stored
    conflict = next(json.loads(v) for _, v, k in plan.records if k == "conflict")
    address = pool.run("SELECT address FROM deliveries WHERE order_uid = :u", u=conflict["order_uid"])
    assert address[0][0] != "Somewhere else 1"


@pytest.fixture
def configured(orders_apps: Apps, kafka_bootstrap: str, fresh_topic: MakeTopic) -> Iterator[tuple[str, Apps]]:
    topic = fresh_topic(3)
    env = {
        "ORDERS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "ORDERS_TOPIC": topic,
        "ORDERS_DEAD_LETTER_TOPIC": f"{topic}.dlq",
        "ORDERS_CONSUMER_GROUP": f"test-{uuid.uuid4().hex[:8]}",
        "ORDERS_BATCH_SIZE": "7",  # several batches, each mixing good and bad records
    }

    def build(**more: str) -> Any:
        return orders_apps(**env, **more)

    yield topic, build


def test_the_batch_worker_stores_the_valid_and_dead_letters_exactly_the_refused(
    configured: tuple[str, Callable[..., Any]],
    kafka_bootstrap: str,
    orders_pool: ConnectionPool,
    workload: generator.Plan,
) -> None:
    topic, build = configured
    build()
    where = send(kafka_bootstrap, topic, workload)
    stop = threading.Event()
    stream = bootstrap.order_stream()
    worker = threading.Thread(target=bootstrap.ingest_forever, args=(stop, stream), daemon=True)
    worker.start()
    try:
        check_outcome(kafka_bootstrap, topic, orders_pool, workload, where)
        counts = bootstrap.counters().snapshot()
        assert counts["stored"] == len(workload.valid_uids)
        assert counts["duplicate"] == 1 and counts["conflict"] == 1
    finally:
        stop.set()
        worker.join(15)
    assert not worker.is_alive()


def test_the_database_down_holds_the_batch_and_nothing_is_lost(
    configured: tuple[str, Callable[..., Any]],
    kafka_bootstrap: str,
    orders_pool: ConnectionPool,
    orders_dsn: str,
) -> None:
    topic, build = configured
    build(ORDERS_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/orders")
    rng = random.Random()
    plan = generator.Plan(
        [
            (o["order_uid"], generator.encode(o), "valid")
            for o in (generator.make_order(rng) for _ in range(5))
        ]
    )
    send(kafka_bootstrap, topic, plan)
    stop = threading.Event()
    stream = bootstrap.order_stream()
    down = threading.Thread(target=bootstrap.ingest_forever, args=(stop, stream), daemon=True)
    down.start()
    wait_until(stream.assigned.is_set, timeout=30)
    stop.wait(1.0)
    stop.set()
    down.join(15)
    assert stored(orders_pool, plan.valid_uids) == 0
    # the database is back: the same group resumes from the uncommitted offsets
    build(ORDERS_DATABASE_URL=orders_dsn)
    stop = threading.Event()
    worker = threading.Thread(target=bootstrap.ingest_forever, args=(stop, None), daemon=True)
    worker.start()
    try:
        wait_until(lambda: stored(orders_pool, plan.valid_uids) == 5, timeout=60)
    finally:
        stop.set()
        worker.join(15)


def test_a_near_limit_record_is_dead_lettered_as_an_envelope_and_valid_orders_after_it_are_stored(
    configured: tuple[str, Callable[..., Any]],
    kafka_bootstrap: str,
    orders_pool: ConnectionPool,
) -> None:
    """A 1,048,450-byte record the broker accepted cannot be copied whole to orders.dlq (its bytes plus the
    dead-letter headers are over the size limit): an envelope goes instead, and the partition moves on."""
    topic, build = configured
    build()
    rng = random.Random()
    valid = [generator.make_order(rng) for _ in range(4)]
    key = valid[0]["order_uid"].encode()  # the same partition as the valid orders after it
    huge = b'{"order_uid": "' + b"x" * (1_048_450 - 17) + b'"}'
    assert len(huge) == 1_048_450
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=2 * 1024 * 1024)
    try:
        where = producer.send(topic, key=key, value=huge).get(timeout=30)
        for order in valid:
            producer.send(topic, key=key, value=generator.encode(order)).get(timeout=30)
    finally:
        producer.close(5)
    stop = threading.Event()
    worker = threading.Thread(target=bootstrap.ingest_forever, args=(stop, None), daemon=True)
    worker.start()
    try:
        uids = {o["order_uid"] for o in valid}
        wait_until(lambda: stored(orders_pool, uids) == len(uids), timeout=60)
        [letter] = read_topic(kafka_bootstrap, f"{topic}.dlq", expected=1)
    finally:
        stop.set()
        worker.join(15)
    headers = {name: value.decode() for name, value in letter.headers}
    assert headers["dead_letter_envelope"] == "1"
    assert headers["source_partition"] == str(where.partition)
    assert headers["source_offset"] == str(where.offset)
    body = json.loads(letter.value)
    assert body["reason"].startswith("invalid: ")
    assert body["source_topic"] == topic and body["value_size"] == len(huge)
    assert 0 < body["prefix_bytes"] <= 4096


def test_json_python_cannot_hold_is_dead_lettered_with_its_bytes_and_the_order_after_it_stored(
    configured: tuple[str, Callable[..., Any]], kafka_bootstrap: str, orders_pool: ConnectionPool
) -> None:
    """A record with a number of thousands of digits (no JSON decoder of Python holds it) goes to the same
    dead-letter topic with its key, bytes and offset and the reason, never dropped; the valid order after it
    under the same key is stored."""
    topic, build = configured
    build()
    order = generator.make_order(random.Random(uuid.uuid4().int))
    key = order["order_uid"].encode()
    unreadable = b'{"order_uid": "' + key + b'", "sm_id": ' + b"9" * 5000 + b"}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        first = producer.send(topic, key=key, value=unreadable).get(timeout=30)
        producer.send(topic, key=key, value=generator.encode(order)).get(timeout=30)
    finally:
        producer.close(5)
    stop = threading.Event()
    worker = threading.Thread(target=bootstrap.ingest_forever, args=(stop, None), daemon=True)
    worker.start()
    try:
        wait_until(lambda: stored(orders_pool, {order["order_uid"]}) == 1, timeout=60)
        [letter] = read_topic(kafka_bootstrap, f"{topic}.dlq", expected=1, timeout=30)
    finally:
        stop.set()
        worker.join(15)
    assert (letter.key, letter.value) == (key, unreadable)
    headers = {name: value.decode() for name, value in letter.headers}
    assert (headers["source_partition"], headers["source_offset"]) == (
        str(first.partition),
        str(first.offset),
    )
    assert headers["reason"] == "invalid: not JSON"
    assert bootstrap.counters().snapshot() == {"invalid": 1, "stored": 1}


def worker_get(port: int, path: str) -> tuple[int, bytes]:
    """(0, b"") while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()
    except OSError:
        return 0, b""


@contextlib.contextmanager
def worker_process(env: dict[str, str]) -> Iterator[int]:
    """The worker as its own process (`--port N`, as the cluster's Deployment runs it), its port for the body;
    then SIGTERM, which it must answer by exiting 0 (killed instead when the body failed)."""
    port = free_port()
    command = [sys.executable, "-m", "functions.orders.ingest_worker", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        yield port
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_worker_process_serves_its_probes_stops_on_sigterm_and_a_restart_goes_on_where_it_left_off(
    configured: tuple[str, Callable[..., Any]],
    kafka_bootstrap: str,
    orders_pool: ConnectionPool,
) -> None:
    """`python -m functions.orders.ingest_worker --port N`, as the cluster's Deployment runs it: orders
    stored, the invalid one dead-lettered, /healthz and /metrics; SIGTERM ends it with 0 after committing; a
    second process in the same group takes only what came since (nothing lost, no dead letter twice)."""
    topic, build = configured
    build()
    rng = random.Random(uuid.uuid4().int)
    before = [generator.make_order(rng) for _ in range(5)]
    after = [generator.make_order(rng) for _ in range(5)]
    _, invalid = generator.invalid(generator.INVALID_KINDS[0], rng)
    plan = generator.Plan([(o["order_uid"], generator.encode(o), "valid") for o in before])
    plan.records.append(("invalid-1", invalid, generator.INVALID_KINDS[0]))
    send(kafka_bootstrap, topic, plan)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # ORDERS_* as configured
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each process's own metrics
    with worker_process(env) as port:
        wait_until(lambda: stored(orders_pool, {o["order_uid"] for o in before}) == 5, timeout=60)
        read_topic(kafka_bootstrap, f"{topic}.dlq", expected=1, timeout=30)
        status, body = worker_get(port, "/healthz")
        health = json.loads(body)
        assert (status, health["status"]) == (200, "ok")
        assert health["last_pass_seconds_ago"] >= 0  # its loop went round, it decided
        status, body = worker_get(port, "/metrics")
        assert status == 200
        assert "shop_orders_ingested_total 5.0" in body.decode()
        assert worker_get(port, "/elsewhere")[0] == 404
    send(
        kafka_bootstrap,
        topic,
        generator.Plan([(o["order_uid"], generator.encode(o), "valid") for o in after]),
    )
    with worker_process(env) as port:
        every = {o["order_uid"] for o in before + after}
        wait_until(lambda: stored(orders_pool, every) == 10, timeout=60)
        wait_until(
            lambda: "shop_orders_ingested_total 5.0" in worker_get(port, "/metrics")[1].decode(), timeout=30
        )
    # the restart took only the new records: the invalid one was not dead-lettered a second time (both
    # processes have exited: the topic holds all they wrote)
    assert [r.value for r in read_topic(kafka_bootstrap, f"{topic}.dlq", expected=1)] == [invalid]
