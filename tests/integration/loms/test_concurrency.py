"""loms under concurrency on real PostgreSQL: exact counts, never below zero, no deadlocks, one winner."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.loms.adapters.pg_shards import Shards
from functions.loms.domain import (
    InsufficientStockError,
    Item,
    OrderNotCancellableError,
    OrderNotPayableError,
    OrderStatus,
    StockLevel,
)
from tests.conftest import MakeDatabase
from tests.integration.loms.conftest import PgLoms

pytestmark = pytest.mark.integration
UniqueId = Callable[[], int]


WORKERS = 20  # threads working on loms at once in these tests
# Every worker can hold a connection to its order's shard and to the stock's at once, the sampler one more: no
# thread ever waits for a pool slot. With fewer, a thread queued behind transactions queued on one stock row,
# and on a busy machine the pool's 5 s acquire timeout ran out ("pool is exhausted"): a measure of the
# machine, not of what these tests check (exact counts under concurrency).
POOL_SIZE = WORKERS + 2


@pytest.fixture(scope="module", params=["1-shard", "2-shards"])
def cluster(request: pytest.FixtureRequest, make_database: MakeDatabase) -> Iterator[PgLoms]:
    count = 1 if request.param == "1-shard" else 2
    shards = Shards.open([make_database("loms") for _ in range(count)], [], pool_size=POOL_SIZE)
    yield PgLoms(shards)
    shards.close()


def users(cluster: PgLoms, unique_id: UniqueId, count: int) -> list[int]:
    """Distinct users spread over every shard."""
    return [unique_id() * cluster.shard_count + i % cluster.shard_count for i in range(count)]


class LowWaterMark:
    """Samples a SKU's available count from another connection while the test runs; remembers the lowest."""

    def __init__(self, cluster: PgLoms, sku: int) -> None:
        self.cluster, self.sku = cluster, sku
        self.lowest: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = self.cluster.shards.stock.run(
                "SELECT total_count - reserved FROM stocks WHERE sku = :s", s=self.sku
            )
            value = int(rows[0][0])
            self.lowest = value if self.lowest is None else min(self.lowest, value)
            self.samples += 1

    def __enter__(self) -> LowWaterMark:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_hundred_concurrent_orders_take_exactly_a_hundred(cluster: PgLoms, unique_id: UniqueId) -> None:
    sku = unique_id()
    cluster.put_stock(sku, total_count=130, reserved=30)  # exactly 100 available
    buyers = users(cluster, unique_id, 100)
    with LowWaterMark(cluster, sku) as watch, ThreadPoolExecutor(max_workers=WORKERS) as pool:
        order_ids = list(pool.map(lambda user: cluster.service.create_order(user, [Item(sku, 1)]), buyers))
    assert len(set(order_ids)) == 100
    assert cluster.level(sku) == StockLevel(sku, 130, 130)
    assert cluster.service.stock_info(sku) == 0
    assert watch.samples > 0 and watch.lowest is not None and watch.lowest >= 0
    assert all(cluster.service.order_info(o).status is OrderStatus.AWAITING_PAYMENT for o in order_ids)
    with pytest.raises(InsufficientStockError):
        cluster.service.create_order(buyers[0], [Item(sku, 1)])
    assert cluster.level(sku) == StockLevel(sku, 130, 130)


def test_oversubscribed_stock_is_never_oversold(cluster: PgLoms, unique_id: UniqueId) -> None:
    scarce, plenty = unique_id(), unique_id()
    cluster.put_stock(scarce, total_count=40)
    cluster.put_stock(plenty, total_count=1000)
    buyers = users(cluster, unique_id, 120)

    def buy(user: int) -> int | None:
        items = [Item(plenty, 2), Item(scarce, 1)]
        random.shuffle(items)  # the adapter must lock in SKU order whatever order the items come in
        try:
            return cluster.service.create_order(user, items)
        except InsufficientStockError:
            return None

    with LowWaterMark(cluster, scarce) as watch, ThreadPoolExecutor(max_workers=WORKERS) as pool:
        outcomes = list(pool.map(buy, buyers))
    won = [o for o in outcomes if o is not None]
    assert len(won) == 40
    assert watch.lowest is not None and watch.lowest >= 0
    assert cluster.level(scarce) == StockLevel(scarce, 40, 40)
    assert cluster.level(plenty) == StockLevel(plenty, 1000, 80)  # the failed orders hold nothing
    failed = [status for user in buyers for _, status in cluster.orders_of(user) if status == "failed"]
    assert len(failed) == 80


def test_mixed_creates_pays_and_cancels_keep_the_books_straight(cluster: PgLoms, unique_id: UniqueId) -> None:
    a, b = unique_id(), unique_id()
    cluster.put_stock(a, total_count=500, reserved=7)
    cluster.put_stock(b, total_count=500)
    buyers = users(cluster, unique_id, 120)
    first = [cluster.service.create_order(u, [Item(a, 2), Item(b, 1)]) for u in buyers[:60]]
    rng = random.Random(7)
    plans = [(rng.choice(["pay", "cancel"]), order_id) for order_id in first]
    plans += [("create", user) for user in buyers[60:]]
    rng.shuffle(plans)

    def run(plan: tuple[str, int]) -> None:
        action, target = plan
        if action == "pay":
            cluster.service.pay_order(target)
        elif action == "cancel":
            cluster.service.cancel_order(target)
        else:
            cluster.service.create_order(target, [Item(b, 3), Item(a, 1)])

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(run, plans))
    orders = [
        cluster.service.order_info(order_id) for user in buyers for order_id, _ in cluster.orders_of(user)
    ]
    assert len(orders) == 120
    sold = {a: 0, b: 0}
    held = {a: 0, b: 0}
    for order in orders:
        for item in order.items:
            if order.status is OrderStatus.PAID:
                sold[item.sku] += item.count
            elif order.status is OrderStatus.AWAITING_PAYMENT:
                held[item.sku] += item.count
    assert sold[a] > 0 and held[b] > 0
    assert cluster.level(a) == StockLevel(a, 500 - sold[a], 7 + held[a])
    assert cluster.level(b) == StockLevel(b, 500 - sold[b], held[b])


def race(order_id: int, **use_cases: Callable[[int], None]) -> dict[str, str]:
    """Start every use case on the order at the same moment; which won and which were refused."""
    start = threading.Barrier(len(use_cases))
    results: dict[str, str] = {}

    def attempt(name: str, use_case: Callable[[int], None]) -> None:
        start.wait()
        try:
            use_case(order_id)
            results[name] = "won"
        except (OrderNotPayableError, OrderNotCancellableError):
            results[name] = "refused"

    threads = [threading.Thread(target=attempt, args=item) for item in use_cases.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_pay_and_cancel_racing_on_one_order_have_one_winner(cluster: PgLoms, unique_id: UniqueId) -> None:
    sku = unique_id()
    cluster.put_stock(sku, total_count=100)
    outcomes: list[str] = []
    for user in users(cluster, unique_id, 10):
        order_id = cluster.service.create_order(user, [Item(sku, 2)])
        results = race(order_id, pay=cluster.service.pay_order, cancel=cluster.service.cancel_order)
        assert sorted(results.values()) == ["refused", "won"]
        winner = "pay" if results["pay"] == "won" else "cancel"
        expected = OrderStatus.PAID if winner == "pay" else OrderStatus.CANCELLED
        assert cluster.service.order_info(order_id).status is expected
        outcomes.append(winner)
    paid = outcomes.count("pay")
    assert cluster.level(sku) == StockLevel(sku, 100 - 2 * paid, 0)
