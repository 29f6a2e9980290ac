"""Per-replica pacing for the product service: a token-bucket limiter and injected latency."""

from __future__ import annotations

import random
import threading
import time


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; rate 0 admits everything."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        if self.rate <= 0:
            return True
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


class SleepLatency:
    """Sleeps `fixed_ms`, plus a uniform jitter of up to `jitter_ms`, before answering."""

    def __init__(self, fixed_ms: int, jitter_ms: int) -> None:
        self.fixed_ms = fixed_ms
        self.jitter_ms = jitter_ms

    def pause(self) -> None:
        delay = self.fixed_ms + (random.uniform(0, self.jitter_ms) if self.jitter_ms else 0)
        if delay > 0:
            time.sleep(delay / 1000)
