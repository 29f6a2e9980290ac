"""OrdersService on in-memory fakes: stored, duplicate, conflict, invalid; one store per batch with a
one-by-one fallback that isolates the order the database refuses; transient failures; the cache."""

from __future__ import annotations

import pytest

from functions.orders import consumer
from functions.orders.domain import Outcome
from functions.orders.service import cache_key
from shared_lib.errors import TransientError
from tests.unit.orders.fakes import SAMPLE_BYTES, Viewer, record, sample

pytestmark = pytest.mark.function("ingest_order")
UID = "b563feb7b2b84b6test"


def outcomes(viewer: Viewer, *values: object) -> list[Outcome]:
    records = [record(v, offset=i) for i, v in enumerate(values)]
    return [v.outcome for v in consumer.ingest(viewer.service, records)]


def test_a_valid_order_is_stored_and_cached_and_a_redelivery_changes_nothing() -> None:
    viewer = Viewer()
    assert outcomes(viewer, SAMPLE_BYTES) == [Outcome.STORED]
    stored = viewer.orders.orders[UID]
    assert outcomes(viewer, SAMPLE_BYTES, SAMPLE_BYTES) == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert viewer.orders.orders[UID] is stored
    assert viewer.dead_letters.letters == []
    assert viewer.cache.get(cache_key(UID)) == stored.to_json()
    assert viewer.counters.snapshot() == {"stored": 1, "duplicate": 2}


def test_another_body_under_a_stored_uid_is_a_conflict_dead_lettered_never_an_overwrite() -> None:
    viewer = Viewer()
    outcomes(viewer, SAMPLE_BYTES)
    changed = sample(entry="WBXX")
    assert outcomes(viewer, changed) == [Outcome.CONFLICT]
    assert viewer.orders.orders[UID].entry == "WBIL"
    (letter,) = viewer.dead_letters.letters
    assert letter.reason == f"conflict: order_uid {UID} is stored with a different body"
    assert letter.record.value == record(changed).value


def test_in_one_batch_the_first_body_wins_a_resend_is_a_duplicate_another_body_a_conflict() -> None:
    viewer = Viewer()
    result = outcomes(viewer, SAMPLE_BYTES, SAMPLE_BYTES, sample(entry="WBXX"), b"nope")
    assert result == [Outcome.STORED, Outcome.DUPLICATE, Outcome.CONFLICT, Outcome.INVALID]
    assert viewer.orders.batches == [1]  # distinct uids only, one store for the batch
    assert [letter.record.offset for letter in viewer.dead_letters.letters] == [2, 3]


def test_a_batch_is_one_store_and_a_refused_order_is_isolated_one_by_one() -> None:
    viewer = Viewer()
    values = [sample(order_uid=f"o{i}") for i in range(5)]
    for value in values:
        value["payment"]["transaction"] = value["order_uid"]
    viewer.orders.refuse = {"o2"}
    result = outcomes(viewer, *values)
    assert result == [Outcome.STORED] * 2 + [Outcome.INVALID] + [Outcome.STORED] * 2
    assert viewer.orders.batches == [5, 1, 1, 1, 1, 1]
    assert sorted(viewer.orders.orders) == ["o0", "o1", "o3", "o4"]
    (letter,) = viewer.dead_letters.letters
    assert letter.record.offset == 2 and "refused" in letter.reason


def test_the_database_down_raises_so_the_batch_comes_again_and_nothing_is_dead_lettered() -> None:
    viewer = Viewer()
    viewer.orders.down = True
    with pytest.raises(TransientError):
        outcomes(viewer, SAMPLE_BYTES, b"nope")
    assert viewer.dead_letters.letters == []
    viewer.orders.down = False
    assert outcomes(viewer, SAMPLE_BYTES, b"nope") == [Outcome.STORED, Outcome.INVALID]


def test_the_dead_letter_topic_down_raises_and_the_redelivery_changes_nothing_stored() -> None:
    viewer = Viewer()
    viewer.dead_letters.down = True
    with pytest.raises(TransientError):
        outcomes(viewer, SAMPLE_BYTES, b"nope")
    viewer.dead_letters.down = False
    assert outcomes(viewer, SAMPLE_BYTES, b"nope") == [Outcome.DUPLICATE, Outcome.INVALID]
    assert len(viewer.dead_letters.letters) == 1


def test_get_is_a_miss_then_a_hit_and_reads_the_database_once() -> None:
    viewer = Viewer(warm_cache=False)
    outcomes(viewer, SAMPLE_BYTES)
    body, hit = viewer.service.get(UID)
    assert (hit, viewer.orders.reads) == (False, 1)
    again, hit = viewer.service.get(UID)
    assert (again, hit, viewer.orders.reads) == (body, True, 1)
    assert list(body) == list(sample())  # the sample's keys, in its order


def test_a_warm_cache_makes_the_first_read_a_hit() -> None:
    viewer = Viewer()
    outcomes(viewer, SAMPLE_BYTES)
    assert viewer.service.get(UID)[1] is True
    assert viewer.orders.reads == 0


def test_an_unknown_order_is_not_found_and_not_cached() -> None:
    from functions.orders.domain import OrderNotFoundError

    viewer = Viewer()
    for _ in range(2):
        with pytest.raises(OrderNotFoundError):
            viewer.service.get("unknown")
    assert viewer.orders.reads == 2


def test_recent_lists_the_newest_first() -> None:
    viewer = Viewer()
    values = [sample(order_uid=f"r{i}") for i in range(10)]
    outcomes(viewer, *values)
    assert [s.order_uid for s in viewer.service.recent()] == [f"r{i}" for i in range(9, 1, -1)]
