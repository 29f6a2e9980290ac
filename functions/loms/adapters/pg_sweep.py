"""The stale-order sweep's coordination on PostgreSQL: a per-shard claim, the orphaned reservations of
creates that died between their two commits, and the pruning of sent outbox rows. Not the sweep's own logic
(the service's StaleOrderSweeper).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta

from functions.loms.adapters.pg_shards import LOCK_SPACE, SWEEP_LOCK, Shards
from shared_lib.postgres import ConnectionPool


@contextlib.contextmanager
def _advisory_lock(pool: ConnectionPool, key: int) -> Iterator[bool]:
    """Try a session-level advisory lock on a pooled connection, held (no transaction open) until the block
    ends. A connection that breaks meanwhile is discarded by the pool, and its lock goes with it."""
    with pool.connection() as conn:
        locked = bool(conn.run("SELECT pg_try_advisory_lock(:a, :k)", a=LOCK_SPACE, k=key)[0][0])
        try:
            yield locked
        finally:
            if locked:
                conn.run("SELECT pg_advisory_unlock(:a, :k)", a=LOCK_SPACE, k=key)


class PgSweepCoordinator:
    def __init__(self, shards: Shards, page_size: int = 1000) -> None:
        self.shards = shards
        self.page_size = page_size

    def claim(self, shard: int) -> contextlib.AbstractContextManager[bool]:
        return _advisory_lock(self.shards.primaries[shard], SWEEP_LOCK)

    def orphaned_reservations(self, older_than: timedelta, limit: int) -> list[int]:
        """Pages through old reservations (shard 0) and asks each order's shard whether the order exists."""
        orphans: list[int] = []
        after = 0
        while len(orphans) < limit:
            rows = self.shards.stock.run(
                "SELECT DISTINCT order_id FROM reservations"
                " WHERE created_at < now() - make_interval(secs => :w) AND order_id > :after"
                " ORDER BY order_id LIMIT :n",
                w=older_than.total_seconds(),
                after=after,
                n=self.page_size,
            )
            candidates = [int(row[0]) for row in rows]
            if not candidates:
                break
            by_shard: dict[int, list[int]] = {}
            for order_id in candidates:
                by_shard.setdefault(self.shards.index_of(order_id), []).append(order_id)
            for index, ids in by_shard.items():
                found = self.shards.primaries[index].run(
                    "SELECT order_id FROM orders WHERE order_id = ANY(CAST(:ids AS bigint[]))", ids=ids
                )
                existing = {int(row[0]) for row in found}
                orphans.extend(order_id for order_id in ids if order_id not in existing)
            after = candidates[-1]
            if len(candidates) < self.page_size:
                break
        return sorted(orphans)[:limit]

    def prune_sent_events(self, shard: int, older_than: timedelta, limit: int) -> int:
        rows = self.shards.primaries[shard].run(
            "WITH gone AS (DELETE FROM outbox WHERE event_id IN ("
            " SELECT event_id FROM outbox WHERE sent_at < now() - make_interval(secs => :w)"
            " ORDER BY sent_at LIMIT :n) RETURNING 1) SELECT count(*) FROM gone",
            w=older_than.total_seconds(),
            n=limit,
        )
        return int(rows[0][0])
