"""loms over HTTP: available stock (loms.stock_info) and order creation (loms.create_order).

loms writes int64 fields as JSON strings; we send them as strings too. Creating an order is not retried:
it is not idempotent, and a refused reservation is an answer, not a hiccup.
"""

from __future__ import annotations

from collections.abc import Mapping

from functions.cart.domain import OrderRejectedError
from shared_lib.errors import GRPC_FAILED_PRECONDITION, TransientError
from shared_lib.httpclient import HttpClient, HttpResponse, UnexpectedResponseError
from shared_lib.ints import INT64_MAX, INT64_MIN, parse_int


def _unavailable(response: HttpResponse) -> TransientError | None:
    if response.status >= 500 or response.status == 429:
        return TransientError(f"loms is unavailable ({response.status})")
    return None


def _int64(value: object, field: str) -> int:
    """An int64 written as protojson does (a string) or as a JSON number."""
    try:
        return parse_int(value, INT64_MIN, INT64_MAX)
    except ValueError:
        raise UnexpectedResponseError(f"loms answered a non-integer {field}") from None


class HttpStockLookup:
    def __init__(self, client: HttpClient) -> None:
        self.client = client

    def available(self, sku: int) -> int | None:
        response = self.client.get("/stock/info", query={"sku": sku})
        if response.status == 404:
            return None
        if (error := _unavailable(response)) is not None:
            raise error
        if response.status != 200:
            raise UnexpectedResponseError(f"loms answered {response.status} to a stock lookup")
        body = response.json()
        count = body.get("count") if isinstance(body, dict) else None
        return max(0, _int64(count, "count"))


class HttpOrderPlacer:
    def __init__(self, client: HttpClient) -> None:
        self.client = client

    def create_order(self, user_id: int, items: Mapping[int, int], idempotency_key: str | None = None) -> int:
        payload = {
            "userId": str(user_id),
            "items": [{"sku": str(sku), "count": count} for sku, count in sorted(items.items())],
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = self.client.post("/order/create", json_body=payload, headers=headers)
        if response.status == 400 and response.error_code() == GRPC_FAILED_PRECONDITION:
            raise OrderRejectedError()
        if (error := _unavailable(response)) is not None:
            raise error
        if response.status != 200:
            raise UnexpectedResponseError(f"loms answered {response.status} to an order")
        body = response.json()
        return _int64(body.get("orderId") if isinstance(body, dict) else None, "orderId")
