"""Scrape-time gauges of a transactional outbox: how many events wait unsent and how old the oldest is, per
shard, read from the database each time /metrics is asked (one indexed count per shard).

Generic over the outbox pattern: the table and its columns are parameters; a composition root registers it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence

from shared_lib.observability import metrics
from shared_lib.postgres import ConnectionPool

log = logging.getLogger(__name__)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


class OutboxWatch:
    """Sets shop_outbox_backlog and shop_outbox_oldest_unsent_age_seconds for each pool (one per shard)."""

    def __init__(
        self,
        pools: Sequence[ConnectionPool],
        table: str = "outbox",
        created_column: str = "created_at",
        sent_column: str = "sent_at",
    ) -> None:
        for name in (table, created_column, sent_column):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"not a plain SQL identifier: {name!r}")
        self.pools = list(pools)
        self.sql = (
            f"SELECT count(*), COALESCE(extract(epoch FROM clock_timestamp() - min({created_column})), 0)"
            f" FROM {table} WHERE {sent_column} IS NULL"
        )
        self._lock = threading.Lock()  # concurrent scrapes: one reading at a time is plenty

    def __call__(self) -> None:
        with self._lock:
            for shard, pool in enumerate(self.pools):
                try:
                    rows = pool.run(self.sql)
                except Exception:
                    log.warning("reading the outbox backlog of shard %d failed", shard, exc_info=True)
                    continue
                backlog, age = rows[0]
                metrics.OUTBOX_BACKLOG.labels(str(shard)).set(float(backlog))
                metrics.OUTBOX_OLDEST_AGE.labels(str(shard)).set(float(age))


def watch_outbox(pools: Sequence[ConnectionPool], **columns: str) -> OutboxWatch:
    """Read the outbox of these shards at every scrape of this process's /metrics."""
    watch = OutboxWatch(pools, **columns)
    metrics.on_scrape(watch)
    return watch
