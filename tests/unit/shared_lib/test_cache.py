"""shared_lib.cache: one behavioural suite for every Cache (here InProcessCache; MemcachedCache runs it in
tests/integration/shared_lib/test_cache_memcached.py), and load_through's stampede protection.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymemcache.client.rendezvous import RendezvousHash

from shared_lib.cache import (
    Cache,
    EncodedCache,
    InProcessCache,
    encode,
    load_through,
    load_through_encoded,
    node_score,
    safe_key,
)
from shared_lib.errors import TransientError
from tests.locking import waited_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fresh() -> str:
    return f"test:{uuid.uuid4().hex}"


class CacheContract:
    """What every Cache must do. Subclasses give `cache` and `expire(seconds)` (lets that much time pass)."""

    @pytest.fixture
    def cache(self) -> Cache:
        raise NotImplementedError

    @pytest.fixture
    def expire(self) -> Callable[[float], None]:
        raise NotImplementedError

    ttl = 2.0

    def test_a_miss_is_none_and_a_set_value_comes_back_equal_and_fresh(self, cache: Cache) -> None:
        key = fresh()
        assert cache.get(key) is None
        value = {"name": "Чайник", "price": 3379, "tags": ["a", "b"], "ok": True, "ratio": 0.5}
        cache.set(key, value, self.ttl)
        first = cache.get(key)
        assert first == value
        first["name"] = "changed"  # a hit is a copy: changing it changes nothing cached
        assert cache.get(key) == value

    def test_set_replaces_and_delete_removes(self, cache: Cache) -> None:
        key = fresh()
        cache.set(key, 1, self.ttl)
        cache.set(key, [2], self.ttl)
        assert cache.get(key) == [2]
        cache.delete(key)
        assert cache.get(key) is None
        cache.delete(key)  # deleting what is absent is fine

    def test_get_many_returns_only_the_keys_found(self, cache: Cache) -> None:
        keys = [fresh() for _ in range(5)]
        for i, key in enumerate(keys[:3]):
            cache.set(key, {"i": i}, self.ttl)
        assert cache.get_many(keys) == {keys[0]: {"i": 0}, keys[1]: {"i": 1}, keys[2]: {"i": 2}}
        assert cache.get_many([]) == {}

    def test_add_stores_only_when_absent(self, cache: Cache) -> None:
        key = fresh()
        assert cache.add(key, "first", self.ttl) is True
        assert cache.add(key, "second", self.ttl) is False
        assert cache.get(key) == "first"

    def test_entries_expire_after_their_ttl(self, cache: Cache, expire: Callable[[float], None]) -> None:
        short, long = fresh(), fresh()
        cache.set(short, "short", self.ttl)
        cache.set(long, "long", 60)
        assert cache.add(fresh(), "x", self.ttl) is True
        assert cache.get(short) == "short"
        expire(self.ttl + 0.2)
        assert cache.get(short) is None
        assert cache.get(long) == "long"
        assert cache.add(short, "again", self.ttl) is True  # an expired key is absent for add too

    def test_unicode_and_very_long_keys_are_usable(self, cache: Cache) -> None:
        keys = [fresh() + " с пробелом", fresh() + "x" * 1000]
        for key in keys:
            cache.set(key, key[-3:], self.ttl)
        assert [cache.get(k) for k in keys] == [key[-3:] for key in keys]

    def test_none_cannot_be_cached(self, cache: Cache) -> None:
        with pytest.raises(ValueError):
            cache.set(fresh(), None, self.ttl)

    def test_encoded_values_are_the_stored_bytes_either_way(self, cache: EncodedCache) -> None:
        value = {"name": "Чайник", "price": 3379, "ok": True}
        key, other = fresh(), fresh()
        assert cache.get_encoded(key) is None
        cache.set(key, value, self.ttl)
        assert cache.get_encoded(key) == encode(value)
        cache.set_encoded(other, encode(value), self.ttl)
        assert (cache.get(other), cache.get_encoded(other)) == (value, encode(value))

    def test_set_many_encoded_stores_each_value_in_one_call(self, cache: EncodedCache) -> None:
        items = {fresh(): encode({"n": n, "name": "Чайник"}) for n in range(20)}
        items[fresh() + "x" * 1000] = encode("a key too long for memcached, hashed")
        cache.set_many_encoded(items, self.ttl)
        assert {key: cache.get_encoded(key) for key in items} == items
        assert cache.get(next(iter(items))) == {"n": 0, "name": "Чайник"}
        nothing = {fresh(): encode(1)}
        cache.set_many_encoded(nothing, 0)  # no lifetime: nothing stored, as set_encoded
        cache.set_many_encoded({}, self.ttl)
        assert cache.get_encoded(next(iter(nothing))) is None

    def test_load_through_encoded_loads_once_and_serves_the_stored_bytes(self, cache: EncodedCache) -> None:
        key, loads = fresh(), []

        def loader() -> dict[str, Any]:
            loads.append(1)
            return {"order_uid": "ä", "n": 1}

        data, hit = load_through_encoded(cache, key, self.ttl, loader)
        assert (data, hit) == (encode({"order_uid": "ä", "n": 1}), False)
        assert load_through_encoded(cache, key, self.ttl, loader) == (data, True)
        assert (cache.get(key), len(loads)) == ({"order_uid": "ä", "n": 1}, 1)
        nothing = fresh()
        assert load_through_encoded(cache, nothing, self.ttl, lambda: None) == (None, False)
        assert cache.get_encoded(nothing) is None  # a None from the loader is not cached


class TestInProcessCache(CacheContract):
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def cache(self, clock: FakeClock) -> Cache:
        return InProcessCache(clock=clock)

    @pytest.fixture
    def expire(self, clock: FakeClock) -> Callable[[float], None]:
        def advance(seconds: float) -> None:
            clock.now += seconds

        return advance

    def test_the_oldest_entries_go_beyond_max_entries(self) -> None:
        cache = InProcessCache(max_entries=2)
        for key in ("a", "b", "c"):
            cache.set(key, key, 60)
        assert cache.get_many(["a", "b", "c"]) == {"b": "b", "c": "c"}

    def test_get_many_encoded_hands_out_the_stored_bytes_of_live_entries(self, clock: FakeClock) -> None:
        cache = InProcessCache(clock=clock)
        cache.set("a", {"name": "Чай"}, 10)
        cache.set_encoded("b", b"[1]", 60)
        first = cache.get_many_encoded(["a", "b", "c"])
        assert first == {"a": encode({"name": "Чай"}), "b": b"[1]"}  # c: never stored
        assert cache.get_many_encoded(["a"])["a"] is first["a"]  # not decoded, nor copied
        clock.now += 10
        assert cache.get_many_encoded(["a", "b"]) == {"b": b"[1]"}  # a expired

    def test_a_zero_ttl_keeps_nothing(self) -> None:
        cache = InProcessCache()
        cache.set("k", 1, 0)
        cache.set_encoded("e", b"1", 0)
        assert (cache.get("k"), cache.get_encoded("e"), cache.size) == (None, None, (0, 0))

    def test_the_least_recently_read_go_first(self) -> None:
        cache = InProcessCache(max_entries=2)
        cache.set("a", "a", 60)
        cache.set("b", "b", 60)
        assert cache.get("a") == "a"  # read: now more recent than b
        cache.set("c", "c", 60)
        assert cache.get_many(["a", "b", "c"]) == {"a": "a", "c": "c"}

    def test_a_hit_takes_no_lock_and_still_makes_the_entry_the_most_recent(self, clock: FakeClock) -> None:
        """A hit is read without the cache's lock (under gevent a lock costs thousands of instructions): it
        answers while another thread holds the lock, and still counts as a read for the eviction order."""
        cache = InProcessCache(max_entries=2, clock=clock)
        cache.set_encoded("a", b"1", 60)
        cache.set_encoded("b", b"2", 60)
        answers: dict[str, object] = {}

        def reader() -> None:
            answers["a"] = cache.get_encoded("a")
            answers["many"] = cache.get_many_encoded(["a"])

        assert not waited_for(cache._lock, reader), "a hit waited for the cache's lock"
        assert answers == {"a": b"1", "many": {"a": b"1"}}
        cache.set_encoded("c", b"3", 60)  # a was read after b was stored: b goes first
        assert cache.get_many_encoded(["a", "b", "c"]) == {"a": b"1", "c": b"3"}
        clock.now += 60  # expired: the read drops them (under the lock)
        assert (cache.get_encoded("a"), cache.get_many_encoded(["c"]), cache.size) == (None, {}, (0, 0))

    def test_max_bytes_bounds_the_stored_values_and_a_value_over_it_is_not_kept(self) -> None:
        cache = InProcessCache(max_bytes=10)
        cache.set_encoded("a", b"1234", 60)
        cache.set_encoded("b", b"5678", 60)
        assert cache.size == (2, 8)
        cache.set_encoded("c", b"90", 60)  # 10 bytes: both stay
        cache.set_encoded("b", b"567", 60)  # replaced: its old length no longer counts
        assert cache.size == (3, 9)
        cache.set_encoded("d", b"xyz", 60)  # 12 bytes: the least recently used (a) goes
        assert (cache.get_encoded("a"), cache.size) == (None, (3, 8))
        cache.set_encoded("huge", b"x" * 11, 60)
        assert (cache.get_encoded("huge"), cache.size) == (None, (3, 8))
        cache.set("n", 7, 60)
        assert cache.size == (4, 9)
        cache.set("n", 1007, 60)  # 1 byte becomes 4: 12 bytes, so c (least recent) goes
        assert (cache.get_encoded("c"), cache.size) == (None, (3, 10))
        cache.delete("b")
        assert ([cache.get_encoded(k) for k in "bdn"], cache.size) == ([None, b"xyz", b"1007"], (2, 7))


def test_safe_keys_keep_plain_keys_and_hash_the_rest() -> None:
    assert safe_key("notifier:history:1") == "notifier:history:1"
    hashed = safe_key("с пробелом")
    assert hashed.startswith("sha256:") and hashed == safe_key("с пробелом")
    assert safe_key("x" * 1000) != safe_key("x" * 1001)


# --- load_through ---------------------------------------------------------------------------------------


class CountingLoader:
    """A loader that counts its calls, optionally slow or held until `release` is set, optionally failing."""

    def __init__(
        self,
        value: Any = None,
        delay: float = 0.0,
        error: BaseException | None = None,
        release: threading.Event | None = None,
    ) -> None:
        self.value = {"loaded": True} if value is None else value
        self.delay = delay
        self.error = error
        self.release = release
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        if self.release is not None:
            assert self.release.wait(60), "the load was never released"
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.value


class UnreachableCache(InProcessCache):
    """A cache that never answers: every read misses, every write is lost, add says "no answer"."""

    def get(self, key: str) -> Any | None:
        return None

    def get_many(self, keys: Any) -> dict[str, Any]:
        return {}

    def set(self, key: str, value: Any, ttl: float) -> None:
        return None

    def add(self, key: str, value: Any, ttl: float) -> bool | None:
        return None


class Spy:
    """Wraps a cache and counts what load_through asked of it: every get (a follower polls with gets) and
    every add of a load lock that succeeded (the caller took the lock)."""

    def __init__(self, inner: Cache) -> None:
        self.inner = inner
        self.gets = 0
        self.locks_taken = 0
        self.polled = threading.Event()  # set on the second get of one key: someone is polling
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            self.gets += 1
            if self.gets >= 2:
                self.polled.set()
        return self.inner.get(key)

    def get_many(self, keys: Any) -> dict[str, Any]:
        return self.inner.get_many(keys)

    def set(self, key: str, value: Any, ttl: float) -> None:
        self.inner.set(key, value, ttl)

    def add(self, key: str, value: Any, ttl: float) -> bool | None:
        taken = self.inner.add(key, value, ttl)
        if taken:
            with self._lock:
                self.locks_taken += 1
        return taken

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def run_concurrently(n: int, fn: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


class Followers(logging.Handler):
    """Counts the callers load_through decided to make wait for another caller's load in this process (it
    logs that decision at DEBUG); `all_in` is set once there are `n`. A loader held until then is shared by
    every caller: none can come after the load ended."""

    def __init__(self, n: int) -> None:
        super().__init__(logging.DEBUG)
        self.n = n
        self.seen = 0
        self.all_in = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().endswith("waiting for this process's load of it"):
            self.seen += 1  # emit runs under the handler's lock
            if self.seen >= self.n:
                self.all_in.set()


@contextlib.contextmanager
def followed_by(n: int) -> Iterator[Followers]:
    """A Followers(n) hearing shared_lib.cache's DEBUG records while the block runs."""
    logger = logging.getLogger("shared_lib.cache")
    handler, level = Followers(n), logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def followers() -> Iterator[Callable[[int], Followers]]:
    with contextlib.ExitStack() as stack:
        yield lambda n: stack.enter_context(followed_by(n))


