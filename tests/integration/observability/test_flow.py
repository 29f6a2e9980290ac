"""A scripted shop session, observed: every service's functions as their containers build them (each through
functions.entrypoint's observing middleware), served on real local ports in this process and calling each
other over real HTTP, on real PostgreSQL, Kafka and Memcached; the outbox relayed to Kafka and delivered to
the notifier by the local KafkaSource.

Then: a checkout and its payment are one connected trace from cart through loms (an in-memory exporter sees
every span), the notifier's handling of each event links across Kafka to the loms request that changed the
order, and /metrics shows every family with the labels the dashboards query.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from functions import devserver, entrypoint
from functions.cart import bootstrap as cart
from functions.loms import bootstrap as loms
from functions.notifier import bootstrap as notifier
from functions.product import bootstrap as product
from shared_lib.devtools.ports import free_port
from shared_lib.errors import TransientError
from shared_lib.events import Event, KafkaPublisher
from shared_lib.eventsource import KafkaEventSource
from shared_lib.httpclient import HttpClient
from shared_lib.observability import logs, settings, tracing
from shared_lib.postgres import ConnectionPool
from tests.conftest import MakeDatabase
from tests.integration.shared_lib.serving import serve_in_thread
from tests.polling import wait_for

pytestmark = pytest.mark.integration

BOOK, PEN = 1076963, 1148162
TOPIC = "loms.order-events"
ROOT_TRACE = "5b8efff798038103d269b633813fc60c"
ROOT_SPAN = "eee19b7ec3c1b174"
CLIENT_TRACEPARENT = f"00-{ROOT_TRACE}-{ROOT_SPAN}-01"  # the shop's front end: one journey, one trace


def reset_bootstraps() -> None:
    for root in (cart, loms, notifier, product):
        root.reset()


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use(tracing.OtelBackend.exporting("shop", exporter, batch=False))
    yield exporter
    tracing.reset()


@pytest.fixture(scope="module")
def shop(
    spans: InMemorySpanExporter,
    make_database: MakeDatabase,
    kafka_bootstrap: str,
    memcached_address: str,
) -> Iterator[dict[str, str]]:
    """{service: base URL}: product, loms, notifier and cart served here, configured like the dev server."""
    environment = {
        "CART_DATABASE_URL": make_database("cart"),
        "CART_MEMCACHED": memcached_address,
        "CART_PRODUCT_LOCAL_TTL_SECONDS": "0",  # no tier in the process: a second list reads Memcached
        "CART_PRODUCT_RPS": "200",
        "LOMS_SHARD_DSNS": make_database("loms"),
        "LOMS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LOMS_EVENT_SINKS": "",
        "NOTIFIER_DATABASE_URL": make_database("notifier"),
        "NOTIFIER_MEMCACHED": memcached_address,
    }
    patch = pytest.MonkeyPatch()
    for name, value in environment.items():
        patch.setenv(name, value)
    settings.reset()
    reset_bootstraps()
    loms.seed_stock()
    urls: dict[str, str] = {}
    with (
        serve_in_thread(devserver.service_app("product")) as urls["product"],
        serve_in_thread(devserver.service_app("loms")) as urls["loms"],
        serve_in_thread(devserver.service_app("notifier")) as urls["notifier"],
    ):
        patch.setenv("CART_PRODUCT_URL", urls["product"])
        patch.setenv("CART_LOMS_URL", urls["loms"])
        cart.reset()  # built again from this environment on the first request
        with serve_in_thread(devserver.service_app("cart")) as urls["cart"]:
            try:
                yield urls
            finally:
                publisher = getattr(loms.publisher(), "inner", None)
                if isinstance(publisher, KafkaPublisher):
                    publisher.close()
                reset_bootstraps()  # closes the pools each root opened
                patch.undo()
                settings.reset()
                logs.reset()


def call(
    base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """A call as the shop's front end makes it (plain HTTP: the headers given are the ones sent)."""
    data = None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})} if data is not None else headers or {}
    request = urllib.request.Request(base + path, data=data, method=method, headers=sent)  # not urllib's form
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    try:
        return status, (json.loads(payload) if payload else None)
    except ValueError:
        return status, payload.decode()


