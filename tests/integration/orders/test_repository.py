"""PgOrderRepository on real PostgreSQL, and the service's batch fallback against it: an order round-trips
exactly, redeliveries and conflicts are told apart by fingerprint, a refused order is isolated."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import timedelta

import pytest

from functions.orders import consumer
from functions.orders.adapters.postgres import PgOrderRepository
from functions.orders.domain import EncodedOrder, Order, OrderRejectedError, Outcome
from functions.orders.service import OrdersService
from shared_lib.cache import InProcessCache
from shared_lib.counters import InProcessCounters
from shared_lib.devtools.ports import free_port
from shared_lib.errors import TransientError
from shared_lib.postgres import ConnectionPool
from tests.unit.orders.fakes import NOW, SAMPLE_BYTES, RecordingDeadLetters, record, sample

pytestmark = [pytest.mark.integration, pytest.mark.function("ingest_worker")]


def order(value: object) -> Order:
    submission = consumer.parse(record(value), NOW, timedelta(minutes=5))
    assert submission.order is not None, submission.problem
    return submission.order


def fresh(uid: str) -> Order:
    value = sample(order_uid=uid)
    value["payment"]["transaction"] = uid
    return order(value)


def unique() -> str:
    return f"t{random.getrandbits(48):012x}"


def test_an_order_round_trips_exactly(orders_pool: ConnectionPool) -> None:
    repository = PgOrderRepository(orders_pool)
    stored = fresh(unique())
    result = repository.store([EncodedOrder.of(stored)])
    assert result.inserted == {stored.order_uid}
    loaded = repository.get(stored.order_uid)
    assert loaded == stored
    expected = json.loads(SAMPLE_BYTES) | {"order_uid": stored.order_uid}
    expected["payment"]["transaction"] = stored.order_uid
    assert json.dumps(loaded.to_json()) == json.dumps(expected)
    assert repository.get("no-such-order") is None


def test_a_batch_stores_the_new_and_reports_the_stored_fingerprints(orders_pool: ConnectionPool) -> None:
    repository = PgOrderRepository(orders_pool)
    old = fresh(unique())
    repository.store([EncodedOrder.of(old)])
    new = [fresh(unique()) for _ in range(50)]
    changed = dataclasses.replace(old, entry="OTHER")
    result = repository.store([EncodedOrder.of(o) for o in [*new, changed]])
    assert result.inserted == {o.order_uid for o in new}
    assert result.fingerprints[old.order_uid] == old.fingerprint != changed.fingerprint
    assert repository.get(old.order_uid) == old
    assert repository.count([o.order_uid for o in new] + ["nope"]) == 50
    assert [s.order_uid for s in repository.recent(3)] == [o.order_uid for o in reversed(new[-3:])]


def test_a_row_the_database_refuses_is_an_order_rejected_error(orders_pool: ConnectionPool) -> None:
    repository = PgOrderRepository(orders_pool)
    bad = fresh(unique())
    bad = dataclasses.replace(bad, items=(dataclasses.replace(bad.items[0], sale=150),))
    with pytest.raises(OrderRejectedError, match="SQLSTATE 23514"):
        repository.store([EncodedOrder.of(bad)])
    assert repository.get(bad.order_uid) is None


def test_the_service_isolates_the_refused_order_of_a_batch(orders_pool: ConnectionPool) -> None:
    repository = PgOrderRepository(orders_pool)
    letters = RecordingDeadLetters()
    service = OrdersService(repository, letters, InProcessCache(), InProcessCounters(), clock=lambda: NOW)
    good = [fresh(unique()) for _ in range(4)]
    bad = fresh(unique())
    bad = dataclasses.replace(bad, items=(dataclasses.replace(bad.items[0], sale=150),))
    from functions.orders.domain import Submission

    batch = [
        Submission(record(b"x", offset=i), o) for i, o in enumerate([good[0], good[1], bad, good[2], good[3]])
    ]
    verdicts = service.ingest(batch)
    assert [v.outcome for v in verdicts] == [Outcome.STORED] * 2 + [Outcome.INVALID] + [Outcome.STORED] * 2
    assert repository.count([o.order_uid for o in good]) == 4
    assert [letter.record.offset for letter in letters.letters] == [2]


def test_the_database_down_is_a_transient_error() -> None:
    pool = ConnectionPool(f"postgresql://postgres@127.0.0.1:{free_port()}/orders", size=1)
    repository = PgOrderRepository(pool)
    with pytest.raises(TransientError):
        repository.store([EncodedOrder.of(fresh(unique()))])
    with pytest.raises(TransientError):
        repository.get("x")
