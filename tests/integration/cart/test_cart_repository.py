"""CartRepository's behaviour, run against PgCartRepository and the InMemoryCarts fake so they cannot drift;
then what only PostgreSQL can show: replicas sharing carts, and concurrent adds that never pass the stock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from functions.cart.adapters.postgres import PgCartRepository
from functions.cart.domain import UINT32_MAX
from functions.cart.ports import CartRepository
from shared_lib.postgres import ConnectionPool
from tests.conftest import MakeDatabase
from tests.unit.cart.fakes import InMemoryCarts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cart_dsn(make_database: MakeDatabase) -> str:
    return make_database("cart")


@pytest.fixture
def pools(cart_dsn: str) -> Iterator[Callable[[], ConnectionPool]]:
    made: list[ConnectionPool] = []

    def make() -> ConnectionPool:
        made.append(ConnectionPool(cart_dsn, size=8))
        return made[-1]

    yield make
    for pool in made:
        pool.close()


@pytest.fixture(params=["postgres", "in-memory"])
def carts(request: pytest.FixtureRequest, pools: Callable[[], ConnectionPool]) -> CartRepository:
    if request.param == "postgres":
        return PgCartRepository(pools())
    return InMemoryCarts()


# --- the port's behaviour, on both ---------------------------------------------------------------------


def test_an_unknown_user_has_an_empty_cart(carts: CartRepository, unique_id: Callable[[], int]) -> None:
    assert carts.items_of(unique_id()) == {}


def test_adds_sum_per_line_up_to_the_limit(carts: CartRepository, unique_id: Callable[[], int]) -> None:
    user, book, pen = unique_id(), unique_id(), unique_id()
    assert carts.add(user, book, 2, limit=10)
    assert carts.add(user, book, 8, limit=10)
    assert not carts.add(user, book, 1, limit=10)
    assert carts.add(user, pen, 1, limit=1)
    assert carts.items_of(user) == {book: 10, pen: 1}


def test_an_add_over_the_limit_stores_nothing(carts: CartRepository, unique_id: Callable[[], int]) -> None:
    user, sku = unique_id(), unique_id()
    assert not carts.add(user, sku, 5, limit=4)
    assert not carts.add(user, sku, 1, limit=0)
    assert carts.items_of(user) == {}


def test_a_line_may_hold_the_largest_uint32(carts: CartRepository, unique_id: Callable[[], int]) -> None:
    user, sku = unique_id(), unique_id()
    assert carts.add(user, sku, UINT32_MAX, limit=UINT32_MAX)
    assert not carts.add(user, sku, 1, limit=UINT32_MAX)
    assert carts.items_of(user) == {sku: UINT32_MAX}


def test_remove_and_clear_touch_only_their_user(carts: CartRepository, unique_id: Callable[[], int]) -> None:
    user, other, book, pen = unique_id(), unique_id(), unique_id(), unique_id()
    for who in (user, other):
        carts.add(who, book, 1, limit=10)
        carts.add(who, pen, 1, limit=10)
    carts.remove(user, book)
    carts.remove(user, unique_id())  # absent line: nothing to do
    assert carts.items_of(user) == {pen: 1}
    carts.clear(user)
    carts.clear(unique_id())  # absent cart: nothing to do
    assert carts.items_of(user) == {}
    assert carts.items_of(other) == {book: 1, pen: 1}


def test_remove_ordered_takes_out_what_was_ordered_and_keeps_later_additions(
    carts: CartRepository, unique_id: Callable[[], int]
) -> None:
    user, book, pen, tea = unique_id(), unique_id(), unique_id(), unique_id()
    carts.add(user, book, 2, limit=100)
    carts.add(user, pen, 1, limit=100)
    ordered = carts.items_of(user)
    carts.add(user, book, 3, limit=100)  # added after the snapshot
    carts.add(user, tea, 1, limit=100)
    carts.remove(user, pen)  # and the pen removed meanwhile
    carts.remove_ordered(user, ordered)
    assert carts.items_of(user) == {book: 3, tea: 1}
    carts.remove_ordered(user, {})
    assert carts.items_of(user) == {book: 3, tea: 1}


# --- what only PostgreSQL shows ------------------------------------------------------------------------


def test_two_replicas_with_their_own_pools_see_the_same_cart(
    pools: Callable[[], ConnectionPool], unique_id: Callable[[], int]
) -> None:
    first, second = PgCartRepository(pools()), PgCartRepository(pools())
    user, sku = unique_id(), unique_id()
    assert first.add(user, sku, 2, limit=10)
    assert second.items_of(user) == {sku: 2}
    assert second.add(user, sku, 3, limit=10)
    assert first.items_of(user) == {sku: 5}
    second.clear(user)
    assert first.items_of(user) == {}


def test_concurrent_adds_from_two_replicas_never_pass_the_limit(
    pools: Callable[[], ConnectionPool], unique_id: Callable[[], int]
) -> None:
    replicas = [PgCartRepository(pools()), PgCartRepository(pools())]
    user, sku = unique_id(), unique_id()
    limit, attempts = 25, 60
    accepted: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def adder(index: int) -> None:
        start.wait()
        for attempt in range(attempts // 12):
            count = 1 + (index + attempt) % 3
            if replicas[index % 2].add(user, sku, count, limit=limit):
                with lock:
                    accepted.append(count)

    threads = [threading.Thread(target=adder, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stored = replicas[0].items_of(user)[sku]
    assert stored == sum(accepted)  # every accepted add is in the cart, every refused one is not
    assert stored <= limit
    assert stored >= limit - 2  # refusals came only once the line was (nearly) full


def test_an_add_racing_a_checkout_is_never_lost(
    pools: Callable[[], ConnectionPool], unique_id: Callable[[], int]
) -> None:
    carts = PgCartRepository(pools())
    for _ in range(20):
        user, sku = unique_id(), unique_id()
        carts.add(user, sku, 5, limit=100)
        ordered = carts.items_of(user)
        barrier = threading.Barrier(2)

        def checkout(user: int, ordered: dict[int, int], barrier: threading.Barrier) -> None:
            barrier.wait()
            carts.remove_ordered(user, ordered)

        def add(user: int, sku: int, barrier: threading.Barrier) -> None:
            barrier.wait()
            carts.add(user, sku, 3, limit=100)

        threads = [
            threading.Thread(target=checkout, args=(user, ordered, barrier)),
            threading.Thread(target=add, args=(user, sku, barrier)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert carts.items_of(user) == {sku: 3}  # whichever went first, the 3 added stay
