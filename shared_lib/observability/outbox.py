"""Scrape-time gauges of a transactional outbox: how many events wait unsent and how old the oldest is, per
shard, read from the database each time /metrics is asked (one indexed count per shard).

The outbox is a table `outbox` with `created_at` and `sent_at` (NULL while unsent); a composition root
registers it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from shared_lib.observability import metrics
from shared_lib.postgres import ConnectionPool

log = logging.getLogger(__name__)

_BACKLOG = (
    "SELECT count(*), COALESCE(extract(epoch FROM clock_timestamp() - min(created_at)), 0)"
    " FROM outbox WHERE sent_at IS NULL"
)


class OutboxWatch:
    """Sets shop_outbox_backlog and shop_outbox_oldest_unsent_age_seconds for each pool (one per shard)."""

    def __init__(self, pools: Sequence[ConnectionPool]) -> None:
        self.pools = list(pools)
        self._lock = threading.Lock()  # concurrent scrapes: one reading at a time is plenty

    def __call__(self) -> None:
        with self._lock:
            for shard, pool in enumerate(self.pools):
                try:
                    rows = pool.run(_BACKLOG)
                except Exception:
                    log.warning("reading the outbox backlog of shard %d failed", shard, exc_info=True)
                    continue
                backlog, age = rows[0]
                metrics.OUTBOX_BACKLOG.labels(str(shard)).set(float(backlog))
                metrics.OUTBOX_OLDEST_AGE.labels(str(shard)).set(float(age))


def watch_outbox(pools: Sequence[ConnectionPool]) -> OutboxWatch:
    """Read the outbox of these shards at every scrape of this process's /metrics."""
    watch = OutboxWatch(pools)
    metrics.on_scrape(watch)
    return watch
