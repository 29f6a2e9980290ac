"""An in-process rate limiter for tests: shared_lib.ratelimit.PgRateLimiter's GCRA (strict spacing of 1/rate
seconds, no burst; a cancelled wait raises CancelledError) on this process's clock, thread-safe. Its own
suite is tests/unit/shared_lib/test_ratelimit.py; PgRateLimiter's runs on real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError

from shared_lib.ratelimit import Grant


class InProcessRateLimiter:
    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (requests per second)")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._tat = float("-inf")
        self._lock = threading.Lock()

    def take(self) -> Grant:
        """Take the next slot, without waiting for it."""
        with self._lock:
            now = self._clock()
            grant = max(self._tat, now)
            self._tat = grant + self.interval
            return Grant(at=grant, wait=grant - now)

    def acquire(self, cancel: threading.Event | None = None) -> None:
        if cancel is not None and cancel.is_set():
            raise CancelledError()
        wait = self.take().wait
        if wait <= 0:
            return
        if cancel is None:
            self._sleep(wait)
        elif cancel.wait(wait):
            raise CancelledError()
