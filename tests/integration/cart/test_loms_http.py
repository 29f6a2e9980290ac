"""HttpStockLookup and HttpOrderPlacer against the real loms functions (served by the dev server in a child
process on a fresh database), and against a scripted loms for answers the real one gives only on failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from werkzeug.wrappers import Request, Response

from functions.cart.adapters.loms_http import HttpOrderPlacer, HttpStockLookup
from functions.cart.domain import OrderRejectedError
from shared_lib.devtools.ports import free_port
from shared_lib.errors import TransientError
from shared_lib.httpclient import HttpClient, UnexpectedResponseError
from tests.integration.shared_lib.serving import serve_in_thread

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

pytestmark = pytest.mark.integration

BOOK, PEN = 1076963, 1148162


def client(url: str) -> HttpClient:
    return HttpClient(url, name="loms", timeout=30)


def test_available_stock_is_total_minus_reserved_and_unknown_is_none(loms_url: str) -> None:
    stock = HttpStockLookup(client(loms_url))
    assert stock.available(BOOK) == 265
    assert stock.available(PEN) == 5
    assert stock.available(999_999_999) is None


def test_an_order_reserves_and_answers_its_id_as_an_int(loms_url: str) -> None:
    stock, orders = HttpStockLookup(client(loms_url)), HttpOrderPlacer(client(loms_url))
    before = stock.available(BOOK)
    assert before is not None
    order_id = orders.create_order(31337, {BOOK: 3, PEN: 1})
    assert isinstance(order_id, int)
    assert order_id > 0
    assert stock.available(BOOK) == before - 3
    assert orders.create_order(31337, {BOOK: 1}) != order_id


def test_a_refused_reservation_is_order_rejected_and_reserves_nothing(loms_url: str) -> None:
    stock, orders = HttpStockLookup(client(loms_url)), HttpOrderPlacer(client(loms_url))
    book_before, pen_before = stock.available(BOOK), stock.available(PEN)
    with pytest.raises(OrderRejectedError):
        orders.create_order(31337, {BOOK: 1, PEN: 1000})
    with pytest.raises(OrderRejectedError):
        orders.create_order(31337, {999_999_999: 1})  # no stock record
    assert (stock.available(BOOK), stock.available(PEN)) == (book_before, pen_before)


def test_loms_down_is_a_transient_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransientError):
        HttpStockLookup(client(url)).available(BOOK)
    with pytest.raises(TransientError):
        HttpOrderPlacer(client(url)).create_order(1, {BOOK: 1})


# --- a scripted loms -----------------------------------------------------------------------------------


class ScriptedLoms:
    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {}
        self.received: list[Any] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.answer(Request(environ))(environ, start_response)

    def answer(self, request: Request) -> Response:
        self.received.append(
            request.get_json(silent=True) if request.method == "POST" else dict(request.args)
        )
        payload = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return Response(payload, status=self.status, content_type="application/json")


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedLoms, str]]:
    loms = ScriptedLoms()
    with serve_in_thread(loms) as url:
        yield loms, url


def test_an_order_is_sent_with_int64_fields_as_strings_sorted_by_sku(
    scripted: tuple[ScriptedLoms, str],
) -> None:
    loms, url = scripted
    loms.body = {"orderId": "42"}
    assert HttpOrderPlacer(client(url)).create_order(31337, {PEN: 1, BOOK: 3}) == 42
    assert loms.received == [
        {"userId": "31337", "items": [{"sku": str(BOOK), "count": 3}, {"sku": str(PEN), "count": 1}]}
    ]


@pytest.mark.parametrize("count", [265, "265"])
def test_a_count_is_read_as_a_number_or_a_string(scripted: tuple[ScriptedLoms, str], count: Any) -> None:
    loms, url = scripted
    loms.body = {"count": count}
    assert HttpStockLookup(client(url)).available(BOOK) == 265
    assert loms.received == [{"sku": str(BOOK)}]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, {"code": 13, "message": "", "details": []}, TransientError),
        (503, {"code": 14, "message": "", "details": []}, TransientError),
        (502, b"<html>bad gateway</html>", TransientError),
        (400, {"code": 3, "message": "", "details": []}, UnexpectedResponseError),
        (200, {"orderId": "not a number"}, UnexpectedResponseError),
        (200, {"orderId": True}, UnexpectedResponseError),
        (200, b"not json", UnexpectedResponseError),
        (400, {"code": 9, "message": "", "details": []}, OrderRejectedError),
    ],
)
def test_what_an_order_answer_means(
    scripted: tuple[ScriptedLoms, str], status: int, body: Any, error: type[Exception]
) -> None:
    loms, url = scripted
    loms.status, loms.body = status, body
    with pytest.raises(error):
        HttpOrderPlacer(client(url)).create_order(1, {BOOK: 1})


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, {}, TransientError),
        (429, {}, TransientError),
        (400, {"code": 3, "message": "", "details": []}, UnexpectedResponseError),
        (200, {"count": None}, UnexpectedResponseError),
        (200, [], UnexpectedResponseError),
    ],
)
def test_what_a_stock_answer_means(
    scripted: tuple[ScriptedLoms, str], status: int, body: Any, error: type[Exception]
) -> None:
    loms, url = scripted
    loms.status, loms.body = status, body
    with pytest.raises(error):
        HttpStockLookup(client(url)).available(BOOK)
