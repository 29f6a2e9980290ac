"""OrdersService on in-memory fakes: stored, duplicate, conflict, invalid; one store per batch with a
one-by-one fallback that isolates the order the database refuses; transient failures; the cache."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest

from functions.orders import consumer
from functions.orders.domain import EncodedOrder, OrderNotFoundError, Outcome
from functions.orders.service import cache_key
from shared_lib.cache import InProcessCache, encode
from shared_lib.errors import TransientError
from tests.unit.orders.fakes import NOW, SAMPLE_BYTES, Viewer, record, sample

pytestmark = pytest.mark.function("ingest_worker")
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
    # the bytes cached on ingest (the order's canonical JSON, encoded once) are what the cache's encode writes
    assert viewer.cache.get_encoded(cache_key(UID)) == encode(stored.to_json())
    assert viewer.counters.snapshot() == {"stored": 1, "duplicate": 2}


def test_an_orders_encoding_is_its_canonical_json_and_its_fingerprint() -> None:
    order = consumer.parse(record(sample(entry="Ünïcode ✓")), NOW, timedelta(minutes=5)).order
    assert order is not None
    encoded = EncodedOrder.of(order)
    assert encoded.data == encode(order.to_json())  # the cache's bytes, non-ASCII kept as UTF-8
    assert "Ünïcode ✓".encode() in encoded.data
    assert encoded.fingerprint == order.fingerprint == hashlib.sha256(encoded.data).hexdigest()


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
    assert list(json.loads(body)) == list(sample())  # the sample's keys, in its order


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


# --- the tier in this process, in front of the shared cache ----------------------------------------------


def tiered(entries: int = 100, max_bytes: int | None = None) -> Viewer:
    """A viewer whose service keeps found orders in this process too; the shared cache left cold."""
    return Viewer(warm_cache=False, local=InProcessCache(entries, name="orders-local", max_bytes=max_bytes))


def test_a_found_order_is_served_from_this_process_after_its_first_read() -> None:
    viewer = tiered()
    outcomes(viewer, SAMPLE_BYTES)
    body, hit = viewer.service.get(UID)
    assert (hit, viewer.orders.reads) == (False, 1)
    assert body == encode(viewer.orders.orders[UID].to_json())  # the JSON a hit of the shared cache holds
    viewer.cache.delete(cache_key(UID))  # neither the shared cache …
    viewer.orders.down = True  # … nor the database can answer it now
    assert viewer.service.get(UID) == (body, True)
    assert viewer.orders.reads == 1


def test_a_hit_in_the_shared_cache_is_kept_in_this_process_as_the_same_bytes() -> None:
    viewer = Viewer(local=InProcessCache(name="orders-local"))  # warm: ingest fills the shared cache only
    outcomes(viewer, SAMPLE_BYTES)
    assert viewer.local is not None and viewer.local.size == (0, 0)
    shared = viewer.cache.get_encoded(cache_key(UID))
    assert viewer.service.get(UID) == (shared, True)
    assert viewer.local.get_encoded(cache_key(UID)) == shared
    assert viewer.orders.reads == 0


def test_an_unknown_order_is_never_kept_in_this_process_and_is_served_once_stored() -> None:
    viewer = tiered()
    for _ in range(2):
        with pytest.raises(OrderNotFoundError):
            viewer.service.get(UID)
    assert viewer.local is not None and viewer.local.size == (0, 0)
    assert viewer.orders.reads == 2  # each not-found read asked the database again
    outcomes(viewer, SAMPLE_BYTES)  # the order arrives (the shared cache is not warmed: warm_cache off)
    body, hit = viewer.service.get(UID)
    assert (json.loads(body)["order_uid"], hit) == (UID, False)
    assert viewer.service.get(UID) == (body, True)


def test_the_tier_in_this_process_keeps_its_bounds_dropping_the_least_recently_read() -> None:
    uids = [f"bound{i}" for i in range(6)]
    viewer = tiered(entries=3)
    outcomes(viewer, *[sample(order_uid=uid) for uid in uids])
    for uid in uids[:3]:
        viewer.service.get(uid)
    viewer.service.get(uids[0])  # read again: the most recent now
    viewer.service.get(uids[3])  # one over the bound: uids[1], the least recently read, goes
    assert viewer.local is not None
    kept = [uid for uid in uids if viewer.local.get_encoded(cache_key(uid)) is not None]
    assert kept == [uids[0], uids[2], uids[3]]

    one = len(encode(viewer.orders.orders[uids[0]].to_json()))
    viewer = tiered(entries=100, max_bytes=2 * one + one // 2)  # room for two orders' bytes, not three
    outcomes(viewer, *[sample(order_uid=uid) for uid in uids])
    for uid in uids:
        assert json.loads(viewer.service.get(uid)[0])["order_uid"] == uid
    assert viewer.local is not None
    entries, size = viewer.local.size
    assert entries == 2 and size <= 2 * one + one // 2
    assert [uid for uid in uids if viewer.local.get_encoded(cache_key(uid)) is not None] == uids[-2:]


def test_an_order_larger_than_the_tier_is_served_and_not_kept() -> None:
    viewer = tiered(max_bytes=100)
    outcomes(viewer, SAMPLE_BYTES)
    assert viewer.service.get(UID)[1] is False
    assert viewer.local is not None and viewer.local.size == (0, 0)
    assert viewer.service.get(UID)[1] is True  # from the shared cache, which holds it
