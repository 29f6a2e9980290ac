"""Stateful in-memory stand-ins for the cart's ports, and a service wired to them.

The same behavioural suite runs InMemoryCarts and PgCartRepository (tests/integration/cart), so they agree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from functions.cart import bootstrap as composition
from functions.cart.adapters.cache import InMemoryTtlProductCache
from functions.cart.domain import OrderRejectedError, Product
from functions.cart.service import CartService
from shared_lib.errors import TransientError
from tests.unit.idempotency_fake import InMemoryIdempotencyStore

BOOK = Product(1076963, "Теория нравственных чувств | Смит Адам", 3379)
PEN = Product(1148162, "Шариковая ручка", 100)
TEA = Product(2956315, "Чай зелёный", 250)


class InMemoryCarts:
    def __init__(self) -> None:
        self.carts: dict[int, dict[int, int]] = {}
        self._lock = threading.Lock()

    def items_of(self, user_id: int) -> dict[int, int]:
        with self._lock:
            return dict(self.carts.get(user_id, {}))

    def add(self, user_id: int, sku: int, count: int, limit: int) -> bool:
        with self._lock:
            cart = self.carts.setdefault(user_id, {})
            wanted = cart.get(sku, 0) + count
            if wanted > limit:
                if not cart:
                    del self.carts[user_id]
                return False
            cart[sku] = wanted
            return True

    def remove(self, user_id: int, sku: int) -> None:
        with self._lock:
            cart = self.carts.get(user_id, {})
            cart.pop(sku, None)
            if not cart:
                self.carts.pop(user_id, None)

    def clear(self, user_id: int) -> None:
        with self._lock:
            self.carts.pop(user_id, None)

    def remove_ordered(self, user_id: int, ordered: Mapping[int, int]) -> None:
        with self._lock:
            cart = self.carts.get(user_id, {})
            for sku, count in ordered.items():
                if sku in cart:
                    left = cart[sku] - count
                    if left > 0:
                        cart[sku] = left
                    else:
                        del cart[sku]
            if not cart:
                self.carts.pop(user_id, None)


class InMemoryCatalog:
    """The product service: `down` makes every call an outage; `served` counts answered lookups."""

    def __init__(self, *products: Product) -> None:
        self.products = {p.sku: p for p in products}
        self.down = False
        self.served = 0

    def get(self, sku: int) -> Product | None:
        if self.down:
            raise TransientError("the product service is unavailable")
        self.served += 1
        return self.products.get(sku)

    def many(self, skus: Sequence[int]) -> dict[int, Product]:
        found = {}
        for sku in skus:
            product = self.get(sku)
            if product is not None:
                found[sku] = product
        return found


class InMemoryStock:
    def __init__(self, stock: Mapping[int, int]) -> None:
        self.stock = dict(stock)
        self.down = False

    def available(self, sku: int) -> int | None:
        if self.down:
            raise TransientError("loms is unavailable")
        return self.stock.get(sku)


class InMemoryOrders:
    """loms' order creation: `reject` refuses the reservation, `down` is an outage; `orders` what it took.

    `during` runs inside create_order, to act out something happening while loms is working.
    """

    def __init__(self) -> None:
        self.orders: dict[int, tuple[int, dict[int, int]]] = {}
        self.reject = False
        self.down = False
        self.during: Callable[[], None] | None = None
        self.keys: dict[str, int] = {}  # as loms' Idempotency-Key store

    def create_order(self, user_id: int, items: Mapping[int, int], idempotency_key: str | None = None) -> int:
        if self.down:
            raise TransientError("loms is unavailable")
        if idempotency_key is not None and idempotency_key in self.keys:
            return self.keys[idempotency_key]
        if self.during is not None:
            self.during()
        if self.reject:
            raise OrderRejectedError()
        order_id = len(self.orders) + 1
        self.orders[order_id] = (user_id, dict(items))
        if idempotency_key is not None:
            self.keys[idempotency_key] = order_id
        return order_id


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Shop:
    """A cart service on fakes, with the fakes at hand for arranging and asserting."""

    carts: InMemoryCarts = field(default_factory=InMemoryCarts)
    catalog: InMemoryCatalog = field(default_factory=lambda: InMemoryCatalog(BOOK, PEN, TEA))
    stock: InMemoryStock = field(default_factory=lambda: InMemoryStock({BOOK.sku: 10, PEN.sku: 2**40}))
    orders: InMemoryOrders = field(default_factory=InMemoryOrders)
    clock: FakeClock = field(default_factory=FakeClock)
    cache_ttl: float = 0
    idempotency: InMemoryIdempotencyStore = field(default_factory=InMemoryIdempotencyStore)

    def __post_init__(self) -> None:
        self.cache = InMemoryTtlProductCache(self.cache_ttl, clock=self.clock)
        self.service = CartService(
            carts=self.carts, catalog=self.catalog, stock=self.stock, orders=self.orders, cache=self.cache
        )

    def bootstrap(self) -> composition.Root:
        """The cart's composition root on these fakes, made the one its handlers use (`reset()` after)."""
        return composition.bootstrap(
            carts=self.carts,
            catalog=self.catalog,
            stock=self.stock,
            orders=self.orders,
            cache=self.cache,
            idempotency=self.idempotency,
        )
