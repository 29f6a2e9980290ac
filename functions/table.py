"""The one table of functions and workers: name, service, target, trigger (HTTP route, topic, schedule, or
`worker`: a long-running process).

The dev server, the tests, the docs and the manifests (Knative and OpenFaaS) all read this table. Data only:
no imports of handlers, no side effects. Adding a function is one row here plus its handler in
functions/<service>/main.py; adding a worker is one row of WORKERS plus its module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from shared_lib.web import Route

FunctionTrigger = Literal["http", "cloudevent", "cron"]  # a functions-framework target's
Trigger = Literal[FunctionTrigger, "worker"]


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    port: int
    precondition_status: int  # what a failed precondition (code 9) answers with: 412 in cart, 400 in loms
    public: bool = True


@dataclass(frozen=True, slots=True)
class Function:
    name: str  # the functions-framework target, unique across the shop
    service: str
    trigger: FunctionTrigger
    method: str = ""  # http only
    path: str = ""  # http only; {name:id} is a positive int64, {name} any non-empty segment
    idempotent: bool = False  # honours the Idempotency-Key header
    topic: str = ""  # cloudevent only
    schedule: str = ""  # cron only
    public: bool = True  # False: reachable inside the cluster only

    @property
    def source(self) -> str:
        return f"functions/{self.service}/main.py"


@dataclass(frozen=True, slots=True)
class Worker:
    """A long-running process of a service (`python -m <module> <args>`), not a functions-framework target.

    The dev server runs it beside its service (its metrics show on the service's port through the shared
    metrics directory); the cluster, Knative's and OpenFaaS's alike, runs it as the Deployment
    `<service>-<name>` (k8s/generate.py), with `--port <port>` added: GET /healthz there is its liveness and
    readiness probe, GET /metrics is scraped.
    """

    name: str  # unique across the table (functions and workers); DNS-1123 once "_" becomes "-"
    service: str
    module: str  # what `python -m` runs, in dev and in the cluster
    port: int  # the cluster only: where it serves /healthz and /metrics (its probes and Prometheus)
    args: tuple[str, ...] = ()  # its arguments everywhere (the cluster adds --port)
    replicas: int = 1
    # the Kafka topic it consumes, if any (in one consumer group: at most one replica per partition does
    # work); the dev server runs such a worker only when it runs Kafka
    topic: str = ""
    trigger: Literal["worker"] = "worker"


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("cart", 8080, precondition_status=412),
        Service("product", 8082, precondition_status=400),
        Service("loms", 8084, precondition_status=400),
        Service("notifier", 8085, precondition_status=400),
        Service("orders", 8081, precondition_status=400),  # the order viewer
    )
}

FUNCTIONS: tuple[Function, ...] = (
    # product
    Function("get_product", "product", "http", "GET", "/product/{sku:id}"),
    Function("list_products", "product", "http", "GET", "/product"),
    # cart
    Function("add_item", "cart", "http", "POST", "/user/{user_id:id}/cart/{sku:id}", idempotent=True),
    Function("delete_item", "cart", "http", "DELETE", "/user/{user_id:id}/cart/{sku:id}"),
    Function("clear_cart", "cart", "http", "DELETE", "/user/{user_id:id}/cart"),
    Function("list_cart", "cart", "http", "GET", "/user/{user_id:id}/cart"),
    Function("checkout", "cart", "http", "POST", "/checkout/{user_id:id}", idempotent=True),
    # loms
    Function("create_order", "loms", "http", "POST", "/order/create", idempotent=True),
    Function("order_info", "loms", "http", "GET", "/order/info"),
    Function("pay_order", "loms", "http", "POST", "/order/pay", idempotent=True),
    Function("cancel_order", "loms", "http", "POST", "/order/cancel", idempotent=True),
    Function("stock_info", "loms", "http", "GET", "/stock/info"),
    # loms, cluster-internal: PingSource (cron) or an HTTP POST from inside the cluster
    Function(
        "relay_outbox", "loms", "cron", "POST", "/internal/relay-outbox", schedule="* * * * *", public=False
    ),
    Function(
        "cancel_stale_orders",
        "loms",
        "cron",
        "POST",
        "/internal/cancel-stale-orders",
        schedule="* * * * *",
        public=False,
    ),
    # notifier
    Function(
        "notify_status",
        "notifier",
        "cloudevent",
        "POST",
        "/events/notify_status",
        topic="loms.order-events",
        public=False,
    ),
    Function("list_notifications", "notifier", "http", "GET", "/notifications"),
    # the order viewer (its orders come from the topic `orders` through the worker ingest_worker)
    Function("get_order", "orders", "http", "GET", "/order/{order_uid}"),
    Function("order_page", "orders", "http", "GET", "/"),
)

WORKERS: tuple[Worker, ...] = (
    # loms' outbox relay, always running: LISTEN/NOTIFY wakes it as soon as an event commits, where the
    # relay_outbox cron function alone would leave events waiting up to a minute (it stays as the backstop).
    # One replica: a second would only wait for the per-shard advisory lock.
    Worker("outbox_relay", "loms", "functions.loms.relay_worker", port=9090),
    # the order viewer's consumer of `orders`, in batches (one transaction per batch): measured at about ten
    # times the throughput of a KafkaSource delivering each record to a function, for a tenth of the CPU per
    # record (README, "The order viewer"). One consumer group: replicas beyond the topic's partitions idle.
    Worker("ingest_worker", "orders", "functions.orders.ingest_worker", port=9090, topic="orders"),
)

# Kafka topics: name -> partitions. Every topic a function reads or writes, and each one's dead-letter topic.
TOPICS: dict[str, int] = {
    "loms.order-events": 2,
    "loms.order-events.dlq": 1,
    "orders": 3,
    "orders.dlq": 1,
}

BY_NAME: dict[str, Function] = {f.name: f for f in FUNCTIONS}  # the functions-framework targets
WORKER_BY_NAME: dict[str, Worker] = {w.name: w for w in WORKERS}


@functools.cache  # a frozen Route built once per function: every request of the function asks for it
def route(name: str) -> Route:
    """The HTTP route of one function, with its service's error conventions.

    Cron functions are HTTP functions too (PingSource POSTs to them); a CloudEvent function's path is where
    the dev server mounts it (in the cluster it is its own Knative Service and takes POST on any path).
    """
    function = BY_NAME[name]
    if not function.path:
        raise ValueError(f"{name} has no HTTP route")
    service = SERVICES[function.service]
    return Route(
        function=function.name,
        service=function.service,
        method=function.method,
        path=function.path,
        precondition_status=service.precondition_status,
        idempotent=function.idempotent,
    )


def routes_of(service: str) -> list[Route]:
    """Every route the service's dev-server process dispatches: HTTP, cron and CloudEvent functions."""
    return [route(f.name) for f in FUNCTIONS if f.service == service and f.path]


def functions_of(service: str) -> list[Function]:
    return [f for f in FUNCTIONS if f.service == service]


def workers_of(service: str) -> list[Worker]:
    return [w for w in WORKERS if w.service == service]


def row(name: str) -> Function | Worker:
    """A function's or a worker's row, by its name."""
    return BY_NAME.get(name) or WORKER_BY_NAME[name]
