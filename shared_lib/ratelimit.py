"""Client-side rate limiting: callers block until they may send the next request.

PgRateLimiter keeps the schedule in PostgreSQL so every replica of a function shares one limit. It uses GCRA
with strict spacing of 1/rate seconds and no burst, so a peer enforcing the same rate with a token bucket
never refuses us.
Every acquire's wait is a metric per limiter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Protocol

from shared_lib.observability import metrics
from shared_lib.postgres import ConnectionPool


class RateLimiter(Protocol):
    def acquire(self, cancel: threading.Event | None = None) -> None:
        """Block until the caller may proceed; CancelledError if `cancel` is set while waiting."""
        ...


# One atomic statement per acquire: the row holds the theoretical arrival time (TAT) of the next request.
# A caller is granted max(TAT, now) and moves the TAT one interval past that; it waits until its grant.
# The row lock of ON CONFLICT DO UPDATE serialises replicas; the database clock is the one clock they share.
_RESERVE = """
INSERT INTO rate_limits AS r (name, tat)
VALUES (:name, clock_timestamp() + make_interval(secs => CAST(:interval AS float8)))
ON CONFLICT (name) DO UPDATE
    SET tat = GREATEST(r.tat, clock_timestamp()) + make_interval(secs => CAST(:interval AS float8))
RETURNING extract(epoch FROM (r.tat - make_interval(secs => CAST(:interval AS float8)))),
          extract(epoch FROM (r.tat - make_interval(secs => CAST(:interval AS float8)) - clock_timestamp()))
"""


@dataclass(frozen=True, slots=True)
class Grant:
    """A slot the limiter handed out: `at` on the limiter's clock (PgRateLimiter: the database's, as Unix
    seconds), and `wait`, the seconds from now until then (≤ 0: at once).
    Consecutive grants under one name are exactly one interval apart or more."""

    at: float
    wait: float


class PgRateLimiter:
    """At most `rate` grants a second under `name`, across every process using the same database.

    Needs the `rate_limits` table (name text primary key, tat timestamptz). One short autocommit statement
    per acquire; the waiting happens here, holding no connection.
    """

    def __init__(
        self, pool: ConnectionPool, name: str, rate: float, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.pool = pool
        self.name = name
        if rate <= 0:
            raise ValueError("rate must be positive (requests per second)")
        self.interval = 1.0 / rate
        self._sleep = sleep

    def take(self) -> Grant:
        """Take the next slot, without waiting for it."""
        rows = self.pool.run(_RESERVE, name=self.name, interval=self.interval)
        return Grant(at=float(rows[0][0]), wait=float(rows[0][1]))

    def acquire(self, cancel: threading.Event | None = None) -> None:
        if cancel is not None and cancel.is_set():
            raise CancelledError()
        wait = self.take().wait
        metrics.RATELIMIT_WAIT.labels(self.name).observe(max(0.0, wait))
        if cancel is not None and cancel.is_set():
            raise CancelledError()
        if wait <= 0:
            return
        if cancel is None:
            self._sleep(wait)
        elif cancel.wait(wait):
            raise CancelledError()  # the reserved slot is simply not used
