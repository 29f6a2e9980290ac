"""The outbox as loms' relay sees it: every shard's unsent events, marking them sent, the relay's claim on a
shard and the wait for a NOTIFY of new rows. Not the writing of events (the unit of work's), nor a transport.

Every event row's insert NOTIFYs `loms_outbox` (a trigger), and the relay LISTENs on one dedicated connection
per shard, where it also holds its per-shard claim.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from functions.loms.adapters.pg_shards import LOCK_SPACE, RELAY_LOCK
from functions.loms.domain import OrderStatus, OrderStatusChanged
from shared_lib.errors import TransientError
from shared_lib.postgres import Connection, Dsn, connect, is_transient, wait_readable

NOTIFY_CHANNEL = "loms_outbox"
# Under a steady inflow, at most one wake-up (one batch) per this many seconds: see PgOutbox.wait
GATHER_SECONDS = 0.05
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATUSES = {status.value: status for status in OrderStatus}
# An event's moment as whole microseconds since the epoch (exact: PostgreSQL's extract gives a numeric, and a
# timestamptz holds microseconds): made a datetime by one addition, where pg8000 parses the text of every
# timestamptz with strptime. The same instant to the microsecond, so the same RFC 3339 time on the wire.
PENDING = (
    "SELECT event_id, order_id, user_id, status, CAST(extract(epoch FROM moment) * 1000000 AS bigint),"
    " traceparent FROM outbox WHERE sent_at IS NULL ORDER BY event_id LIMIT :n"
)
# One row back (how many were marked), so the connection prepares it once (shared_lib.postgres prepares
# statements that return rows) instead of parsing and describing the UPDATE at every batch.
MARK_SENT = (
    "WITH marked AS (UPDATE outbox SET sent_at = now()"
    " WHERE event_id = ANY(CAST(:ids AS bigint[])) AND sent_at IS NULL RETURNING 1)"
    " SELECT count(*) FROM marked"
)


class PgOutbox:
    """Every shard's outbox through one dedicated connection per shard (autocommit, never a transaction),
    which LISTENs for new rows and holds this relay's claim on the shard. One relay thread per instance.

    A connection that fails is dropped and opened again on next use; its claim and LISTEN go with it.
    """

    def __init__(
        self,
        dsns: Sequence[str],
        application_name: str = "loms-relay",
        gather_seconds: float = GATHER_SECONDS,
        sleep: Callable[[float], None] = time.sleep,  # how wait lets the gathering time pass
    ) -> None:
        if not dsns:
            raise ValueError("the outbox needs at least one shard DSN")
        self.dsns = [Dsn.parse(dsn) for dsn in dsns]
        self.application_name = application_name
        self.gather_seconds = gather_seconds
        self._sleep = sleep
        self._woken = -math.inf  # time.monotonic() of wait's latest wake-up
        self._conns: list[Connection | None] = [None] * len(self.dsns)

    @property
    def shard_count(self) -> int:
        return len(self.dsns)

    def _connection(self, shard: int) -> Connection:
        conn = self._conns[shard]
        if conn is None:
            conn = connect(self.dsns[shard], application_name=self.application_name)
            try:
                conn.run(f"LISTEN {NOTIFY_CHANNEL}")
            except Exception:
                conn.close()
                raise
            self._conns[shard] = conn
        return conn

    def _run(self, shard: int, sql: str, **params: Any) -> list[list[Any]]:
        try:
            return self._connection(shard).run(sql, **params) or []
        except TransientError:
            self._drop(shard)
            raise
        except Exception as exc:
            self._drop(shard)  # a connection that failed a statement is not trusted with a claim
            if is_transient(exc):
                raise TransientError("the database is unavailable") from exc
            raise

    def _drop(self, shard: int) -> None:
        conn, self._conns[shard] = self._conns[shard], None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def claim(self, shard: int) -> Iterator[bool]:
        locked = bool(
            self._run(shard, "SELECT pg_try_advisory_lock(:a, :k)", a=LOCK_SPACE, k=RELAY_LOCK)[0][0]
        )
        try:
            yield locked
        finally:
            if locked and self._conns[shard] is not None:
                with contextlib.suppress(TransientError):  # the connection is gone, and the lock with it
                    self._run(shard, "SELECT pg_advisory_unlock(:a, :k)", a=LOCK_SPACE, k=RELAY_LOCK)

    def pending(self, shard: int, limit: int) -> list[OrderStatusChanged]:
        rows = self._run(shard, PENDING, n=limit)
        return [
            OrderStatusChanged(e, o, u, STATUSES[s], EPOCH + timedelta(microseconds=us), traceparent)
            for e, o, u, s, us, traceparent in rows
        ]

    def mark_sent(self, shard: int, event_ids: Sequence[int]) -> None:
        self._run(shard, MARK_SENT, ids=list(event_ids))

    def wait(self, timeout: float) -> bool:
        """Notifications that came with earlier replies count; else wait on the connections
        (shared_lib.postgres.wait_readable, whose timeout is also the fallback for one it cannot see).

        Woken again less than `gather_seconds` after its last wake-up, it first lets the rest of that time
        pass and reads what came meanwhile, so under a steady inflow the relay publishes one batch per
        `gather_seconds` instead of one per commit: every batch costs its statements and a broker round trip
        whatever its size. An event after a quiet spell is not held back."""
        for shard in range(self.shard_count):
            if self._conns[shard] is None:
                with contextlib.suppress(TransientError):
                    self._run(shard, "SELECT 1")  # reconnects and LISTENs again
        conns = {shard: conn for shard, conn in enumerate(self._conns) if conn is not None}
        if not any(conn.notifications for conn in conns.values()) and not wait_readable(conns, timeout):
            return False
        pause = self._woken + self.gather_seconds - time.monotonic()
        if pause > 0:
            self._sleep(min(pause, self.gather_seconds))
        for shard in wait_readable(conns, 0):  # what woke it, and what came meanwhile
            with contextlib.suppress(TransientError):
                self._run(shard, "SELECT 1")  # reads the notifications (or finds the broken link)
        self._clear()
        self._woken = time.monotonic()
        return True

    def _clear(self) -> None:
        for conn in self._conns:
            if conn is not None:
                conn.notifications.clear()

    def close(self) -> None:
        for shard in range(self.shard_count):
            self._drop(shard)