def test_a_miss_loads_and_stores_and_the_next_call_is_a_hit() -> None:
    cache, loader = InProcessCache(), CountingLoader(value=("a", 1))
    assert load_through(cache, "k", 60, loader) == (["a", 1], False)  # as a hit would return it: JSON
    assert load_through(cache, "k", 60, loader) == (["a", 1], True)
    assert loader.calls == 1


def test_concurrent_misses_in_one_process_make_one_loader_call(
    followers: Callable[[int], Followers],
) -> None:
    cache, loader = InProcessCache(), CountingLoader(release=followers(19).all_in)  # held until 19 wait
    results = run_concurrently(20, lambda: load_through(cache, "k", 60, loader))
    assert loader.calls == 1
    assert all(value == {"loaded": True} for value, _hit in results)


def test_concurrent_misses_share_one_load_even_when_the_cache_does_not_answer(
    followers: Callable[[int], Followers],
) -> None:
    cache, loader = Spy(UnreachableCache()), CountingLoader(release=followers(9).all_in)
    results = run_concurrently(10, lambda: load_through(cache, "k", 60, loader, wait=600))
    assert loader.calls == 1
    assert all(r == ({"loaded": True}, False) for r in results)
    assert cache.gets == 10  # one look each: nobody polled for a lock the cache cannot hold


