"""PgRateLimiter: one rate shared through PostgreSQL by every pool, thread and replica using the same name."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import CancelledError

import pytest

from shared_lib.postgres import ConnectionPool
from shared_lib.ratelimit import PgRateLimiter
from tests.conftest import MakeDatabase

pytestmark = pytest.mark.integration


def grant_times(limiters: list[PgRateLimiter], per_thread: int, threads_each: int) -> list[float]:
    grants: list[float] = []
    lock = threading.Lock()

    def take(limiter: PgRateLimiter) -> None:
        for _ in range(per_thread):
            limiter.acquire()
            with lock:
                grants.append(time.monotonic())

    threads = [threading.Thread(target=take, args=(lim,)) for lim in limiters for _ in range(threads_each)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return sorted(grants)


def test_two_pools_sharing_a_name_keep_the_rate_together(make_database: MakeDatabase) -> None:
    dsn = make_database("cart")
    rate = 20.0
    # two "replicas": separate pools, two threads each, 25 acquires in all (a few more to make it even)
    replicas = [PgRateLimiter(ConnectionPool(dsn, size=2), "product", rate) for _ in range(2)]
    started = time.monotonic()
    grants = grant_times(replicas, per_thread=7, threads_each=2)  # 28 grants
    elapsed = time.monotonic() - started
    assert len(grants) == 28
    assert elapsed >= 27 / rate * 0.95  # strict spacing: n grants need (n - 1) intervals
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert min(gaps) >= 0.5 / rate  # never two at once (tolerating scheduler jitter)
    for i, first in enumerate(grants):  # no one-second window holds more than the rate
        assert sum(1 for t in grants[i:] if t - first < 1.0) <= rate + 1


def test_limits_with_different_names_do_not_slow_each_other(make_database: MakeDatabase) -> None:
    pool = ConnectionPool(make_database("cart"), size=2)
    slow = PgRateLimiter(pool, "slow", 1)
    fast = PgRateLimiter(pool, "fast", 1000)
    slow.acquire()
    started = time.monotonic()
    for _ in range(5):
        fast.acquire()
    assert time.monotonic() - started < 0.5


def test_an_idle_limit_grants_at_once_without_a_burst(make_database: MakeDatabase) -> None:
    pool = ConnectionPool(make_database("cart"), size=1)
    limiter = PgRateLimiter(pool, "idle", 5)
    assert limiter.reserve() <= 0.01
    assert limiter.reserve() == pytest.approx(0.2, abs=0.05)


def test_a_cancelled_wait_gives_up(make_database: MakeDatabase) -> None:
    limiter = PgRateLimiter(ConnectionPool(make_database("cart"), size=1), "cancel", 0.5)
    limiter.acquire()
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(CancelledError):
        limiter.acquire(cancel)
    assert time.monotonic() - started < 1
