"""The cart's product cache in a real memcached, with the real product function on a local port counting
the requests it serves: a warm list_cart makes no product call, on this replica or another, concurrent
lists fetch each SKU once, and a memcached outage costs calls, never a failed list (without the replica's own
tier; with it, the replica serves what it kept, and its lapse is tested on a fake clock in tests/unit/cart).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import functions_framework
import pytest
from werkzeug.test import Client

from functions import devserver
from functions.cart import bootstrap
from functions.cart.adapters.cache import CachedProductCatalog
from functions.cart.adapters.postgres import PgCartRepository
from functions.cart.adapters.product_http import HttpProductCatalog
from functions.cart.settings import CartSettings
from functions.product import bootstrap as product_bootstrap
from shared_lib.cache import MemcachedCache
from shared_lib.devtools.memcached_server import MemcachedServer
from shared_lib.devtools.ports import free_port
from shared_lib.httpclient import HttpClient
from shared_lib.postgres import ConnectionPool
from tests.conftest import MakeDatabase
from tests.integration.shared_lib.serving import serve_in_thread
from tests.ratelimit_fake import InProcessRateLimiter

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

pytestmark = pytest.mark.integration

SKUS = [1076963, 1148162, 1625903, 2618151, 2956315]


class CountingProduct:
    """The real get_product function, counting the requests it answers per path."""

    def __init__(self) -> None:
        product_bootstrap.reset()
        self.app = functions_framework.create_app(target="get_product", source="functions/product/main.py")
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        with self._lock:
            self.requests[environ["PATH_INFO"]] += 1
        return self.app(environ, start_response)

    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())


@pytest.fixture
def product() -> Iterator[tuple[CountingProduct, str]]:
    counting = CountingProduct()
    with serve_in_thread(counting) as url:
        yield counting, url
    product_bootstrap.reset()


@pytest.fixture(scope="module")
def cart_dsn(make_database: MakeDatabase) -> str:
    return make_database("cart")


@pytest.fixture
def replica(cart_dsn: str) -> Iterator[Callable[..., Client]]:
    """replica(product_url, memcached, local_ttl=5) -> a client of a freshly built cart (its own pools and
    cache client, its own local tier of `local_ttl` seconds), through the dev server's dispatcher, as one
    more replica of the cart service."""
    # a key space of this test's own, shared by its replicas: nothing another test cached is a hit here
    prefix = f"cart-{uuid.uuid4().hex[:8]}:"

    def build(product_url: str, memcached: str, local_ttl: float = 5) -> Client:
        settings = CartSettings(
            database_url=cart_dsn,
            product_url=product_url,
            loms_url=f"http://127.0.0.1:{free_port()}",  # listing never asks loms
            memcached=memcached,
            product_local_ttl_seconds=local_ttl,
            http_timeout_seconds=2,
        )
        bootstrap.bootstrap(settings, memcached_prefix=prefix)
        return Client(devserver.service_app("cart"))

    yield build
    bootstrap.reset()


def fill_cart(dsn: str, user: int) -> None:
    pool = ConnectionPool(dsn, size=1)
    try:
        carts = PgCartRepository(pool)
        for sku in SKUS:
            assert carts.add(user, sku, 2, limit=100)
    finally:
        pool.close()


def list_cart(client: Client, user: int) -> Any:
    return json.loads(list_bytes(client, user))


def list_bytes(client: Client, user: int) -> bytes:
    response = client.get(f"/user/{user}/cart")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    return response.get_data()


def test_a_warm_list_cart_makes_no_product_call(
    replica: Callable[..., Client],
    product: tuple[CountingProduct, str],
    memcached_address: str,
    cart_dsn: str,
    unique_id: Callable[[], int],
) -> None:
    counting, url = product
    user = unique_id()
    fill_cart(cart_dsn, user)
    first = replica(url, memcached_address)
    answer = list_bytes(first, user)  # from the product service
    cold = json.loads(answer)
    assert [i["sku"] for i in cold["items"]] == SKUS
    assert cold["items"][0]["name"] == "Теория нравственных чувств | Смит Адам"
    assert counting.total() == len(SKUS)
    assert list_bytes(first, user) == answer  # from the replica's own tier: byte for byte the same answer
    assert list_bytes(first, user) == answer
    assert counting.total() == len(SKUS)
    second = replica(url, memcached_address)  # another replica: its own process cache is empty
    assert list_bytes(second, user) == answer  # from memcached
    assert counting.total() == len(SKUS)


def test_concurrent_lists_on_several_replicas_fetch_each_product_once(
    product: tuple[CountingProduct, str], memcached_address: str
) -> None:
    counting, url = product
    prefix = f"cart-{uuid.uuid4().hex[:8]}:"  # a fresh key space: nothing cached by earlier tests
    replicas = [
        CachedProductCatalog(
            HttpProductCatalog(
                HttpClient(url, headers={"X-API-KEY": "testToken"}, timeout=30), InProcessRateLimiter(10_000)
            ),
            MemcachedCache(memcached_address, prefix=prefix),
            60,
        )
        for _ in range(6)
    ]
    barrier = threading.Barrier(len(replicas))
    results: list[Any] = []

    def one_list(catalog: CachedProductCatalog) -> None:
        barrier.wait()
        results.append(sorted(catalog.many(SKUS)))

    threads = [threading.Thread(target=one_list, args=(catalog,)) for catalog in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [SKUS] * len(replicas)
    assert counting.requests == Counter({f"/product/{sku}": 1 for sku in SKUS})


@pytest.mark.parametrize(
    ("local_ttl", "product_calls"),
    [
        # no local tier: every list asks memcached, so the outage costs a product call per line, not a failure
        pytest.param(0, len(SKUS), id="without-the-local-tier-product-calls-not-failures"),
        # far longer than the test: never lapses here, so the replica serves what it kept
        pytest.param(300, 0, id="the-local-tier-serves-what-it-kept"),
    ],
)
def test_memcached_stopped_mid_test_costs_product_calls_never_failures_or_none_with_the_local_tier(
    replica: Callable[..., Client],
    product: tuple[CountingProduct, str],
    memcached_flap: MemcachedServer,
    cart_dsn: str,
    unique_id: Callable[[], int],
    local_ttl: float,
    product_calls: int,
) -> None:
    counting, url = product
    user = unique_id()
    fill_cart(cart_dsn, user)
    cart = replica(url, memcached_flap.address, local_ttl=local_ttl)
    warm = list_cart(cart, user)
    assert counting.total() == len(SKUS)
    memcached_flap.stop()
    assert list_cart(cart, user) == warm
    assert counting.total() == len(SKUS) + product_calls  # 0: neither memcached nor the product service
