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

import functools
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

    def __init__(
        self, provider: Any, parent_based: bool = False, root_sampler: Any = None, ids: Any = None
    ) -> None:
        """`parent_based`: the provider's sampler is ParentBased with its default delegates, so a span under
        an unsampled parent is never recorded; span() then skips the SDK for it (see _UnsampledSpan).

        `ids`: the provider's id generator (a _DecidedIds); with it, a request under an unsampled caller
        skips the SDK too (_DroppedSpan). `root_sampler`, with `ids`: the root sampler of the provider's
        ParentBased. A span that starts a trace is then decided here, on a trace id drawn from `ids`, with
        the sampler's own should_sample: a dropped one never reaches the SDK (_DroppedSpan); a sampled one
        does, with that trace id, and the provider's sampler decides it the same again."""
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._new_context = context.Context  # no parent: a new trace
        self._kinds = {kind: trace.SpanKind[kind.upper()] for kind in _KINDS}
        self.provider = provider
        self.parent_based = parent_based
        self.tracer = provider.get_tracer("shop")
        self._trace = trace
        self._context = context
        self._propagator = TraceContextTextMapPropagator()
        self._ids: _DecidedIds | None = ids
        self._root_sampler = root_sampler if ids is not None else None
        # a dropped trace's flags, as the SDK sets them: not sampled; the trace id random when it is
        self._dropped_flags = trace.TraceFlags(
            trace.TraceFlags.RANDOM_TRACE_ID if ids is not None and ids.is_trace_id_random() else 0
        )

    @classmethod
    def exporting(
        cls, service: str, exporter: Any, sample_ratio: float = 1.0, batch: bool = True
    ) -> OtelBackend:
        """A backend whose spans go to `exporter` (OTLP in production, in-memory in tests). Batched, the
        exporter gets its spans from the SDK's BatchSpanProcessor with its own settings (OTEL_BSP_*: every
        5 s or 512 spans, whichever first)."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.id_generator import IdGenerator
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

        root = ALWAYS_ON if sample_ratio >= 1.0 else TraceIdRatioBased(sample_ratio)  # the same decisions
        ids = decided_ids()
        assert isinstance(ids, IdGenerator)
        provider = TracerProvider(
            resource=Resource.create({"service.name": service, "service.namespace": "shop"}),
            sampler=ParentBased(root),
            id_generator=ids,
        )
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        # every root sampled: nothing to decide before the SDK
        return cls(provider, parent_based=True, root_sampler=None if sample_ratio >= 1.0 else root, ids=ids)

    def server(self, name: str, headers: Mapping[str, str], attributes: Attributes) -> Span:
        traceparent = headers.get("traceparent")
        if traceparent:
            carrier = {"traceparent": traceparent}
            if tracestate := headers.get("tracestate"):
                carrier["tracestate"] = tracestate
            parent = self._propagator.extract(carrier)
            caller = self._trace.get_current_span(parent).get_span_context()
            if caller.is_valid:
                if self.parent_based and self._ids is not None and not caller.trace_flags.sampled:
                    # ParentBased follows the caller: not recorded. Its trace goes on, in a span of our own
                    return _DroppedSpan(self, caller.trace_id, caller.trace_flags, caller.trace_state)
                return _OtelSpan(self, name, "server", attributes, parent, [])
        return self._current_or_root(name, "server", attributes, ())

    def consumer(self, name: str, traceparent: str | None, attributes: Attributes) -> Span:
        return self._root(name, "consumer", attributes, self._links([traceparent]))

    def span(self, name: str, kind: Kind, attributes: Attributes, links: Sequence[str] = ()) -> Span:
        return self._current_or_root(name, kind, attributes, links)

    def _current_or_root(self, name: str, kind: str, attributes: Attributes, links: Sequence[str]) -> Span:
        """A child of the current span, or, outside any (a request with no caller, a worker's loop), the first
        span of a new trace."""
        if self.parent_based:
            current = self._trace.get_current_span()
            span_context = current.get_span_context()
            if span_context.is_valid:
                if not span_context.trace_flags.sampled:
                    # the sampler would say no: nine requests in ten at 1 in 10. No SDK span, no links parsed,
                    # no context attached; what it injects is the unsampled parent's context, so it still
                    # propagates
                    return _UnsampledSpan(self, current)
            elif self._root_sampler is not None:
                return self._root(name, kind, attributes, self._links(links))
        return _OtelSpan(self, name, kind, attributes, None, self._links(links))

    def _root(self, name: str, kind: str, attributes: Attributes, links: list[Any]) -> Span:
        """A span that starts a new trace: decided here when the backend has the root sampler."""
        ids, sampler = self._ids, self._root_sampler
        if ids is None or sampler is None:
            return _OtelSpan(self, name, kind, attributes, self._new_context(), links)
        trace_id = ids.new_trace_id()
        decided = sampler.should_sample(None, trace_id, name, self._kinds[kind], attributes, links)
        if not decided.decision.is_recording():
            return _DroppedSpan(self, trace_id, self._dropped_flags, decided.trace_state)
        return _OtelSpan(self, name, kind, attributes, self._new_context(), links, trace_id)

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
    __slots__ = (
        "_attributes",
        "_backend",
        "_kind",
        "_links",
        "_name",
        "_parent",
        "_span",
        "_token",
        "_trace_id",
    )

    recording = True

    def __init__(
        self,
        backend: OtelBackend,
        name: str,
        kind: str,
        attributes: Attributes,
        parent: Any,
        links: list[Any],
        trace_id: int = 0,  # a new trace's id, already decided sampled (OtelBackend._root)
    ) -> None:
        self._backend = backend
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._parent = parent
        self._links = links
        self._trace_id = trace_id
        self._span: Any = None
        self._token: Any = None

    def __enter__(self) -> _OtelSpan:
        backend = self._backend
        if self._trace_id and backend._ids is not None:
            backend._ids.decided(self._trace_id)
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


class _DroppedSpan(NoopSpan):
    """A span its sampler dropped (a new trace's, or a request's under an unsampled caller): nothing goes
    through the SDK, but the trace goes on as the SDK would carry it: while it is open its context is the
    current one (a span id of its own, the sampled flag off), so spans inside it are unsampled children,
    log lines carry its ids and outbound calls and events carry its traceparent."""

    __slots__ = ("_backend", "_span", "_token")

    def __init__(self, backend: OtelBackend, trace_id: int, flags: Any, trace_state: Any) -> None:
        trace = backend._trace
        assert backend._ids is not None
        context = trace.SpanContext(
            trace_id,
            backend._ids.generate_span_id(),
            is_remote=False,
            trace_flags=trace.TraceFlags(flags & ~trace.TraceFlags.SAMPLED),
            trace_state=trace_state,
        )
        self._backend = backend
        self._span = trace.NonRecordingSpan(context)
        self._token: Any = None

    def __enter__(self) -> _DroppedSpan:
        backend = self._backend
        self._token = backend._context.attach(backend._trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._backend._context.detach(self._token)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        self._backend._propagator.inject(
            headers, context=self._backend._trace.set_span_in_context(self._span)
        )


class _DecidedIds(Protocol):
    """The provider's id generator (decided_ids()): the SDK's random one, except that the next root span of
    this thread gets the trace id a sampling decision was already made on (`decided`), so that the SDK's
    sampler, asked again, sees the same id and decides the same."""

    def decided(self, trace_id: int) -> None: ...

    def new_trace_id(self) -> int: ...  # a random one, as the SDK's: the id a decision is made on

    def generate_trace_id(self) -> int: ...

    def generate_span_id(self) -> int: ...

    def is_trace_id_random(self) -> bool: ...


def decided_ids() -> _DecidedIds:
    """A new _DecidedIds: a subclass of the SDK's RandomIdGenerator, defined on use (the SDK is imported only
    by a process that traces)."""
    return _decided_ids_class()()


@functools.cache
def _decided_ids_class() -> type[_DecidedIds]:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class DecidedIds(RandomIdGenerator):
        def __init__(self) -> None:
            self._decided = threading.local()

        def decided(self, trace_id: int) -> None:
            self._decided.trace_id = trace_id

        def new_trace_id(self) -> int:  # no thread-local lookup: nine roots in ten go no further
            return super().generate_trace_id()

        def generate_trace_id(self) -> int:
            trace_id: int = getattr(self._decided, "trace_id", 0)
            if trace_id:
                self._decided.trace_id = 0
                return trace_id
            return super().generate_trace_id()

    return DecidedIds


# --- choosing the backend ---------------------------------------------------------------------------------

_lock = threading.Lock()
_backend: Backend | None = None
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
    """The process's backend, built from the settings on first use."""
    current = _backend
    if current is not None:
        return current
    with _lock:
        if _backend is None:
            _install(_from_settings())
        assert _backend is not None
        return _backend


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


def _install(chosen: Backend) -> None:
    global _backend
    _backend = chosen
    if not isinstance(chosen, NoopBackend):
        lifecycle.on_shutdown(chosen.shutdown)  # flush what is buffered when the worker stops


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


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span (what an outbox row or a Kafka record carries), or None."""
    return backend().traceparent()


def current_ids() -> tuple[str, str] | None:
    return backend().ids()
