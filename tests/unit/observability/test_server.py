"""Each function as its container serves it (functions.entrypoint): requests counted and timed by function,
route template and status, a span per request, GET /metrics, and the token-guarded GET /debug/profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from werkzeug.test import Client

from functions import entrypoint
from functions.notifier import bootstrap as notifier_bootstrap
from shared_lib.observability import logs, metrics, settings
from shared_lib.observability.server import ObservedFunction, WorkerEndpoints
from tests.http_client import fetch
from tests.unit.notifier.fakes import Notifier, change, cloud_event
from tests.unit.observability.conftest import sample

PRODUCT = 1076963
ROUTE = "/product/{sku:id}"
ROOT = Path(__file__).resolve().parents[3]
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def product() -> Iterator[Client]:
    yield Client(entrypoint.function_app("get_product"))
    logs.reset()


def test_requests_are_counted_and_timed_by_function_route_and_status(product: Client) -> None:
    ok_before = sample("shop_http_requests_total", function="get_product", route=ROUTE, status="200")
    missing_before = sample("shop_http_requests_total", function="get_product", route=ROUTE, status="404")
    timed_before = sample(
        "shop_http_request_duration_seconds_count", function="get_product", route=ROUTE, status="200"
    )
    for _ in range(3):
        assert product.get(f"/product/{PRODUCT}", headers={"X-API-KEY": "testToken"}).status_code == 200
    assert product.get("/product/404", headers={"X-API-KEY": "testToken"}).status_code == 404
    assert (
        sample("shop_http_requests_total", function="get_product", route=ROUTE, status="200") == ok_before + 3
    )
    assert (
        sample("shop_http_requests_total", function="get_product", route=ROUTE, status="404")
        == missing_before + 1
    )
    timed = sample(
        "shop_http_request_duration_seconds_count", function="get_product", route=ROUTE, status="200"
    )
    assert timed == timed_before + 3


def test_metrics_is_served_beside_the_function_and_probes_are_not_counted(product: Client) -> None:
    before = sample("shop_http_requests_total", function="get_product", route=ROUTE, status="200")
    assert product.get("/healthz").status_code == 200
    response = product.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert b"shop_http_requests_total" in response.data
    assert sample("shop_http_requests_total", function="get_product", route=ROUTE, status="200") == before
    assert product.post("/metrics").status_code == 405


def test_a_request_is_a_server_span_under_its_callers_trace_with_its_ids(
    product: Client, spans: InMemorySpanExporter
) -> None:
    response = product.get(f"/product/{PRODUCT}", headers={"X-API-KEY": "testToken", "traceparent": CALLER})
    assert response.status_code == 200
    (server,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.name == f"GET {ROUTE}"
    assert f"{server.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert server.attributes is not None
    assert server.attributes["faas.name"] == "get_product"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["shop.sku"] == PRODUCT


@pytest.fixture
def notifier() -> Iterator[Client]:
    Notifier().bootstrap()
    yield Client(entrypoint.function_app("notify_status"))
    logs.reset()
    notifier_bootstrap.reset()


def test_an_events_handling_links_to_its_producer_and_its_delay_is_measured(
    notifier: Client, spans: InMemorySpanExporter
) -> None:
    delays_before = sample("shop_events_consume_delay_seconds_count", topic="loms.order-events")
    headers, body = cloud_event(change(41, order_id=7, status="paid"))
    response = notifier.post("/", headers={**headers, "traceparent": CALLER}, data=body)
    assert response.status_code == 200
    (consumer,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert consumer.name == "process loms.order-events"
    assert consumer.parent is None
    assert [f"{link.context.trace_id:032x}" for link in consumer.links] == [
        "4bf92f3577b34da6a3ce929d0e0e4736"
    ]
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.message.id"] == "41"
    assert float(consumer.attributes["shop.event.delay_seconds"]) > 0  # type: ignore[arg-type]
    assert sample("shop_events_consume_delay_seconds_count", topic="loms.order-events") == delays_before + 1


# --- /debug/profile --------------------------------------------------------------------------------------


def test_the_profiler_does_not_exist_without_a_token(product: Client) -> None:
    assert product.get("/debug/profile?seconds=1").status_code == 404


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SHOP_PROFILING_TOKEN", "s3cret-token")
    settings.reset()
    return "s3cret-token"


def test_the_profiler_refuses_a_wrong_token_and_bad_arguments(product: Client, token: str) -> None:
    assert product.get("/debug/profile?seconds=1").status_code == 401
    assert (
        product.get("/debug/profile?seconds=1", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    auth = {"Authorization": f"Bearer {token}"}
    assert product.get("/debug/profile?seconds=0", headers=auth).status_code == 400
    assert product.get("/debug/profile?seconds=999", headers=auth).status_code == 400
    assert product.get("/debug/profile?seconds=1&format=pdf", headers=auth).status_code == 400


def _busy_until(done: threading.Event) -> None:
    while not done.is_set():
        sum(i * i for i in range(500))


def test_the_profiler_samples_every_thread_of_the_running_function(product: Client, token: str) -> None:
    done = threading.Event()  # busy through the whole profile, however late the profiler starts
    worker = threading.Thread(target=_busy_until, args=(done,), daemon=True)
    worker.start()
    try:
        response = product.get("/debug/profile?seconds=1", headers={"Authorization": f"Bearer {token}"})
    finally:
        done.set()
        worker.join(60)
    assert response.status_code == 200, response.get_data(as_text=True)
    profile = json.loads(response.data)
    assert "speedscope" in profile["$schema"]
    frames = {frame["name"] for frame in profile["shared"]["frames"]}
    assert "_busy_until" in frames


def test_a_workers_endpoints_answer_its_health_and_metrics_on_a_real_port() -> None:
    alive = [True]
    endpoints = WorkerEndpoints(0, lambda: (alive[0], {"last_pass_seconds_ago": 1.5}), host="127.0.0.1")

    def call(path: str, method: str = "GET") -> tuple[int, bytes]:
        return fetch(f"http://127.0.0.1:{endpoints.port}{path}", method)

    try:
        status, body = call("/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok", "last_pass_seconds_ago": 1.5})
        alive[0] = False
        status, body = call("/healthz")
        assert (status, json.loads(body)["status"]) == (503, "stalled")
        status, body = call("/metrics")
        assert status == 200 and b"# TYPE" in body
        assert call("/metrics", "POST")[0] == 405
        status, body = call("/other")
        assert (status, json.loads(body)["code"]) == (404, 5)
    finally:
        endpoints.close()


def _answering(statuses: list[str]) -> entrypoint.WSGIApp:
    """A WSGI app that answers each request with the next of `statuses`."""
    answers = iter(statuses)

    def app(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
        start_response(next(answers), [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    return app


def test_each_route_and_status_is_counted_and_timed_from_its_first_request_on() -> None:
    """The middleware keeps each status's series once looked up: a status or a route seen later still gets its
    own series, counted and timed from its first request, and the first status's keeps counting."""
    routes = {"/first/{n}": ["200 OK", "200 OK", "418 I'M A TEAPOT", "200 OK"], "/second": ["503 BUSY"]}
    before = {
        (route, status): (
            sample("shop_http_requests_total", function="observed_twice", route=route, status=status),
            sample(
                "shop_http_request_duration_seconds_count",
                function="observed_twice",
                route=route,
                status=status,
            ),
        )
        for route, statuses in routes.items()
        for status in {s[:3] for s in statuses}
    }
    for route, statuses in routes.items():
        observed = ObservedFunction(
            _answering(statuses), function="observed_twice", service="svc", route=route, method="GET"
        )
        for _ in statuses:
            body = observed({"PATH_INFO": "/x", "REQUEST_METHOD": "GET"}, lambda status, headers: None)
            assert list(body) == [b"ok"]
    expected = {("/first/{n}", "200"): 3, ("/first/{n}", "418"): 1, ("/second", "503"): 1}
    for (route, status), (counted, timed) in before.items():
        labels = {"function": "observed_twice", "route": route, "status": status}
        assert sample("shop_http_requests_total", **labels) == counted + expected[route, status]
        assert sample("shop_http_request_duration_seconds_count", **labels) == timed + expected[route, status]