def test_a_loader_error_reaches_every_waiting_caller_and_the_next_call_loads_again(
    followers: Callable[[int], Followers],
) -> None:
    cache = InProcessCache()
    failing = CountingLoader(error=TransientError("the database is unavailable"), release=followers(4).all_in)
    results = run_concurrently(5, lambda: load_through(cache, "k", 60, failing))
    assert failing.calls == 1
    assert all(isinstance(r, TransientError) for r in results)
    loader = CountingLoader()
    assert load_through(cache, "k", 60, loader) == ({"loaded": True}, False)  # no lock left behind
    assert loader.calls == 1


def test_a_none_from_the_loader_is_returned_and_not_cached() -> None:
    cache = InProcessCache()
    assert load_through(cache, "k", 60, lambda: None) == (None, False)
    assert cache.get("k") is None


def test_another_replica_loading_the_key_is_waited_for_not_repeated() -> None:
    cache, loader = Spy(InProcessCache()), CountingLoader()
    assert cache.add("k:loading", "another replica", 60) is True  # another replica holds the load lock

    def other_replica_finishes() -> None:
        cache.polled.wait(30)  # once this caller is waiting for it
        cache.set("k", {"from": "the other replica"}, 60)
        cache.delete("k:loading")

    threading.Thread(target=other_replica_finishes).start()
    assert load_through(cache, "k", 60, loader, wait=600) == ({"from": "the other replica"}, True)
    assert loader.calls == 0


