"""Spans for every request, outbound call, query, cache call and event, behind one small interface with three
backends: none (the default: a shared no-op, nothing allocated per call), OpenTelemetry exported over
OTLP/HTTP (the SDK's own exporter), and AWS X-Ray (shared_lib.observability.xray). The vocabulary they
share (Span, attributes, the no-op span) is shared_lib.observability.spans, which the backends import.

The backend is chosen from ObservabilitySettings on first use, so every process (a function, the dev server's
relay, a test) gets the configured one without wiring. Context travels as W3C `traceparent` over HTTP and in
Kafka record headers; an event's consumer links to its producer's span instead of pretending to be its child.
Nothing here knows about a service.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, MutableMapping, Sequence
from types import TracebackType
from typing import Any, Protocol

from shared_lib import lifecycle
from shared_lib.observability.settings import settings
from shared_lib.observability.spans import NOOP_SPAN as NOOP_SPAN
from shared_lib.observability.spans import Attribute as Attribute
from shared_lib.observability.spans import Attributes as Attributes
from shared_lib.observability.spans import Kind as Kind
from shared_lib.observability.spans import NoopSpan
from shared_lib.observability.spans import Span as Span
from shared_lib.observability.spans import parse_traceparent as parse_traceparent


class Backend(Protocol):
    name: str

    def server(self, name: str, headers: Mapping[str, str], attributes: Attributes) -> Span:
        """A request's span, child of the caller's context (`traceparent`, or X-Amzn-Trace-Id for X-Ray)."""
        ...

    def consumer(self, name: str, traceparent: str | None, attributes: Attributes) -> Span:
        """An event's handling: a new trace that links to the producer's span (when the event carries one)."""
        ...

    def span(
        self, name: str, kind: Kind, attributes: Attributes, links: Sequence[str] = ()
    ) -> Span: ...  # links: traceparents of related spans (a publish links to each event's producer)

    def annotate(self, attributes: Attributes) -> None: ...  # onto the current span, if any

    def traceparent(self) -> str | None: ...  # W3C form of the current span, None outside any span

    def ids(self) -> tuple[str, str] | None: ...  # (trace id, span id) of the current span, for logs

    def shutdown(self) -> None: ...


# --- no tracing -------------------------------------------------------------------------------------------


class NoopBackend:
    name = "off"

    def server(self, name: str, headers: Mapping[str, str], attributes: Attributes) -> Span:
        return NOOP_SPAN

    def consumer(self, name: str, traceparent: str | None, attributes: Attributes) -> Span:
        return NOOP_SPAN

    def span(self, name: str, kind: Kind, attributes: Attributes, links: Sequence[str] = ()) -> Span:
        return NOOP_SPAN

    def annotate(self, attributes: Attributes) -> None:
        pass

    def traceparent(self) -> str | None:
        return None

    def ids(self) -> tuple[str, str] | None:
        return None

    def shutdown(self) -> None:
        pass


# --- OpenTelemetry ----------------------------------------------------------------------------------------


_KINDS = ("server", "consumer", "client", "producer", "internal")


class OtelBackend:
    """OpenTelemetry's SDK with its own TracerProvider (not the global one: tests swap backends freely)."""

    name = "otlp"

    def __init__(self, provider: Any, parent_based: bool = False) -> None:
        """`parent_based`: the provider's sampler is ParentBased with its default delegates, so a span under
        an unsampled parent is never recorded; span() then skips the SDK for it (see _UnsampledSpan)."""
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.parent_based = parent_based
        self.tracer = provider.get_tracer("shop")
        self._trace = trace
        self._context = context
        self._propagator = TraceContextTextMapPropagator()
        self._kinds = {kind: trace.SpanKind[kind.upper()] for kind in _KINDS}

    @classmethod
    def exporting(
        cls, service: str, exporter: Any, sample_ratio: float = 1.0, batch: bool = True
    ) -> OtelBackend:
        """A backend whose spans go to `exporter` (OTLP in production, in-memory in tests)."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

        class HashedOnce(Resource):
            """The SDK's Resource, hashed once: the OTLP encoder groups every span it exports by its
            resource, and Resource.__hash__ JSON-dumps the sorted attributes on each call (~20 us a span
            here), while a resource's attributes never change."""

            def __init__(self, created: Resource) -> None:
                super().__init__(created.attributes, created.schema_url)
                self.hashed = super().__hash__()

            def __hash__(self) -> int:  # equal to Resource's: a resource equal to it hashes alike
                return self.hashed

        root = ALWAYS_ON if sample_ratio >= 1.0 else TraceIdRatioBased(sample_ratio)  # the same decisions
        provider = TracerProvider(
            resource=HashedOnce(Resource.create({"service.name": service, "service.namespace": "shop"})),
            sampler=ParentBased(root),
        )
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        return cls(provider, parent_based=True)

    def server(self, name: str, headers: Mapping[str, str], attributes: Attributes) -> Span:
        carrier = {k: v for k in ("traceparent", "tracestate") if (v := headers.get(k))}
        parent = self._propagator.extract(carrier) if carrier else None
        return _OtelSpan(self, name, "server", attributes, parent, [])

    def consumer(self, name: str, traceparent: str | None, attributes: Attributes) -> Span:
        from opentelemetry.context import Context

        return _OtelSpan(self, name, "consumer", attributes, Context(), self._links([traceparent]))

    def span(self, name: str, kind: Kind, attributes: Attributes, links: Sequence[str] = ()) -> Span:
        if self.parent_based:
            current = self._trace.get_current_span()
            span_context = current.get_span_context()
            if span_context.is_valid and not span_context.trace_flags.sampled:
                # the sampler would say no: nine requests in ten at 1 in 10. No SDK span, no links parsed, no
                # context attached; what it injects is the unsampled parent's context, so it still propagates
                return _UnsampledSpan(self, current)
        return _OtelSpan(self, name, kind, attributes, None, self._links(links))

    def _links(self, traceparents: Sequence[str | None]) -> list[Any]:
        found = []
        for traceparent in traceparents:
            if traceparent:
                context = self._propagator.extract({"traceparent": traceparent})
                span_context = self._trace.get_current_span(context).get_span_context()
                if span_context.is_valid:
                    found.append(self._trace.Link(span_context))
        return found

    def annotate(self, attributes: Attributes) -> None:
        current = self._trace.get_current_span()
        if current.is_recording():
            current.set_attributes(dict(attributes))

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)  # nothing outside a valid span
        return carrier.get("traceparent")

    def ids(self) -> tuple[str, str] | None:
        span_context = self._trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return None
        return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"

    def shutdown(self) -> None:
        self.provider.shutdown()