SERVING_WORKER = """
import sys
from shared_lib.observability.server import ObservedFunction

def app(environ, start_response):
    start_response(sys.argv[2], [("Content-Type", "text/plain")])
    return [b"ok"]

observed = ObservedFunction(app, function="get_product", service="product", route="/product/{sku:id}")
for _ in range(int(sys.argv[1])):
    list(observed({"PATH_INFO": "/product/1", "REQUEST_METHOD": "GET"}, lambda status, headers: None))
"""


RENDER = "from shared_lib.observability import metrics; print(metrics.render().decode())"


def test_in_multiprocess_mode_the_workers_requests_are_summed(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    metrics.prepare_multiprocess_dir(str(directory))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for count, status in (("2", "200 OK"), ("5", "200 OK"), ("1", "404 NOT FOUND")):
        subprocess.run(
            [sys.executable, "-c", SERVING_WORKER, count, status], cwd=ROOT, env=env, timeout=60, check=True
        )
    merged = subprocess.run(
        [
            sys.executable,
            "-c",
            "from shared_lib.observability import metrics; print(metrics.render().decode())",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    labels = 'function="get_product",route="/product/{sku:id}"'
    assert f'shop_http_requests_total{{{labels},status="200"}} 7.0' in merged
    assert f'shop_http_request_duration_seconds_count{{{labels},status="200"}} 7.0' in merged
    assert f'shop_http_requests_total{{{labels},status="404"}} 1.0' in merged
