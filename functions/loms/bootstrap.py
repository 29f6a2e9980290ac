"""The loms composition root: settings, pools, adapters and the service, built once on first use.

Also what the dev server and deploy jobs call before serving: `migrate()` every shard, then `seed_stock()`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from functions.loms.adapters.postgres import (
    PgOrderReader,
    PgStockReader,
    PgUnitOfWork,
    Shards,
    migrate_shards,
)
from functions.loms.adapters.postgres import seed_stock as insert_missing_stock
from functions.loms.adapters.seed_file import read_stock_seed
from functions.loms.service import LomsService
from functions.loms.settings import LomsSettings
from shared_lib.idempotency import PgIdempotencyStore
from shared_lib.postgres import ConnectionPool

SQL = Path(__file__).resolve().parents[2] / "sql"


@functools.cache
def settings() -> LomsSettings:
    return LomsSettings()


@functools.cache
def shards() -> Shards:
    config = settings()
    return Shards.open(config.shards(), config.replicas(), config.pool_size)


@functools.cache
def loms_service() -> LomsService:
    return LomsService(
        units=PgUnitOfWork(shards()), orders=PgOrderReader(shards()), stock=PgStockReader(shards())
    )


@functools.cache
def idempotency() -> PgIdempotencyStore:
    """Keys live in shard 0, in a pool of their own: the store holds a connection while the action runs."""
    config = settings()
    return PgIdempotencyStore(
        ConnectionPool(config.shards()[0], size=config.idempotency_pool_size, name="loms-idempotency")
    )


def migrate() -> list[str]:
    """Apply sql/shared and sql/loms to every shard (each shard has the same schema)."""
    return migrate_shards(LomsSettings().shards(), [SQL / "shared", SQL / "loms"])


def seed_stock() -> int:
    """Insert the seed stock rows shard 0 lacks; never resets existing stock. Returns how many were added."""
    config = LomsSettings()
    db = Shards.open(config.shards()[:1], [], pool_size=1)
    try:
        return insert_missing_stock(db, read_stock_seed(config.stock_seed_path))
    finally:
        db.close()
