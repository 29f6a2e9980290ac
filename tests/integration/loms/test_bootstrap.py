"""What the dev server calls (migrate every shard, seed the stock) and reads served by replicas."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from functions.loms import bootstrap
from functions.loms.adapters.pg_shards import Shards
from functions.loms.domain import Item, OrderStatus
from shared_lib.idempotency import PgIdempotencyStore
from shared_lib.postgres import Dsn, ensure_database
from tests.integration.loms.conftest import PgLoms

pytestmark = pytest.mark.integration
UniqueId = Callable[[], int]
SEED = Path(__file__).resolve().parents[3] / "functions" / "loms" / "data" / "stock-data.json"


def bare_database(server_dsn: str) -> str:
    name = f"loms_bare_{uuid.uuid4().hex[:10]}"
    ensure_database(server_dsn, name)
    return Dsn.parse(server_dsn).with_database(name).url()


@pytest.fixture
def fresh_bootstrap() -> Iterator[None]:
    bootstrap.reset()
    yield
    bootstrap.reset()  # closes the pools the root opened


def test_migrate_and_seed_every_shard_from_the_environment(
    pg_server_dsn: str, monkeypatch: pytest.MonkeyPatch, fresh_bootstrap: None
) -> None:
    first, second = bare_database(pg_server_dsn), bare_database(pg_server_dsn)
    monkeypatch.setenv("LOMS_SHARD_DSNS", f"{first},{second}")
    applied = bootstrap.migrate()
    assert {name.split(":", 1)[0] for name in applied} == {"0", "1"}
    assert "1:loms/001_orders_and_stock.sql" in applied
    assert bootstrap.migrate() == []

    seed = json.loads(SEED.read_text(encoding="utf-8"))
    assert bootstrap.seed_stock() == len(seed)
    service = bootstrap.loms_service()
    assert service.stock_info(1076963) == 300 - 35
    assert service.stock_info(139818428) == 0  # seeded with more reserved than total

    user = 2 * 31337 + 1  # an order in the second shard, the stock in the first
    order_id = service.create_order(user, [Item(1076963, 5)])
    assert order_id % 2 == 1
    assert bootstrap.seed_stock() == 0  # a restart never resets stock
    assert service.stock_info(1076963) == 300 - 35 - 5
    store = bootstrap.idempotency()
    assert isinstance(store, PgIdempotencyStore)
    assert store.pool.run("SELECT count(*) FROM idempotency_keys") == [[0]]


def test_reads_go_to_the_replica_and_fall_back_to_the_primary(
    make_database: Callable[[str], str], unique_id: UniqueId
) -> None:
    primary, lagging = make_database("loms"), make_database("loms")
    shards = Shards.open([primary], [lagging], pool_size=2)
    loms, replica = PgLoms(shards), PgLoms(Shards.open([lagging], [], pool_size=1))
    try:
        sku = unique_id()
        loms.put_stock(sku, 10)
        replica.put_stock(sku, 10, 3)  # what the replica still says
        assert loms.service.stock_info(sku) == 7
        order_id = loms.service.create_order(unique_id(), [Item(sku, 1)])
        assert (
            loms.service.order_info(order_id).status is OrderStatus.AWAITING_PAYMENT
        )  # not there yet: primary
        other = unique_id()
        loms.put_stock(other, 4)
        assert loms.service.stock_info(other) == 4
    finally:
        shards.close()
        replica.shards.close()


def test_a_replica_that_is_down_is_skipped(make_database: Callable[[str], str], unique_id: UniqueId) -> None:
    shards = Shards.open([make_database("loms")], ["postgresql://postgres@127.0.0.1:1/loms"], pool_size=2)
    try:
        loms, sku = PgLoms(shards), unique_id()
        loms.put_stock(sku, 10)
        assert loms.service.stock_info(sku) == 10
        order_id = loms.service.create_order(unique_id(), [Item(sku, 2)])
        assert loms.service.order_info(order_id).items == (Item(sku, 2),)
    finally:
        shards.close()
