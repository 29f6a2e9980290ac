"""HttpProductCatalog against the real product function served on a local port, and against a scripted
server for what the real one cannot be made to do on cue (5xx, 420, slow answers, counting concurrency).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import functions_framework
import pytest
from werkzeug.wrappers import Request, Response

from functions.cart.adapters.product_http import HttpProductCatalog, ProductThrottledError
from functions.cart.domain import Product
from functions.product import bootstrap as product_bootstrap
from shared_lib.devtools.ports import free_port
from shared_lib.errors import TransientError
from shared_lib.httpclient import HttpClient, UnexpectedResponseError
from shared_lib.postgres import ConnectionPool
from shared_lib.ratelimit import PgRateLimiter, RateLimiter
from shared_lib.retry import Backoff
from tests.conftest import MakeDatabase
from tests.integration.shared_lib.serving import serve_in_thread
from tests.polling import wait_for
from tests.ratelimit_fake import InProcessRateLimiter

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

pytestmark = pytest.mark.integration

BOOK = Product(1076963, "Теория нравственных чувств | Смит Адам", 3379)
STOCKED = [2956315, 1076963, 135717466, 135937324, 1148162, 1625903, 2618151, 2958025, 3596599, 3618852]
NO_BACKOFF = Backoff(0.01, 0.01, jitter=False)


def catalog(
    url: str,
    limiter: RateLimiter | None = None,
    *,
    key: str = "testToken",
    workers: int = 5,
    tries: int = 3,
    backoff: Backoff = NO_BACKOFF,
) -> HttpProductCatalog:
    client = HttpClient(url, name="the product service", timeout=30, headers={"X-API-KEY": key})
    return HttpProductCatalog(
        client, limiter or InProcessRateLimiter(10_000), workers=workers, tries=tries, backoff=backoff
    )


ProductServer = Callable[..., AbstractContextManager[str]]


class Answers:
    """WSGI middleware: records (arrival on the monotonic clock, status) of every answer the app gives."""

    def __init__(self) -> None:
        self.app: Any = None
        self.seen: list[tuple[float, int]] = []
        self._lock = threading.Lock()

    def around(self, app: Any) -> Answers:
        self.app = app
        return self

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        arrived = time.monotonic()

        def recording(status: str, headers: Any, exc_info: Any = None) -> Any:
            with self._lock:
                self.seen.append((arrived, int(status.split()[0])))
            return start_response(status, headers, exc_info)

        return self.app(environ, recording)  # type: ignore[no-any-return]

    def since(self, index: int) -> list[tuple[float, int]]:
        with self._lock:
            return self.seen[index:]


@pytest.fixture
def product_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProductServer]:
    """product_server(RATE_LIMIT_RPS="2", …) serves the real get_product with that PRODUCT_* configuration;
    product_server(answers.around, …) serves it through that middleware (Answers: what it answered)."""

    @contextmanager
    def serve(middleware: Callable[[Any], Any] | None = None, **env: str) -> Iterator[str]:
        for name, value in env.items():
            monkeypatch.setenv(f"PRODUCT_{name}", value)
        product_bootstrap.reset()  # built again, lazily, from this configuration
        app = functions_framework.create_app(target="get_product", source="functions/product/main.py")
        with serve_in_thread(middleware(app) if middleware else app) as url:
            yield url

    yield serve
    product_bootstrap.reset()


def test_a_known_product_and_an_unknown_one(product_server: ProductServer) -> None:
    with product_server() as url:
        products = catalog(url)
        assert products.get(BOOK.sku) == BOOK
        assert products.get(1) is None


def test_many_returns_the_known_products_by_sku(product_server: ProductServer) -> None:
    with product_server() as url:
        found = catalog(url).many([*STOCKED, 1, 2])
    assert sorted(found) == sorted(STOCKED)
    assert found[BOOK.sku] == BOOK


def test_a_429_from_the_product_limit_is_retried_after_a_backoff(product_server: ProductServer) -> None:
    # the product lets one request through, then one more every half second
    answers = Answers()
    with product_server(answers.around, RATE_LIMIT_RPS="2", RATE_LIMIT_BURST="1") as url:
        products = catalog(url, backoff=Backoff(0.6, 1.0, jitter=False))
        assert products.get(BOOK.sku) == BOOK
        # the next request comes while the bucket is empty and is refused; on a busy machine it may come after
        # the refill and be admitted, so ask until the product has refused one (what its limiter decided)
        for _ in range(20):
            before = len(answers.since(0))
            assert products.get(1148162) is not None
            if 429 in [status for _, status in answers.since(before)]:
                break
        else:
            pytest.fail("the product never refused a request")
    (refused, first), (retried, second) = answers.since(before)
    assert (first, second) == (429, 200)  # refused, then admitted on the one retry
    assert retried - refused >= 0.6  # which came after the backoff


def test_three_429s_in_a_row_are_a_transient_error(product_server: ProductServer) -> None:
    with product_server(RATE_LIMIT_RPS="0.01", RATE_LIMIT_BURST="1") as url:
        products = catalog(url)
        products.get(BOOK.sku)
        with pytest.raises(ProductThrottledError) as caught:
            products.get(BOOK.sku)
    assert isinstance(caught.value, TransientError)  # a 503 for the cart's caller


def test_the_shared_limiter_keeps_lists_from_two_replicas_under_the_product_rate(
    product_server: ProductServer, make_database: MakeDatabase
) -> None:
    # the product admits 20/s with a burst of 10; 40 requests from two "replicas" at once would pass the
    # burst without the shared limiter, and with one try a single 429 would fail the list
    dsn = make_database("cart")
    limiters = [PgRateLimiter(ConnectionPool(dsn, size=5), "product", rate=20) for _ in range(2)]
    results: list[dict[int, Product]] = []
    errors: list[BaseException] = []
    with product_server(RATE_LIMIT_RPS="20", RATE_LIMIT_BURST="10") as url:

        def replica(limiter: PgRateLimiter) -> None:
            try:
                results.append(catalog(url, limiter, tries=1).many(STOCKED * 2))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=replica, args=(limiter,)) for limiter in limiters]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - started
    assert errors == []
    assert [sorted(found) for found in results] == [sorted(STOCKED)] * 2
    assert elapsed >= 39 / 20 * 0.95  # 40 requests, strictly spaced


def test_a_wrong_key_is_a_bug_not_an_outage(product_server: ProductServer) -> None:
    with product_server() as url, pytest.raises(UnexpectedResponseError):
        catalog(url, key="wrong").get(BOOK.sku)


def test_a_closed_port_is_a_transient_error() -> None:
    products = catalog(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError):
        products.get(BOOK.sku)
    with pytest.raises(TransientError):
        products.many([BOOK.sku, 1148162])


# --- a scripted product service ------------------------------------------------------------------------


class Script:
    """A product service whose answers are chosen per SKU: status codes in turn, delays, and concurrency."""

    def __init__(self) -> None:
        self.statuses: dict[int, list[int]] = {}
        self.delay = 0.0
        self.seen: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.together = 0  # the first `together` requests are held until that many are in flight at once
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.answer(Request(environ))(environ, start_response)

    def answer(self, request: Request) -> Response:
        sku = int(request.path.rsplit("/", 1)[-1])
        with self._lock:
            self.seen.append(sku)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            queue = self.statuses.get(sku, [])
            status = queue.pop(0) if queue else 200
            self._changed.notify_all()
            if len(self.seen) <= self.together:
                self._changed.wait_for(lambda: self.in_flight >= self.together, timeout=30)
        try:
            time.sleep(self.delay)
            if status != 200:
                return Response(json.dumps({"code": 14, "message": "", "details": []}), status=status)
            body: dict[str, Any] = {"sku": sku, "name": f"product {sku}", "price": sku % 1000}
            return Response(json.dumps(body), content_type="application/json")
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture
def scripted() -> Iterator[tuple[Script, str]]:
    script = Script()
    with serve_in_thread(script) as url:
        yield script, url


def test_at_most_five_requests_are_in_flight_for_one_list(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.together = 5  # five in flight at once, whatever the scheduler does (fewer: held 30 s, then fails)
    script.delay = 0.01
    found = catalog(url, workers=5).many(list(range(1, 31)))
    assert sorted(found) == list(range(1, 31))
    assert script.most_in_flight == 5


@pytest.mark.parametrize("status", [420, 429])
def test_420_and_429_are_retried(scripted: tuple[Script, str], status: int) -> None:
    script, url = scripted
    script.statuses[7] = [status, status]
    assert catalog(url).get(7) == Product(7, "product 7", 7)
    assert script.seen == [7, 7, 7]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_is_a_transient_error_and_is_not_retried(scripted: tuple[Script, str], status: int) -> None:
    script, url = scripted
    script.statuses[7] = [status]
    with pytest.raises(TransientError) as caught:
        catalog(url).get(7)
    assert not isinstance(caught.value, ProductThrottledError)
    assert script.seen == [7]


def test_the_first_failure_of_a_list_ends_it_without_fetching_the_rest(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.delay = 0.05
    script.statuses[3] = [500]
    with pytest.raises(TransientError):
        catalog(url, workers=5).many(list(range(1, 101)))
    wait_for(lambda: script.in_flight == 0, timeout=30, what="requests already sent finish")
    assert len(script.seen) < 20  # far from the 100 a list would have asked for


def test_a_slow_product_service_is_a_transient_error(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.delay = 1.0
    client = HttpClient(url, timeout=0.2)
    with pytest.raises(TransientError):
        HttpProductCatalog(client, InProcessRateLimiter(1000)).get(7)
