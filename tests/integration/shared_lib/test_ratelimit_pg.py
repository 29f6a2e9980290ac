"""PgRateLimiter: one rate shared through PostgreSQL by every pool, thread and replica using the same name."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import CancelledError

import pytest

from shared_lib.postgres import ConnectionPool
from shared_lib.ratelimit import PgRateLimiter
from tests.conftest import MakeDatabase

pytestmark = pytest.mark.integration


def grant_times(limiters: list[PgRateLimiter], per_thread: int, threads_each: int) -> list[float]:
    """The slots the limiters handed out (on the database's clock) to threads taking them concurrently,
    sorted: what the limiter decided, not when a thread happened to be scheduled afterwards."""
    grants: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(limiters) * threads_each)

    def take(limiter: PgRateLimiter) -> None:
        barrier.wait()
        for _ in range(per_thread):
            grant = limiter.take()
            with lock:
                grants.append(grant.at)

    threads = [threading.Thread(target=take, args=(lim,)) for lim in limiters for _ in range(threads_each)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return sorted(grants)


def test_two_pools_sharing_a_name_keep_the_rate_together(make_database: MakeDatabase) -> None:
    dsn = make_database("cart")
    rate = 20.0
    # two "replicas": separate pools, two threads each, all taking slots at once
    replicas = [PgRateLimiter(ConnectionPool(dsn, size=2), "product", rate) for _ in range(2)]
    grants = grant_times(replicas, per_thread=7, threads_each=2)
    assert len(grants) == 28
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert min(gaps) >= 1 / rate - 1e-5  # strictly spaced: never two in one interval (timestamps are in µs)
    assert grants[-1] - grants[0] >= 27 / rate - 1e-4  # n grants span (n - 1) intervals
    for i, first in enumerate(grants):  # no one-second window holds more than the rate
        assert sum(1 for t in grants[i:] if t - first < 1.0) <= rate


def test_acquire_waits_for_its_slot(make_database: MakeDatabase) -> None:
    waits: list[float] = []
    limiter = PgRateLimiter(ConnectionPool(make_database("cart"), size=1), "waits", 0.01, sleep=waits.append)
    limiter.acquire()
    limiter.acquire()  # the next slot is an interval (100 s) after the first: acquire sleeps until it
    assert len(waits) == 1 and 0 < waits[0] <= 100


def test_limits_with_different_names_do_not_slow_each_other(make_database: MakeDatabase) -> None:
    pool = ConnectionPool(make_database("cart"), size=2)
    slow = PgRateLimiter(pool, "slow", 1)
    fast = PgRateLimiter(pool, "fast", 1000)
    slow.take()
    queued = slow.take()
    assert queued.wait > 0.5  # slow's next slot is about a second away …
    first = fast.take()
    assert first.wait <= 0  # … and fast grants at once all the same
    later = [fast.take() for _ in range(4)]
    assert all(grant.wait <= 4 / 1000 + 1e-5 for grant in later)  # on its own schedule: milliseconds apart


def test_an_idle_limit_grants_at_once_without_a_burst(make_database: MakeDatabase) -> None:
    pool = ConnectionPool(make_database("cart"), size=1)
    limiter = PgRateLimiter(pool, "idle", 5)
    first, second = limiter.take(), limiter.take()
    assert first.wait <= 0
    assert second.at - first.at >= 0.2 - 1e-5  # a full interval after the first: no burst


def test_a_cancelled_wait_gives_up(make_database: MakeDatabase) -> None:
    limiter = PgRateLimiter(ConnectionPool(make_database("cart"), size=1), "cancel", 0.001)
    limiter.acquire()  # the next slot is 1000 s away: only the cancel can end the wait
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    with pytest.raises(CancelledError):
        limiter.acquire(cancel)


def test_an_already_cancelled_caller_does_not_take_a_slot(make_database: MakeDatabase) -> None:
    limiter = PgRateLimiter(ConnectionPool(make_database("cart"), size=1), "cancelled", 0.001)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        limiter.acquire(cancel)
    assert limiter.take().wait <= 0  # the first slot is still free: the cancelled caller took none


def test_a_rate_must_be_positive(make_database: MakeDatabase) -> None:
    pool = ConnectionPool(make_database("cart"), size=1)
    for rate in (0, -1):
        with pytest.raises(ValueError):
            PgRateLimiter(pool, "nonsense", rate)
