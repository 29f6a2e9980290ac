"""The fast OTLP encoder writes exactly what OpenTelemetry's own encoder writes, for every kind of span."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
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

from shared_lib.observability.otlp import FastOtlpSpanExporter, encode


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


def test_the_bytes_are_the_sdk_encoders() -> None:
    spans = spans_of_every_shape()
    assert encode(spans) == encode_spans(spans).SerializePartialToString()


def test_each_span_alone_and_repeated_batches_match_too() -> None:
    spans = spans_of_every_shape()
    for span in spans:
        assert encode([span]) == encode_spans([span]).SerializePartialToString()
    for _ in range(3):  # the second time through comes from the encoder's cache of attribute pairs
        assert encode(spans) == encode_spans(spans).SerializePartialToString()


def test_spans_of_two_providers_group_as_the_sdk_groups_them() -> None:
    exporter = InMemorySpanExporter()
    tracers = []
    for service in ("cart", "cart", "loms"):  # two equal resources (distinct objects) and another
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracers.append(provider.get_tracer("shop"))
    for index in range(7):
        with tracers[index % 3].start_as_current_span(f"span {index}"):
            pass
    spans = list(exporter.get_finished_spans())
    assert encode(spans) == encode_spans(spans).SerializePartialToString()
    assert len(ExportTraceServiceRequest.FromString(encode(spans)).resource_spans) == 2


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode([]) == b""
    assert ExportTraceServiceRequest.FromString(encode([])).resource_spans == []


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


def test_the_exporter_posts_them_as_otlp_protobuf(collector: tuple[str, Received]) -> None:
    url, received = collector
    spans = spans_of_every_shape()
    exporter = FastOtlpSpanExporter(endpoint=url, timeout=5)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    [(path, content_type, body)] = received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    names = [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == sorted(s.name for s in spans)
    exporter.shutdown()
    assert exporter.export(spans) == SpanExportResult.FAILURE  # after shutdown: dropped, not sent
    assert len(received) == 1


def test_a_refusing_collector_is_a_failed_export() -> None:
    exporter = FastOtlpSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)
    assert exporter.export(spans_of_every_shape()) == SpanExportResult.FAILURE
