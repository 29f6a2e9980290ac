"""The dev server observed from outside: its processes export their spans over OTLP/HTTP to a receiver this
test runs, and a checkout and its payment arrive as one trace across the cart and loms processes, with the
notifier's handling of each status event (delivered through Kafka) linked to the loms request that made it.
Each service's GET /metrics is checked too.

Its own stacks on free ports (tests.fixtures.stack) and fresh databases: product, loms (with its relay) and
cart in one, the notifier in another, and a local KafkaSource of this test's own consumer group in between,
so that nothing here shares a consumer group with the session's `shop`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from werkzeug.serving import WSGIRequestHandler, make_server

from functions import devserver, table
from shared_lib.devtools.ports import free_port
from shared_lib.eventsource import KafkaEventSource
from tests.conftest import ROOT, MakeDatabase
from tests.fixtures.stack import start_stacks
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

TOPIC = "loms.order-events"
BOOK, PEN = 1076963, 1148162
ROOT_TRACE = "0af7651916cd43dd8448eb211c80319c"
FRONT_END = "b7ad6b7169203331"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: int  # the OTLP enum: 2 server, 3 client, 4 producer, 5 consumer
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[tuple[str, str], ...]
    attributes: dict[str, Any]


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP trace receiver (POST /v1/traces, protobuf) keeping every span it was sent."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    found.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in s.links),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                        )
                    )
        with self.lock:
            self.spans.extend(found)
        start_response("200 OK", [("Content-Type", "application/x-protobuf"), ("Content-Length", "0")])
        return [b""]

    def received(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def call(
    url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})} if data is not None else headers or {}
    request = urllib.request.Request(url, data=data, method=method, headers=sent)  # not urllib's form
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode()


@dataclass
class ObservedShop:
    receiver: OtlpReceiver
    urls: dict[str, str]
    source: KafkaEventSource


@pytest.fixture(scope="module")
def observed(
    make_database: MakeDatabase,
    kafka_bootstrap: str,
    memcached_address: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ObservedShop]:
    receiver = OtlpReceiver()
    httpd = make_server("127.0.0.1", free_port(), receiver, threaded=True, request_handler=_Quiet)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    loms_dsn = make_database("loms")
    observability = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{httpd.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within a moment, not every 5 s
        "SHOP_LOG_LEVEL": "INFO",
    }
    cart_dsn = make_database("cart")

    def shop_env(urls: dict[str, str]) -> dict[str, str]:
        return {
            **observability,
            "CART_DATABASE_URL": cart_dsn,
            "CART_PRODUCT_URL": urls["product"],
            "CART_LOMS_URL": urls["loms"],
            # an in-process cache, empty: the journey calls product (a shared one may not)
            "CART_MEMCACHED": "",
            "LOMS_SHARD_DSNS": loms_dsn,
            "LOMS_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "LOMS_EVENT_SINKS": "",
        }

    notifier_env = {
        **observability,
        "NOTIFIER_DATABASE_URL": make_database("notifier"),
        "NOTIFIER_MEMCACHED": memcached_address,
    }
    subprocess.run(
        [sys.executable, "-c", "from functions.loms import bootstrap; bootstrap.seed_stock()"],
        env={**os.environ, "LOMS_SHARD_DSNS": loms_dsn, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    logs = tmp_path_factory.mktemp("observed-logs")

    def make(offset: int) -> list[devserver.Stack]:
        urls = {name: f"http://127.0.0.1:{s.port + offset}" for name, s in table.SERVICES.items()}
        return [
            devserver.Stack(
                shop_env(urls),
                services=("product", "loms", "cart"),
                port_offset=offset,
                log_dir=logs,
                cron_seconds=None,
            ),
            devserver.Stack(
                notifier_env, services=("notifier",), port_offset=offset, log_dir=logs, cron_seconds=None
            ),
        ]

    stacks: list[devserver.Stack] = []
    source: KafkaEventSource | None = None
    try:
        offset, stacks = start_stacks(make, ("product", "loms", "cart", "notifier"))
        urls = {name: f"http://127.0.0.1:{s.port + offset}" for name, s in table.SERVICES.items()}
        source = KafkaEventSource(
            kafka_bootstrap,
            TOPIC,
            f"observed-{uuid.uuid4().hex[:8]}",
            f"{urls['notifier']}/events/notify_status",
            initial_offset="latest",
            backoff_delay=0.05,
        )
        source.start()
        assert source.wait_assigned(60)
        yield ObservedShop(receiver, urls, source)
    except Exception:
        for log_file in logs.glob("*.log"):
            print(f"--- {log_file.name}\n{log_file.read_text()[-3000:]}")
        raise
    finally:
        if source is not None:
            source.stop()
        for stack in stacks:
            stack.stop()
        httpd.shutdown()


@pytest.fixture(scope="module")
def journey(observed: ObservedShop) -> dict[str, int]:
    """A shopper adds, lists, checks out and pays, the front end sending one traceparent throughout."""
    cart = observed.urls["cart"]
    user = 8_000_000 + uuid.uuid4().int % 1_000_000
    front = {"traceparent": f"00-{ROOT_TRACE}-{FRONT_END}-01"}
    assert call(f"{cart}/user/{user}/cart/{BOOK}", "POST", {"count": 1}, front)[0] == 200
    assert call(f"{cart}/user/{user}/cart/{PEN}", "POST", {"count": 1}, front)[0] == 200
    assert call(f"{cart}/user/{user}/cart", headers=front)[0] == 200
    status, body = call(f"{cart}/checkout/{user}", "POST", headers=front)
    assert status == 200, body
    order_id = int(body["order_id"])
    status, body = call(f"{observed.urls['loms']}/order/pay", "POST", {"orderId": str(order_id)}, front)
    assert status == 200, body
    return {"user": user, "order_id": order_id}


def test_a_checkout_and_its_payment_are_one_trace_across_the_cart_and_loms_processes(
    observed: ObservedShop, journey: dict[str, int]
) -> None:
    expected = {
        ("cart", "POST /checkout/{user_id:id}"),
        ("cart", "POST loms"),
        ("loms", "POST /order/create"),
        ("loms", "POST /order/pay"),
        ("product", "GET /product/{sku:id}"),
    }

    def arrived() -> list[ReceivedSpan] | None:
        spans = [s for s in observed.receiver.received() if s.trace_id == ROOT_TRACE]
        return spans if expected <= {(s.service, s.name) for s in spans} else None

    spans = wait_for(arrived, what="the journey's spans from cart, product and loms")
    ids = {s.span_id for s in spans}
    for span in spans:
        assert span.parent_id in ids or span.parent_id == FRONT_END, f"{span.service} {span.name} is orphaned"
    create = next(s for s in spans if s.name == "POST /order/create")
    caller = next(s for s in spans if s.name == "POST loms" and s.span_id == create.parent_id)
    assert caller.service == "cart"
    assert create.attributes["shop.order_id"] == str(journey["order_id"])
    # loms writes the order, its items and outbox events in the trace: one statement (its kind is UPDATE, its
    # first data change being the reservation)
    assert any(
        s.service == "loms" and "INSERT INTO orders" in str(s.attributes.get("db.query.text", ""))
        for s in spans
    ), sorted({(s.service, s.name) for s in spans})


def test_the_notifiers_handling_links_across_kafka_to_the_loms_requests(
    observed: ObservedShop, journey: dict[str, int]
) -> None:
    def linked() -> list[ReceivedSpan] | None:
        spans = observed.receiver.received()
        journey_ids = {s.span_id for s in spans if s.trace_id == ROOT_TRACE and s.service == "loms"}
        handled = [
            s
            for s in spans
            if s.service == "notifier"
            and s.kind == 5
            and any(span_id in journey_ids for _, span_id in s.links)
        ]
        return handled if len(handled) >= 3 else None

    handled = wait_for(linked, what="three linked notify_status spans (new, awaiting payment, paid)")
    for span in handled:
        assert span.name == f"process {TOPIC}"
        assert span.trace_id != ROOT_TRACE and span.parent_id == ""  # a link, not a fake parent
        assert [trace for trace, _ in span.links] == [ROOT_TRACE]
        assert span.attributes["shop.event.delay_seconds"] >= 0
    publishes = [s for s in observed.receiver.received() if s.name == f"publish {TOPIC}"]
    assert any(trace == ROOT_TRACE for s in publishes for trace, _ in s.links), (
        "the relay's publish links too"
    )


def test_each_service_serves_its_metrics(observed: ObservedShop, journey: dict[str, int]) -> None:
    for service, family in (
        ("cart", 'shop_http_requests_total{function="checkout",route="/checkout/{user_id:id}",status="200"}'),
        ("loms", 'shop_http_requests_total{function="pay_order",route="/order/pay",status="200"}'),
        (
            "product",
            'shop_http_requests_total{function="get_product",route="/product/{sku:id}",status="200"}',
        ),
        ("notifier", 'shop_notifier_events_total{outcome="notified"}'),
    ):
        status, text = call(f"{observed.urls[service]}/metrics")
        assert status == 200
        assert family in text, f"{service}: {family}"
    _, loms = call(f"{observed.urls['loms']}/metrics")
    assert 'shop_outbox_backlog{shard="0"}' in loms
    # the create (one statement, of kind update: its first data change is the reservation) and the payment
    assert 'shop_db_queries_total{kind="update",outcome="ok"}' in loms
    # the relay is a process of its own: its figures reach loms' /metrics through the shared directory
    assert f'shop_events_published_total{{topic="{TOPIC}"}}' in loms
    assert 'shop_order_status_changes_total{status="paid"}' in loms
