"""Spans: the no-op default, a request continuing its caller's trace, an outbound call carrying it on, an
event's consumer linking to its producer, and context following work into the fan-out pool."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from werkzeug.serving import make_server

from shared_lib.httpclient import HttpClient
from shared_lib.observability import settings, tracing
from shared_lib.workpool import map_bounded

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_without_an_exporter_tracing_is_the_shared_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    settings.reset()
    tracing.reset()
    try:
        assert not tracing.active()
        assert tracing.span("x") is tracing.NOOP_SPAN
        assert tracing.current_traceparent() is None
    finally:
        tracing.reset()


@pytest.mark.parametrize(
    ("env", "chosen"),
    [
        ({}, "off"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}, "off"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "SHOP_OBSERVABILITY": "off"}, "off"),
        ({"SHOP_TRACING": "xray"}, "xray"),
        ({"SHOP_TRACING": "otlp"}, "otlp"),
    ],
)
def test_the_backend_follows_the_settings(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], chosen: str
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "SHOP_OBSERVABILITY", "SHOP_TRACING"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings.reset()
    assert settings.settings().trace_backend() == chosen
    if chosen == "otlp":
        assert settings.settings().otlp_url().endswith("/v1/traces")


def test_a_request_continues_its_callers_trace(spans: InMemorySpanExporter) -> None:
    backend = tracing.backend()
    request = backend.server("GET /product/{sku:id}", {"traceparent": CALLER}, {"faas.name": "get_product"})
    with request, tracing.span("SELECT product", "client"):
        inner = tracing.current_traceparent()
    server, query = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert server.context.trace_id == int("4bf92f3577b34da6a3ce929d0e0e4736", 16)
    assert server.parent is not None and server.parent.span_id == int("00f067aa0ba902b7", 16)
    assert server.kind == SpanKind.SERVER
    assert query.parent is not None and query.parent.span_id == server.context.span_id
    assert inner == f"00-{query.context.trace_id:032x}-{query.context.span_id:016x}-01"


def test_an_events_consumer_starts_its_own_trace_and_links_to_the_producer(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.backend().consumer("process loms.order-events", CALLER, {"messaging.system": "kafka"}):
        pass
    (consumer,) = spans.get_finished_spans()
    assert consumer.kind == SpanKind.CONSUMER
    assert consumer.parent is None  # a link, not a fake parent
    assert consumer.context.trace_id != int("4bf92f3577b34da6a3ce929d0e0e4736", 16)
    (link,) = consumer.links
    assert (link.context.trace_id, link.context.span_id) == (
        int("4bf92f3577b34da6a3ce929d0e0e4736", 16),
        int("00f067aa0ba902b7", 16),
    )


def test_an_exception_marks_the_span_failed(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), tracing.span("work"):
        raise ValueError("boom")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


@pytest.fixture
def echo_headers() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append({k: v for k, v in environ.items() if k.startswith("HTTP_")})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    thread.join(5)


def test_an_outbound_call_is_a_client_span_whose_context_reaches_the_peer(
    spans: InMemorySpanExporter, echo_headers: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = echo_headers
    client = HttpClient(url, name="the product service")
    with tracing.span("list_cart"):
        assert client.get("/product/1").status == 200
    client.close()
    call = next(s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT)
    assert call.name == "GET product-service"
    assert call.attributes is not None and call.attributes["http.response.status_code"] == 200
    sent = tracing.parse_traceparent(seen[0]["HTTP_TRACEPARENT"])
    assert sent is not None
    assert (int(sent[0], 16), int(sent[1], 16)) == (call.context.trace_id, call.context.span_id)


def test_under_an_unsampled_caller_nothing_is_recorded_and_the_context_still_propagates(
    spans: InMemorySpanExporter, echo_headers: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = echo_headers
    client = HttpClient(url, name="the product service")
    unsampled = CALLER[:-2] + "00"
    with tracing.backend().server("GET /cart", {"traceparent": unsampled}, {}):
        with tracing.span("SELECT cart", "client", {"db.system.name": "postgresql"}) as query:
            query.set("shop.rows", 1)
        assert tracing.current_traceparent() is not None
        assert client.get("/product/1").status == 200
    client.close()
    assert spans.get_finished_spans() == ()
    sent = tracing.parse_traceparent(seen[0]["HTTP_TRACEPARENT"])
    assert sent is not None
    assert sent[0] == CALLER.split("-")[1] and sent[2] is False  # the caller's trace, not sampled


def test_without_tracing_no_trace_header_is_sent(echo_headers: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = echo_headers
    tracing.use(tracing.NoopBackend())
    try:
        HttpClient(url).get("/x")
    finally:
        tracing.reset()
    assert "HTTP_TRACEPARENT" not in seen[0]


def test_the_fan_out_pool_keeps_the_callers_span(spans: InMemorySpanExporter) -> None:
    with tracing.span("list_cart") as _:
        parent = tracing.current_traceparent()
        found = map_bounded(lambda _i: tracing.current_traceparent(), range(4), 2)
    assert found == [parent] * 4


def test_parse_traceparent_refuses_what_is_not_one() -> None:
    assert tracing.parse_traceparent(CALLER) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", True)
    for bad in (
        None,
        "",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        "junk",
    ):
        assert tracing.parse_traceparent(bad) is None


def test_a_new_trace_the_sampler_drops_records_nothing_and_still_propagates(
    echo_headers: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = echo_headers
    exporter = InMemorySpanExporter()
    tracing.use(tracing.OtelBackend.exporting("test", exporter, sample_ratio=0.0, batch=False))
    client = HttpClient(url, name="the product service")
    try:
        with tracing.backend().server("GET /cart", {}, {"faas.name": "list_cart"}) as request:
            assert not request.recording
            outer = tracing.current_traceparent()
            ids = tracing.current_ids()
            with tracing.span("SELECT cart", "client") as query:
                assert not query.recording
                assert tracing.current_traceparent() == outer
            assert client.get("/product/1").status == 200
        assert tracing.current_traceparent() is None  # its context is current only while it is open
    finally:
        client.close()
        tracing.reset()
    assert exporter.get_finished_spans() == ()
    own = tracing.parse_traceparent(outer)
    assert own is not None and own[2] is False  # a trace of its own, not sampled
    assert ids == (own[0], own[1])  # the request's log lines name it
    assert tracing.parse_traceparent(seen[0]["HTTP_TRACEPARENT"]) == own  # the peer continues it


def test_new_traces_are_sampled_by_their_trace_id_as_the_sdks_sampler_decides() -> None:
    from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

    exporter = InMemorySpanExporter()
    tracing.use(tracing.OtelBackend.exporting("test", exporter, sample_ratio=0.5, batch=False))
    decided: dict[int, bool] = {}
    try:
        for _ in range(400):
            with tracing.backend().server("GET /order/{uid}", {}, {}), tracing.span("cache get", "client"):
                seen = tracing.parse_traceparent(tracing.current_traceparent())
                assert seen is not None
                decided[int(seen[0], 16)] = seen[2]
    finally:
        tracing.reset()
    sampler = TraceIdRatioBased(0.5)
    for trace_id, sampled in decided.items():
        assert sampled == (sampler.should_sample(None, trace_id, "x").decision is Decision.RECORD_AND_SAMPLE)
    finished = exporter.get_finished_spans()
    recorded = {span.context.trace_id for span in finished}
    assert recorded == {trace_id for trace_id, sampled in decided.items() if sampled}
    # one in two, as asked: a trace decided sampled here is not decided again on another id (which would
    # sample one in four). 200 expected, 10 the standard deviation: outside 150-250 at odds of ~1e-6
    assert 150 <= len(recorded) <= 250
    assert len(finished) == 2 * len(recorded)  # a sampled request's span and its child's


def test_a_request_under_an_unsampled_caller_continues_its_trace_in_a_span_of_its_own(
    spans: InMemorySpanExporter,
) -> None:
    unsampled = CALLER[:-2] + "00"
    with tracing.backend().server("GET /cart", {"traceparent": unsampled, "tracestate": "k=v"}, {}):
        inner = tracing.parse_traceparent(tracing.current_traceparent())
        carrier: dict[str, str] = {}
        tracing.span("call").inject(carrier)
    assert spans.get_finished_spans() == ()
    assert inner is not None
    assert inner[0] == CALLER.split("-")[1] and inner[2] is False
    assert inner[1] != CALLER.split("-")[2]  # a span id of its own, as the SDK gives a dropped span
    assert carrier.get("tracestate") == "k=v"  # the caller's trace state goes on too


def test_an_in_process_cache_read_is_noted_on_its_span_and_a_memcached_call_is_a_span_of_its_own(
    spans: InMemorySpanExporter, memcached_address: str
) -> None:
    from shared_lib.cache import InProcessCache, MemcachedCache

    tier = InProcessCache(name="orders-local")
    tier.set_encoded("a", b"1", 60)  # outside any request: nothing to note it on
    shared = MemcachedCache(memcached_address, prefix=f"tracing-{threading.get_ident()}")
    with tracing.backend().server("GET /order/{uid}", {}, {}):
        assert tier.get_encoded("a") == b"1"
        assert tier.get_many_encoded(["a", "b"]) == {"a": b"1"}
        tier.set_encoded("b", b"2", 60)
        shared.get_encoded("a")
    with tracing.backend().server("GET /order/{uid}", {}, {}):
        assert tier.get_encoded("c") is None
    first, second = (s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER)
    children = [s.name for s in spans.get_finished_spans() if s.kind is not SpanKind.SERVER]
    assert children == ["cache get"]  # Memcached's round trip; the tier's reads and write are no spans
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["shop.cache.orders-local"] == "partial"  # its last read: one key of two found
    assert second.attributes["shop.cache.orders-local"] == "miss"
    with tracing.backend().server("GET /order/{uid}", {}, {}):
        tier.get_encoded("a")
    assert spans.get_finished_spans()[-1].attributes == {"shop.cache.orders-local": "hit"}