@pytest.fixture(scope="module")
def session(shop: dict[str, str], kafka_bootstrap: str, spans: InMemorySpanExporter) -> dict[str, Any]:
    """The scripted session; what it produced, for the tests below to look at."""
    user = 7_000_000 + uuid.uuid4().int % 1_000_000
    journey = {"traceparent": CLIENT_TRACEPARENT}
    source = KafkaEventSource(
        kafka_bootstrap,
        TOPIC,
        f"observability-{uuid.uuid4().hex[:8]}",
        f"{shop['notifier']}/events/notify_status",
        initial_offset="latest",
        backoff_delay=0.05,
    )
    source.start()
    try:
        assert source.wait_assigned(30)
        cart, notifications = shop["cart"], shop["notifier"]
        assert (
            call(cart, "POST", f"/user/{user}/cart/{BOOK}", {"count": 2}, {"Idempotency-Key": "k1"})[0] == 200
        )
        assert call(cart, "POST", f"/user/{user}/cart/{PEN}", {"count": 1})[0] == 200
        for _ in range(2):  # the second list finds the products in Memcached
            assert call(cart, "GET", f"/user/{user}/cart")[0] == 200
        assert call(cart, "GET", f"/user/{user + 1}/cart")[0] == 404
        status, body = call(cart, "POST", f"/checkout/{user}", headers=journey)
        assert status == 200, body
        order_id = int(body["order_id"])
        assert call(shop["loms"], "POST", "/order/pay", {"orderId": str(order_id)}, journey)[0] == 200

        relay = loms.relay()
        try:
            assert relay.drain() >= 3  # new, awaiting payment, paid (and whatever other tests left behind)
        finally:
            relay.close()
        window = {"user_id": str(user), "from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
        query = "&".join(f"{k}={v}" for k, v in window.items())
        wait_for(
            lambda: len(call(notifications, "GET", f"/notifications?{query}")[1]["items"]) == 3,
            what="three notifications",
        )
        assert call(notifications, "GET", f"/notifications?{query}")[0] == 200  # from the cache this time
        wait_for(lambda: source.stats.delivered >= 3, what="three deliveries")
    finally:
        source.stop()
    return {"user": user, "order_id": order_id}


# --- one trace from cart through loms, linked across Kafka -----------------------------------------------


def named(span: ReadableSpan) -> str:
    """A span's name; a query's without the test database's suffix (`SELECT cart_1a2b…` → `SELECT cart`)."""
    if span.attributes and span.attributes.get("db.system.name") == "postgresql":
        return span.name.split("_")[0]
    return span.name


def in_trace(spans: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]


def test_checkout_and_payment_are_one_connected_trace_from_cart_through_loms(
    session: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    journey = in_trace(spans, ROOT_TRACE)
    names = {named(s) for s in journey}
    assert {
        "POST /checkout/{user_id:id}",  # cart
        "POST loms",  # cart's call to create_order
        "POST /order/create",  # loms, under cart's call
        "UPDATE loms",  # the create (one statement: reservation, order, items, events), the status change
        "SELECT cart",
        "DELETE cart",
        "POST /order/pay",  # the payment, same journey
    } <= names, " | ".join(sorted(names))
    stored = [  # the order, its items and outbox events are written in the trace, under loms' create
        str(s.attributes.get("db.query.text", ""))
        for s in journey
        if s.attributes and named(s) in ("INSERT loms", "UPDATE loms")
    ]
    assert any("INSERT INTO orders" in q and "INSERT INTO outbox" in q for q in stored), stored
    ids = {s.context.span_id for s in journey}
    for span in journey:  # connected: every span's parent is in the trace, or is the front end's span
        assert span.parent is not None
        assert span.parent.span_id in ids or f"{span.parent.span_id:016x}" == ROOT_SPAN, span.name
    create = next(s for s in journey if s.name == "POST /order/create")
    caller = next(s for s in journey if s.name == "POST loms")
    assert create.kind == SpanKind.SERVER and create.parent is not None
    assert create.parent.span_id == caller.context.span_id
    assert create.attributes is not None and create.attributes["shop.order_id"] == str(session["order_id"])


def test_the_outbox_rows_carry_the_requests_trace(
    session: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    pool = ConnectionPool(loms.settings().shards()[0], size=1)
    try:
        rows = pool.run(
            "SELECT status, traceparent FROM outbox WHERE order_id = :o ORDER BY event_id",
            o=session["order_id"],
        )
    finally:
        pool.close()
    journey = {s.name: s for s in in_trace(spans, ROOT_TRACE)}
    create, pay = journey["POST /order/create"], journey["POST /order/pay"]
    expected = {
        "new": create,
        "awaiting payment": create,
        "paid": pay,
    }
    assert [status for status, _ in rows] == ["new", "awaiting payment", "paid"]
    for status, traceparent in rows:
        span = expected[status]
        assert traceparent == f"00-{ROOT_TRACE}-{span.context.span_id:016x}-01", status


def test_the_relay_and_each_events_handling_link_to_the_change_across_kafka(
    session: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    journey = {s.context.span_id for s in in_trace(spans, ROOT_TRACE)}
    linked = [
        s
        for s in spans.get_finished_spans()
        if any(f"{link.context.trace_id:032x}" == ROOT_TRACE for link in s.links)
    ]
    publishes = [s for s in linked if s.kind == SpanKind.PRODUCER]
    handlings = [s for s in linked if s.kind == SpanKind.CONSUMER]
    assert publishes and all(s.name == f"publish {TOPIC}" for s in publishes)
    assert len(handlings) == 3  # new, awaiting payment, paid: each handled once, each in its own trace
    for handling in handlings:
        assert handling.name == f"process {TOPIC}"
        assert handling.parent is None  # a link, not a fake parent
        assert f"{handling.context.trace_id:032x}" != ROOT_TRACE
        assert all(link.context.span_id in journey for link in handling.links)
        assert handling.attributes is not None
        assert float(handling.attributes["shop.event.delay_seconds"]) >= 0  # type: ignore[arg-type]
        assert int(str(handling.attributes["messaging.message.id"])) > 0
        inside = [
            s for s in spans.get_finished_spans() if s.parent and s.parent.span_id == handling.context.span_id
        ]
        assert inside, "the notifier's own work is traced under its handling"


# --- /metrics after the session --------------------------------------------------------------------------


def scrape(shop: dict[str, str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """What GET /metrics of a function answers (every function here shares this process's registry)."""
    response = Client(entrypoint.function_app("list_cart")).get("/metrics")
    assert response.status_code == 200
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for found, v in samples.get(name, []) if all(found.get(k) == w for k, w in labels.items()))


def test_metrics_show_every_family_with_its_labels(
    session: dict[str, Any], shop: dict[str, str], kafka_bootstrap: str, fresh_topic: Callable[..., str]
) -> None:
    # a dead letter and a failed statement, so that those series exist too
    topic = fresh_topic()
    KafkaPublisher(kafka_bootstrap).publish(topic, [Event(id="1", source="/test", type="t", data=b"{}")])
    dead = KafkaEventSource(
        kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:6]}", f"http://127.0.0.1:{free_port()}/", retries=0
    )
    with dead:
        wait_for(lambda: dead.stats.dead_lettered == 1, what="a dead letter")
    broken = ConnectionPool(loms.settings().shards()[0], size=1)
    with pytest.raises(Exception, match="no_such_table"):
        broken.run("SELECT * FROM no_such_table")
    broken.close()
    with pytest.raises(TransientError):
        HttpClient(f"http://127.0.0.1:{free_port()}", name="the void", timeout=1).get("/")

    m = scrape(shop)
    # servers: every function of the session by route template and status
    for function, route, status in [
        ("add_item", "/user/{user_id:id}/cart/{sku:id}", "200"),
        ("list_cart", "/user/{user_id:id}/cart", "200"),
        ("list_cart", "/user/{user_id:id}/cart", "404"),
        ("checkout", "/checkout/{user_id:id}", "200"),
        ("get_product", "/product/{sku:id}", "200"),
        ("stock_info", "/stock/info", "200"),
        ("create_order", "/order/create", "200"),
        ("pay_order", "/order/pay", "200"),
        ("notify_status", "/events/notify_status", "200"),
        ("list_notifications", "/notifications", "200"),
    ]:
        labels = {"function": function, "route": route, "status": status}
        assert value(m, "shop_http_requests_total", **labels) >= 1, labels
        assert value(m, "shop_http_request_duration_seconds_count", **labels) >= 1, labels
        assert value(m, "shop_http_request_duration_seconds_bucket", le="+Inf", **labels) >= 1, labels
    # clients
    assert (
        value(m, "shop_http_client_request_duration_seconds_count", target="product-service", status="200")
        >= 2
    )
    assert value(m, "shop_http_client_request_duration_seconds_count", target="loms", status="200") >= 2
    assert value(m, "shop_http_client_request_duration_seconds_count", target="void", status="error") == 1
    # the database, by kind and outcome
    for kind in ("select", "insert", "update", "delete"):
        assert value(m, "shop_db_queries_total", kind=kind, outcome="ok") >= 1, kind
        assert value(m, "shop_db_query_duration_seconds_count", kind=kind, outcome="ok") >= 1, kind
    assert value(m, "shop_db_queries_total", kind="select", outcome="error") >= 1
    # orders, the outbox and its relay
    for status in ("new", "awaiting payment", "paid"):
        assert value(m, "shop_order_status_changes_total", status=status) >= 1, status
    assert value(m, "shop_outbox_backlog", shard="0") == 0  # all relayed
    assert ("shop_outbox_oldest_unsent_age_seconds") in m
    assert value(m, "shop_events_publish_duration_seconds_count", topic=TOPIC, outcome="ok") >= 1
    assert value(m, "shop_events_published_total", topic=TOPIC) >= 3
    assert value(m, "shop_events_relay_delay_seconds_count", topic=TOPIC) >= 3
    assert value(m, "shop_events_consume_delay_seconds_count", topic=TOPIC) >= 3
    # the event source
    assert value(m, "shop_eventsource_delivered_total", topic=TOPIC) >= 3
    assert value(m, "shop_eventsource_delivery_delay_seconds_count", topic=TOPIC) >= 3
    assert value(m, "shop_eventsource_dead_lettered_total", topic=topic) == 1
    assert any(labels.get("topic") == TOPIC for labels, _ in m["shop_eventsource_lag_records"])
    # the notifier's outcomes
    assert value(m, "shop_notifier_events_total", outcome="notified") >= 3
    assert value(m, "shop_notifier_events_total", outcome="delivered") >= 3
    # caches, cart sizes, the rate limiter
    assert value(m, "shop_cache_requests_total", cache="memcached-cart", result="hit") >= 1
    assert value(m, "shop_cache_requests_total", cache="memcached-cart", result="miss") >= 1
    assert value(m, "shop_cache_requests_total", cache="memcached-notifier", result="hit") >= 1
    assert value(m, "shop_cache_requests_total", cache="memcached-notifier", result="miss") >= 1
    assert value(m, "shop_cart_items_count") >= 3
    assert value(m, "shop_ratelimit_wait_seconds_count", limiter="cart:product.get_product") >= 2


def test_a_redelivered_event_is_counted_as_a_duplicate(session: dict[str, Any], shop: dict[str, str]) -> None:
    before = value(scrape(shop), "shop_notifier_events_total", outcome="duplicate")
    pool = ConnectionPool(loms.settings().shards()[0], size=1)
    try:
        (event_id, moment), *_ = pool.run(
            "SELECT event_id, moment FROM outbox WHERE order_id = :o ORDER BY event_id", o=session["order_id"]
        )
    finally:
        pool.close()
    payload = {"order_id": session["order_id"], "user_id": session["user"], "status": "new"}
    payload["moment"] = moment.isoformat()
    headers = {
        "ce-specversion": "1.0",
        "ce-id": str(event_id),
        "ce-source": "/loms",
        "ce-type": "loms.order.status-changed",
        "Content-Type": "application/json",
    }
    assert call(shop["notifier"], "POST", "/events/notify_status", payload, headers)[0] == 200
    assert value(scrape(shop), "shop_notifier_events_total", outcome="duplicate") == before + 1