class _OtelSpan:
    __slots__ = ("_attributes", "_backend", "_kind", "_links", "_name", "_parent", "_span", "_token")

    def __init__(
        self,
        backend: OtelBackend,
        name: str,
        kind: str,
        attributes: Attributes,
        parent: Any,
        links: list[Any],
    ) -> None:
        self._backend = backend
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._parent = parent
        self._links = links
        self._span: Any = None
        self._token: Any = None

    @property
    def recording(self) -> bool:
        """Whether the SDK keeps what is set on it (its sampler's decision, known once entered)."""
        return self._span is None or bool(self._span.is_recording())

    def __enter__(self) -> _OtelSpan:
        backend = self._backend
        self._span = backend.tracer.start_span(
            self._name,
            context=self._parent,
            kind=backend._kinds[self._kind],
            attributes=self._attributes,
            links=self._links,
        )
        self._token = backend._context.attach(backend._trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._span.record_exception(exc)
            self.fail(type(exc).__name__)
        self._backend._context.detach(self._token)
        self._span.end()

    def set(self, key: str, value: Attribute) -> None:
        self._span.set_attribute(key, value)

    def update(self, attributes: Attributes) -> None:
        self._span.set_attributes(attributes)

    def fail(self, description: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.set_status(Status(StatusCode.ERROR, description))

    def inject(self, headers: MutableMapping[str, str]) -> None:
        self._backend._propagator.inject(
            headers, context=self._backend._trace.set_span_in_context(self._span)
        )


class _UnsampledSpan(NoopSpan):
    """A span under an unsampled parent (which ParentBased never records): it records nothing, and carries the
    parent's context to outbound calls (a W3C traceparent with the sampled flag off still propagates)."""

    __slots__ = ("_backend", "_parent")

    def __init__(self, backend: OtelBackend, parent: Any) -> None:
        self._backend = backend
        self._parent = parent

    def inject(self, headers: MutableMapping[str, str]) -> None:
        self._backend._propagator.inject(
            headers, context=self._backend._trace.set_span_in_context(self._parent)
        )


# --- choosing the backend ---------------------------------------------------------------------------------

# Guards the three globals below and nothing that can wait: under gevent this lock, made when the module is
# imported (in gunicorn's arbiter, before its worker patches threading), stays a native lock, and a greenlet
# blocked on it blocks the worker's whole hub. So the backend is built outside it (see backend()).
_lock = threading.Lock()
_backend: Backend | None = None
_building: threading.Event | None = None  # set once the backend being built is installed (or failed)
_service = ""


def set_service(name: str) -> None:
    """The service whose spans this process makes (before the first span; later calls change nothing)."""
    global _service
    with _lock:
        if not _service:
            _service = name


def service() -> str:
    return _service or settings().service_name or "shop"


def backend() -> Backend:
    """The process's backend, built from the settings on first use, once: a caller that comes while another
    builds it waits for that one. Building starts the span processor's thread, which under gevent yields to
    the hub, so it happens without holding _lock (a second request's greenlet blocking on that native lock
    would block the hub, and with it the builder: the worker hung until gunicorn's WORKER TIMEOUT)."""
    global _backend, _building
    current = _backend
    if current is not None:
        return current
    while True:
        with _lock:
            if _backend is not None:
                return _backend
            waiting = _building
            if waiting is None:
                # threading.Event looked up now: gevent's once the worker patched threading
                built = _building = threading.Event()
        if waiting is not None:
            waiting.wait()  # then look again: installed, or the builder failed and this caller builds
            continue
        try:
            chosen = _from_settings()
            with _lock:
                installed = _backend is None  # else use() installed one meanwhile (tests): that one stays
                if installed:
                    _backend = chosen
                current = _backend
            if not installed:
                chosen.shutdown()
            elif not isinstance(chosen, NoopBackend):
                lifecycle.on_shutdown(chosen.shutdown)  # flush what is buffered when the worker stops
            assert current is not None
            return current
        finally:
            with _lock:
                _building = None
            built.set()


def _from_settings() -> Backend:
    config = settings()
    chosen = config.trace_backend()
    if chosen == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.otlp_url(), timeout=5)
        return OtelBackend.exporting(service(), exporter, config.trace_sample_ratio)
    if chosen == "xray":
        from shared_lib.observability.xray import XrayBackend

        return XrayBackend.to_daemon(service(), config.xray_daemon_address, config.trace_sample_ratio)
    return NoopBackend()


def use(chosen: Backend) -> Backend:
    """Install a backend (tests: an in-memory exporter); returns the one it replaced."""
    global _backend
    with _lock:
        previous, _backend = _backend, chosen
    return previous if previous is not None else NoopBackend()


def reset() -> None:
    """Forget the backend: the next span builds one from the settings again (tests)."""
    global _backend, _service
    with _lock:
        _backend = None
        _service = ""


# --- what instrumented code calls -------------------------------------------------------------------------


def active() -> bool:
    """Whether spans are recorded: callers skip building attributes when not."""
    return not isinstance(backend(), NoopBackend)


def span(name: str, kind: Kind = "internal", attributes: Attributes | None = None) -> Span:
    return backend().span(name, kind, attributes or {})


def note(key: str, value: Attribute) -> None:
    """One attribute onto the current span when it is recorded: a step that is no span of its own (an
    in-process cache's read: a dict lookup, not a round trip)."""
    backend().annotate({key: value})


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span (what an outbox row or a Kafka record carries), or None."""
    return backend().traceparent()


def current_ids() -> tuple[str, str] | None:
    return backend().ids()
