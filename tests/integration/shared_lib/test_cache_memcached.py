"""MemcachedCache against a real memcached: the Cache suite, outages (stopped mid-test, a closed port), two
servers with one down, and load_through's stampede protection across "replicas" (separate clients).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from shared_lib.cache import Cache, MemcachedCache, load_through, parse_servers
from shared_lib.devtools.memcached_server import MemcachedServer
from shared_lib.devtools.ports import free_port
from tests.polling import wait_for
from tests.unit.shared_lib.test_cache import CacheContract, CountingLoader, Spy, run_concurrently

pytestmark = pytest.mark.integration


class TestMemcachedCache(CacheContract):
    @pytest.fixture
    def cache(self, memcached_address: str) -> Iterator[Cache]:
        cache = MemcachedCache(memcached_address)
        yield cache
        cache.close()

    @pytest.fixture
    def expire(self) -> Callable[[float], None]:
        return time.sleep  # memcached's clock ticks in whole seconds: real time has to pass

    def test_values_over_the_item_size_limit_are_a_miss_not_an_error(self, cache: Cache) -> None:
        key = f"test:{uuid.uuid4().hex}"
        cache.set(key, "x" * (2 * 1024 * 1024), 60)
        assert cache.get(key) is None


def test_a_prefix_keeps_two_caches_apart(memcached_address: str) -> None:
    key = f"test:{uuid.uuid4().hex}"
    cart, notifier = MemcachedCache(memcached_address, prefix="cart:"), MemcachedCache(memcached_address)
    cart.set(key, "cart's", 60)
    assert notifier.get(key) is None
    assert notifier.get("cart:" + key) == "cart's"


def test_servers_are_parsed_from_a_list() -> None:
    assert parse_servers("127.0.0.1:1, 10.0.0.2:11211 ,host") == [
        ("127.0.0.1", 1),
        ("10.0.0.2", 11211),
        ("host", 11211),
    ]
    with pytest.raises(ValueError):
        parse_servers("127.0.0.1:x")


def test_a_closed_port_is_a_miss_and_a_no_op() -> None:
    cache = MemcachedCache(f"127.0.0.1:{free_port()}")
    assert cache.get("k") is None
    cache.set("k", 1, 60)
    assert cache.add("k", 1, 60) is None  # "did not answer", not "it was there"
    assert cache.get_many(["k", "j"]) == {}
    cache.delete("k")


def test_memcached_stopped_mid_test_is_a_miss_and_comes_back(memcached_flap: MemcachedServer) -> None:
    cache = MemcachedCache(memcached_flap.address, retry_after=0.2)
    key = f"test:{uuid.uuid4().hex}"
    cache.set(key, "before", 60)
    assert cache.get(key) == "before"
    memcached_flap.stop()
    assert cache.get(key) is None  # the pooled connection is broken: a miss, not an error
    cache.set(key, "during", 60)
    assert cache.add(key, "during", 60) is None
    memcached_flap.start()  # empty again: memcached keeps nothing across a restart

    def stored_again() -> bool:  # once past retry_after, the server is asked again
        cache.set(key, "after", 60)
        return bool(cache.get(key) == "after")

    wait_for(stored_again, timeout=30, what="memcached used again after its restart")


def test_with_two_servers_one_down_only_its_share_of_keys_misses(memcached_address: str) -> None:
    cache = MemcachedCache([memcached_address, f"127.0.0.1:{free_port()}"])
    keys = [f"test:{uuid.uuid4().hex}" for _ in range(40)]
    for key in keys:
        cache.set(key, key, 60)
    kept = cache.get_many(keys)
    assert 0 < len(kept) < len(keys)  # rendezvous hashing sends some keys to the closed port
    assert all(cache.get(key) == key for key in kept)


def test_concurrent_misses_on_several_replicas_make_one_loader_call(memcached_address: str) -> None:
    # each "replica" has its own client, so only memcached's lock key can coordinate them
    replicas = [MemcachedCache(memcached_address) for _ in range(8)]
    key = f"test:{uuid.uuid4().hex}"
    loader = CountingLoader(delay=0.3)  # slow, so the replicas' misses overlap
    lock = threading.Lock()
    turn = iter(range(len(replicas)))

    def one_request() -> tuple[object, bool]:
        with lock:
            cache = replicas[next(turn)]
        return load_through(cache, key, 60, loader, wait=600)  # the others wait for its load, however slow

    results = run_concurrently(len(replicas), one_request)
    assert loader.calls == 1
    assert all(value == {"loaded": True} for value, _hit in results)
    assert sum(hit for _value, hit in results) == len(replicas) - 1  # the others read what it stored


def test_load_through_with_memcached_down_loads_without_waiting(memcached_flap: MemcachedServer) -> None:
    cache = Spy(MemcachedCache(memcached_flap.address))
    memcached_flap.stop()
    loader = CountingLoader()
    assert load_through(cache, f"test:{uuid.uuid4().hex}", 60, loader, wait=600) == ({"loaded": True}, False)
    assert cache.gets == 1  # one look, no polling for a lock memcached cannot hold
