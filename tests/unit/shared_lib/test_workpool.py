"""map_bounded: the cap on calls in flight, input order, and the first error ending the rest."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import pytest

from shared_lib.workpool import map_bounded
from tests.polling import wait_for


class Gauge:
    """Counts calls in flight and remembers the most seen at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.started: list[int] = []
        self._lock = threading.Lock()

    def enter(self, item: int) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.started.append(item)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


def test_results_come_back_in_input_order_whatever_the_finishing_order() -> None:
    def slow_for_small(n: int) -> int:
        time.sleep(0.002 * (10 - n))
        return n * n

    assert map_bounded(slow_for_small, range(10), limit=5) == [n * n for n in range(10)]


def test_never_more_than_limit_calls_in_flight() -> None:
    gauge = Gauge()
    first_five = threading.Barrier(5)

    def work(n: int) -> int:
        gauge.enter(n)
        if n < 5:
            first_five.wait(30)  # the cap is reached, whatever the scheduler does: all five are in flight
        time.sleep(0.001)
        gauge.leave()
        return n

    assert map_bounded(work, range(30), limit=5) == list(range(30))
    assert gauge.most == 5
    assert sorted(gauge.started) == list(range(30))


def test_first_error_is_raised_unstarted_work_never_starts_and_running_work_is_told() -> None:
    gauge = Gauge()
    cancel = threading.Event()
    first_five = threading.Barrier(5)
    release = threading.Event()
    told: list[int] = []
    finished: list[int] = []

    def work(n: int) -> int:
        gauge.enter(n)
        first_five.wait(30)  # the five are in flight when 2 fails
        if n == 2:
            raise ValueError("sku 2 failed")
        if cancel.wait(30):  # a long call that gives up when told …
            told.append(n)
            release.wait(30)  # … and is still running until the test lets it go
            finished.append(n)
            raise CancelledError()
        return n

    try:
        with pytest.raises(ValueError, match="sku 2 failed"):
            map_bounded(work, range(50), limit=5, cancel=cancel)
        assert finished == []  # the error came back while the long calls were still running
        assert cancel.is_set()
        assert sorted(gauge.started) == [0, 1, 2, 3, 4]  # nothing beyond the first five ever started
        wait_for(lambda: sorted(told) == [0, 1, 3, 4], timeout=30, what="the running calls were told")
    finally:
        release.set()


def test_an_error_raised_by_the_first_item_stops_everything_after_it() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            calls.append(n)
        if n == 0:
            raise KeyError(n)
        time.sleep(0.01)
        return n

    with pytest.raises(KeyError):
        map_bounded(work, range(100), limit=1)
    assert calls == [0]


def test_no_items_no_calls() -> None:
    assert map_bounded(lambda n: n, [], limit=5) == []


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        map_bounded(lambda n: n, [1], limit=0)