def test_a_slow_replica_holding_the_lock_is_given_up_on_after_the_wait() -> None:
    cache, loader = Spy(InProcessCache()), CountingLoader()
    cache.add("k:loading", "a stuck replica", 30)
    started = time.monotonic()
    assert load_through(cache, "k", 60, loader, wait=0.2) == ({"loaded": True}, False)
    assert time.monotonic() - started >= 0.2  # it waited for the other replica first …
    assert cache.gets >= 2 and cache.locks_taken == 1  # … polling, then loaded without the lock
    assert loader.calls == 1
    assert cache.get("k") == {"loaded": True}


def test_a_replica_that_gave_up_its_lock_without_a_value_lets_the_next_one_load() -> None:
    cache, loader = Spy(InProcessCache()), CountingLoader()
    cache.add("k:loading", "a replica whose load failed", 60)

    def other_replica_gives_up() -> None:
        cache.polled.wait(30)  # once this caller is waiting for it
        cache.delete("k:loading")

    threading.Thread(target=other_replica_gives_up).start()
    assert load_through(cache, "k", 60, loader, wait=600) == ({"loaded": True}, False)
    assert cache.locks_taken == 2  # the other replica's, then this caller's: it took the freed lock
    assert loader.calls == 1
    assert cache.get("k:loading") is None  # released after loading


def test_the_rendezvous_score_spreads_keys_and_a_removed_server_moves_only_its_own() -> None:
    nodes = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
    ring = RendezvousHash(list(nodes), hash_function=node_score)
    keys = [f"orders:order:f1:{i}" for i in range(3000)]
    placed = {key: ring.get_node(key) for key in keys}
    assert all(800 < list(placed.values()).count(node) < 1200 for node in nodes)
    assert placed == {key: ring.get_node(key) for key in keys}  # stable
    ring.remove_node(nodes[1])
    moved = {key for key in keys if ring.get_node(key) != placed[key]}
    assert moved == {key for key in keys if placed[key] == nodes[1]}
