"""tests.ratelimit_fake.InProcessRateLimiter, PgRateLimiter's GCRA in one process: strict spacing of 1/rate,
no burst, cancellation while waiting."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import CancelledError

import pytest

from tests.ratelimit_fake import InProcessRateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.grants: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_grants_are_spaced_one_interval_apart_from_the_first() -> None:
    fake = FakeTime()
    limiter = InProcessRateLimiter(10, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        limiter.acquire()
        fake.grants.append(fake.now)
    assert fake.grants == pytest.approx([100.0, 100.1, 100.2, 100.3, 100.4])


def test_idle_time_is_not_saved_up_as_a_burst() -> None:
    fake = FakeTime()
    limiter = InProcessRateLimiter(10, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire()
    fake.now += 5  # a long quiet spell
    limiter.acquire()
    first_after_pause = fake.now
    limiter.acquire()
    assert fake.now - first_after_pause == pytest.approx(0.1)


def test_threads_share_the_rate() -> None:
    limiter = InProcessRateLimiter(100)
    grants: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def take() -> None:
        barrier.wait()
        for _ in range(5):
            grant = limiter.take()  # what the limiter decided, on its clock
            with lock:
                grants.append(grant.at)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grants.sort()
    assert len(grants) == 20
    assert min(b - a for a, b in itertools.pairwise(grants)) >= 1 / 100 - 1e-9  # never two in one interval


def test_a_cancelled_wait_raises() -> None:
    limiter = InProcessRateLimiter(0.001)  # one grant every 1000 s: only the cancel can end the wait
    limiter.acquire()
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    with pytest.raises(CancelledError):
        limiter.acquire(cancel)


def test_an_already_cancelled_caller_does_not_take_a_slot() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        InProcessRateLimiter(10).acquire(cancel)


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        InProcessRateLimiter(0)
