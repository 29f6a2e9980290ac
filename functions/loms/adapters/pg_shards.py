"""loms' shards on PostgreSQL: a pool per shard's primary and replica, which shard holds an order, the
migrations every shard gets, and the advisory-lock keys of per-shard work. No SQL of orders, stock or events.

Sharding. Shard `i` of `n` allocates order ids `nextval('order_seq') * n + i`, so an order's shard is
`order_id % n` (with one shard the ids are 1, 2, 3 …). A new order goes to shard `user_id % n`: one user's
orders stay together (a later "orders of a user" reads one shard), and the choice is deterministic, so tests
can aim an order at either shard. The shard count is part of the data: changing it needs a data migration.
The stock lives in shard 0 (see pg_unit_of_work for what that means for a transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared_lib.postgres import ConnectionPool, migrate

# Advisory locks, two-key form: loms's key space, then what is locked. Each shard is its own database, and
# advisory locks are per database, so one key per task is one lock per shard.
LOCK_SPACE = 0x4C4F4D53  # "LOMS"
RELAY_LOCK = 1
SWEEP_LOCK = 2


@dataclass(frozen=True, slots=True)
class Shards:
    """One pool per shard's primary, and per replica where one is configured. Shard 0 also holds the stock."""

    primaries: tuple[ConnectionPool, ...]
    replicas: tuple[ConnectionPool | None, ...]

    @classmethod
    def open(cls, dsns: Sequence[str], replica_dsns: Sequence[str | None], pool_size: int) -> Shards:
        if not dsns:
            raise ValueError("loms needs at least one shard DSN")
        if replica_dsns and len(replica_dsns) != len(dsns):
            raise ValueError("give one replica DSN per shard (an empty entry: no replica for that shard)")
        primaries = tuple(
            ConnectionPool(d, size=pool_size, name=f"loms-shard{i}") for i, d in enumerate(dsns)
        )
        replicas = tuple(
            None if d is None else ConnectionPool(d, size=pool_size, name=f"loms-replica{i}")
            for i, d in enumerate(replica_dsns or [None] * len(dsns))
        )
        return cls(primaries, replicas)

    @property
    def count(self) -> int:
        return len(self.primaries)

    @property
    def stock(self) -> ConnectionPool:
        return self.primaries[0]

    def index_of(self, order_id: int) -> int:
        return order_id % self.count

    def close(self) -> None:
        for pool in (*self.primaries, *self.replicas):
            if pool is not None:
                pool.close()


def migrate_shards(dsns: Sequence[str], directories: Sequence[Path]) -> list[str]:
    """Every shard gets the same migrations; returns what was applied, prefixed with the shard index."""
    return [f"{i}:{name}" for i, dsn in enumerate(dsns) for name in migrate(dsn, directories)]
