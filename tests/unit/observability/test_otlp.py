"""OTLP export is the OpenTelemetry SDK's own exporter, configured by the settings: what a receiver gets is
protobuf at /v1/traces, exactly the SDK encoder's message for every kind of span, and a traced request's spans
arrive whole, with their trace, parents, links, kinds, attributes, status and resource."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from shared_lib.observability import settings, tracing

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def spans_of_every_shape() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "cart", "service.namespace": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop")
    other_scope = provider.get_tracer("relay", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0")
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "value"), ("other", "x")]),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span(
        "GET /user/{user_id}/cart",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"faas.name": "list_cart", "http.route": "/user/{user_id}/cart"},
    ) as server:
        server.set_attributes(
            {
                "http.response.status_code": 200,
                "shop.user_id": 31337,
                "negative": -5,
                "big": 2**62,
                "ratio": 0.25,
                "flag": True,
                "off": False,
                "empty": "",
                "names": ("a", "bé"),
                "counts": [1, 2, 3],
                "long": "x" * 300,
            }
        )
        server.add_event("retry", {"attempt": 2})
        server.add_event("plain")
        with tracer.start_as_current_span(
            "SELECT cart", kind=trace.SpanKind.CLIENT, attributes={"db.system.name": "postgresql"}
        ) as query:
            query.set_status(Status(StatusCode.ERROR, "connection lost"))
        with tracer.start_as_current_span("publish", kind=trace.SpanKind.PRODUCER, links=[Link(remote)]):
            pass
    with tracer.start_as_current_span(
        "process loms.order-events", kind=trace.SpanKind.CONSUMER, links=[Link(remote, {"why": "cause"})]
    ) as consumer:
        consumer.set_status(Status(StatusCode.OK))
    with other_scope.start_as_current_span("relay batch"):
        pass
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 5
    return spans


Received = list[tuple[str, str, bytes]]  # (path, content type, body) of each POST


class _Collector(http.server.BaseHTTPRequestHandler):
    received: ClassVar[Received]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, Received]]:
    received: Received = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()


def _request(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def test_the_exporter_posts_the_sdk_encoders_message_for_every_kind_of_span(
    collector: tuple[str, Received],
) -> None:
    url, received = collector
    spans = spans_of_every_shape()
    exporter = OTLPSpanExporter(endpoint=url, timeout=5)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    [(path, content_type, body)] = received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert _request(body) == encode_spans(spans)
    names = [s.name for rs in _request(body).resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == sorted(s.name for s in spans)
    exporter.shutdown()  # type: ignore[no-untyped-call]
    assert exporter.export(spans) == SpanExportResult.FAILURE  # after shutdown: dropped, not sent
    assert len(received) == 1


def test_a_refusing_collector_is_a_failed_export() -> None:
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)
    assert exporter.export(spans_of_every_shape()) == SpanExportResult.FAILURE


@pytest.fixture
def configured(collector: tuple[str, Received], monkeypatch: pytest.MonkeyPatch) -> Iterator[Received]:
    """The process's backend as the settings build it, pointed at the local receiver."""
    url, received = collector
    for name in (
        "OTEL_TRACES_EXPORTER",
        "SHOP_OBSERVABILITY",
        "SHOP_TRACING",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url.removesuffix("/v1/traces"))
    settings.reset()
    tracing.reset()
    tracing.set_service("cart")
    try:
        yield received
    finally:
        tracing.reset()
        settings.reset()


def test_the_configured_backend_exports_a_traced_request_whole(configured: Received) -> None:
    backend = tracing.backend()
    assert backend.name == "otlp"
    request = backend.server("GET /user/{user_id}/cart", {"traceparent": CALLER}, {"faas.name": "list_cart"})
    with request:
        request.update({"http.response.status_code": 503, "ratio": 0.5, "cached": False})
        with tracing.span("SELECT cart", "client", {"db.system.name": "postgresql"}):
            producer = tracing.current_traceparent()
        request.fail("loms is unavailable")
    with backend.consumer("process loms.order-events", producer, {"shop.order_id": 7}):
        pass
    backend.shutdown()  # flushes the batch
    spans = {}
    for _path, content_type, body in configured:
        assert content_type == "application/x-protobuf"
        for resource_spans in _request(body).resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert resource["service.name"] == "cart" and resource["service.namespace"] == "shop"
            for scope in resource_spans.scope_spans:
                spans.update({s.name: s for s in scope.spans})
    server, query, consumer = (
        spans["GET /user/{user_id}/cart"],
        spans["SELECT cart"],
        spans["process loms.order-events"],
    )
    assert server.trace_id.hex() == CALLER[3:35] and server.parent_span_id.hex() == CALLER[36:52]
    assert (server.kind, query.kind, consumer.kind) == (2, 3, 5)  # OTLP's server, client, consumer
    assert query.trace_id == server.trace_id and query.parent_span_id == server.span_id
    attributes = {a.key: a.value for a in server.attributes}
    assert attributes["faas.name"].string_value == "list_cart"
    assert attributes["http.response.status_code"].int_value == 503
    assert attributes["ratio"].double_value == 0.5
    assert attributes["cached"].HasField("bool_value") and not attributes["cached"].bool_value
    assert server.status.code == 2 and server.status.message == "loms is unavailable"  # ERROR
    assert consumer.trace_id != server.trace_id and not consumer.parent_span_id  # a trace of its own …
    [link] = consumer.links  # … linked to the span that made the event
    assert (link.trace_id, link.span_id) == (query.trace_id, query.span_id)


def test_the_encoder_groups_spans_by_a_resource_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk import resources

    exporter = InMemorySpanExporter()
    backend = tracing.OtelBackend.exporting("orders", exporter, batch=False)
    for _ in range(20):
        with backend.server("GET /order/{order_uid}", {}, {"faas.name": "get_order"}):
            pass
    backend.shutdown()
    hashed: list[object] = []
    real_hash = resources.Resource.__hash__

    def counted(resource: resources.Resource) -> int:
        hashed.append(resource)
        return real_hash(resource)

    monkeypatch.setattr(resources.Resource, "__hash__", counted)
    message = encode_spans(exporter.get_finished_spans())
    assert hashed == []  # Resource.__hash__ JSON-dumps the attributes on each call: once a span (20) before
    [group] = message.resource_spans  # still one resource, the spans grouped under it as the encoder does
    resource = {a.key: a.value.string_value for a in group.resource.attributes}
    assert resource["service.name"] == "orders" and resource["service.namespace"] == "shop"
    assert resource["telemetry.sdk.name"] == "opentelemetry"  # Resource.create's attributes all kept
    assert sum(len(scope.spans) for scope in group.scope_spans) == 20
    plain = resources.Resource(backend.provider.resource.attributes, backend.provider.resource.schema_url)
    assert plain == backend.provider.resource and hash(plain) == hash(backend.provider.resource)
