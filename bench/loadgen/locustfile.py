"""The shop under load with Locust (`make loadgen`): shoppers browse products, fill a cart, check out and pay.

Against `make run` (SHOP_TARGET=local, the default): each service on its contract port on 127.0.0.1.
Against the cluster (SHOP_TARGET=cluster): every call goes to the ingress (SHOP_INGRESS, default
http://127.0.0.1:31080) with the Host header of the function's Knative Service.
    locust -f bench/loadgen/locustfile.py --headless -u 20 -r 5 -t 60s          (PYTHONPATH=.)
Locust prints request rates, latencies and failures per function. Only loopback addresses are ever called.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from locust import HttpUser, between, task

from functions import table
from k8s import generate

TARGET = os.environ.get("SHOP_TARGET", "local")
INGRESS = os.environ.get("SHOP_INGRESS", "http://127.0.0.1:31080")
PORT_OFFSET = int(os.environ.get("SHOP_PORT_OFFSET", "0"))
WAIT_MAX = float(os.environ.get("SHOP_WAIT_MAX_SECONDS", "2"))
API_KEY = os.environ.get("SHOP_API_KEY", "testToken")
STOCK = Path(__file__).resolve().parents[2] / "functions" / "loms" / "data" / "stock-data.json"
# SKUs with plenty of stock, so a cart is rarely refused (412) for a reason other than load
SKUS = [r["sku"] for r in json.loads(STOCK.read_text()) if r["total_count"] - r["reserved"] >= 50]


def _loopback(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"{url}: the load generator only calls loopback addresses")
    return url.rstrip("/")


if TARGET not in ("local", "cluster"):
    raise SystemExit("SHOP_TARGET is local (make run) or cluster (the ingress)")
_INGRESS = _loopback(INGRESS)


def address(function: str) -> tuple[str, dict[str, str]]:
    """Base URL and extra headers that reach one function."""
    if TARGET == "cluster":
        return _INGRESS, {"Host": generate.external_host(function)}
    port = table.SERVICES[table.BY_NAME[function].service].port + PORT_OFFSET
    return f"http://127.0.0.1:{port}", {}


class Shopper(HttpUser):
    host = "http://127.0.0.1"  # every request names its full URL; this only satisfies Locust
    wait_time = between(WAIT_MAX / 4, WAIT_MAX)

    def on_start(self) -> None:
        self.user_id = random.randrange(10**9, 10**12)

    def call(
        self,
        function: str,
        path: str,
        ok: tuple[int, ...] = (200,),
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        base, routing = address(function)
        route = table.route(function)
        with self.client.request(
            route.method,
            base + path,
            name=function,
            headers={**routing, **(headers or {})},
            data=None if body is None else json.dumps(body),
            catch_response=True,
        ) as response:
            if response.status_code not in ok:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return None
            response.success()
            return response.json() if response.text else None

    @task(5)
    def browse(self) -> None:
        start = random.choice([0, *SKUS])
        self.call(
            "list_products", f"/product?count=20&start_after_sku={start}", headers={"X-API-KEY": API_KEY}
        )
        self.call("get_product", f"/product/{random.choice(SKUS)}", headers={"X-API-KEY": API_KEY})

    @task(1)
    def buy(self) -> None:
        """One or two SKUs into a cart, the cart, checkout, payment; a refusal for stock is no error."""
        for sku in random.sample(SKUS, k=random.randint(1, 2)):
            self.call("add_item", f"/user/{self.user_id}/cart/{sku}", ok=(200, 412), body={"count": 1})
        self.call("list_cart", f"/user/{self.user_id}/cart", ok=(200, 404))
        order = self.call("checkout", f"/checkout/{self.user_id}", ok=(200, 404, 412))
        if order and "order_id" in order:
            self.call("pay_order", "/order/pay", body={"orderId": str(order["order_id"])})
        self.user_id = random.randrange(10**9, 10**12)  # a fresh cart for the next round
