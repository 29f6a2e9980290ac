"""Retrying a call that failed in a way worth another try, with capped exponential backoff and jitter.

What is worth retrying is the caller's decision (`retry_on`); nothing here knows about HTTP or SQL.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import TypeVar

from shared_lib.errors import TransientError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry n (1-based): min(max, base * 2**(n-1)), with "equal jitter" when `jitter`.

    Equal jitter keeps at least half the delay, so retries never bunch up at zero, and spreads the rest so
    callers throttled together do not come back together.
    """

    base: float = 0.1
    max: float = 2.0
    jitter: bool = True

    def delay(self, retry_number: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        capped = min(self.max, self.base * 2.0 ** (retry_number - 1))
        return capped / 2 + rng(0, capped / 2) if self.jitter else capped


DEFAULT_BACKOFF = Backoff()


def retry(
    fn: Callable[[], T],
    *,
    tries: int = 3,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = TransientError,
    backoff: Backoff = DEFAULT_BACKOFF,
    cancel: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn` up to `tries` times in all while it raises `retry_on`; the last error propagates.

    A set `cancel` event stops the waiting and raises concurrent.futures.CancelledError.
    """
    if tries < 1:
        raise ValueError("tries must be at least 1")
    for attempt in range(1, tries + 1):
        if cancel is not None and cancel.is_set():
            raise CancelledError()
        try:
            return fn()
        except retry_on:
            if attempt == tries:
                raise
        delay = backoff.delay(attempt)
        if cancel is not None:
            if cancel.wait(delay):
                raise CancelledError()
        else:
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
