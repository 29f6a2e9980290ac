"""The AWS X-Ray backend of shared_lib.observability.tracing: a segment per request, subsegments for queries,
outbound calls, cache calls and publishes, sent by aws-xray-sdk's UDP emitter to an X-Ray daemon.

aws-xray-sdk's own recorder keeps the current entity in a thread-local: a cart list that fans out its product
calls on a thread pool would lose the parent. Here the current entity is a context variable (copied into
the pool's threads by shared_lib.workpool), and the SDK's models, emitter and streaming do the rest.
An incoming `X-Amzn-Trace-Id` is honoured (root, parent, sampling decision); a W3C `traceparent` is accepted
too and converted. Nothing here knows about a service.
"""

from __future__ import annotations

import contextvars
import random
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from types import TracebackType
from typing import Any

from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter
from aws_xray_sdk.core.models.segment import Segment
from aws_xray_sdk.core.models.subsegment import Subsegment
from aws_xray_sdk.core.models.trace_header import TraceHeader
from aws_xray_sdk.core.streaming.default_streaming import DefaultStreaming

from shared_lib.observability.spans import NOOP_SPAN, Attribute, Attributes, Kind, Span, parse_traceparent

TRACE_HEADER = "X-Amzn-Trace-Id"
_current: contextvars.ContextVar[Any] = contextvars.ContextVar("xray_entity", default=None)


def xray_trace_id(w3c_trace_id: str) -> str:
    """X-Ray's form of a 32-hex W3C trace id: 1-<8 hex epoch>-<24 hex>."""
    return f"1-{w3c_trace_id[:8]}-{w3c_trace_id[8:]}"


def w3c_trace_id(xray_id: str) -> str:
    return xray_id.replace("1-", "", 1).replace("-", "")


def _annotation_key(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


class XrayBackend:
    name = "xray"

    def __init__(self, service: str, emitter: Any, sample_ratio: float = 1.0) -> None:
        self.service = service
        self.emitter = emitter
        self.sample_ratio = sample_ratio
        self.streaming = DefaultStreaming()
        self._send_lock = threading.Lock()

    @classmethod
    def to_daemon(cls, service: str, address: str, sample_ratio: float = 1.0) -> XrayBackend:
        return cls(service, UDPEmitter(address), sample_ratio)

    # -- segments --------------------------------------------------------------------------------------

    def _decide(self) -> bool:
        return self.sample_ratio >= 1.0 or random.random() < self.sample_ratio

    def server(self, name: str, headers: Mapping[str, str], attributes: Attributes) -> Span:
        root = parent = None
        sampled: bool | None = None
        raw = headers.get(TRACE_HEADER) or headers.get(TRACE_HEADER.lower())
        if raw:
            header = TraceHeader.from_header_str(raw)
            root, parent = header.root, header.parent
            sampled = None if header.sampled in (None, "?") else bool(int(header.sampled))
        else:
            w3c = parse_traceparent(headers.get("traceparent"))
            if w3c is not None:
                root, parent, sampled = xray_trace_id(w3c[0]), w3c[1], w3c[2]
        if sampled is None:
            sampled = self._decide()
        segment = Segment(self.service, traceid=root, parent_id=parent, sampled=sampled)
        segment.put_annotation("operation", name)
        return _EntitySpan(self, segment, attributes)

    def consumer(self, name: str, traceparent: str | None, attributes: Attributes) -> Span:
        # X-Ray has no span links: a new trace that names the producer's in its metadata
        segment = Segment(self.service, sampled=self._decide())
        w3c = parse_traceparent(traceparent)
        if w3c is not None:
            segment.put_metadata("links", [{"trace_id": xray_trace_id(w3c[0]), "id": w3c[1]}], "shop")
            segment.put_annotation("linked_trace_id", xray_trace_id(w3c[0]))
        segment.put_annotation("operation", name)
        return _EntitySpan(self, segment, attributes)

    def span(self, name: str, kind: Kind, attributes: Attributes, links: Sequence[str] = ()) -> Span:
        parent = _current.get()
        if parent is None or not parent.sampled:
            return NOOP_SPAN  # no segment here (a background thread) or not sampled: nothing to record
        root = parent if isinstance(parent, Segment) else parent.parent_segment
        namespace = "local" if kind == "internal" else "remote"
        subsegment = Subsegment(name, namespace, root)
        if links:
            subsegment.put_metadata(
                "links",
                [
                    {"trace_id": xray_trace_id(p[0]), "id": p[1]}
                    for link in links
                    if (p := parse_traceparent(link))
                ],
                "shop",
            )
        return _EntitySpan(self, subsegment, attributes, parent)

    def annotate(self, attributes: Attributes) -> None:
        entity = _current.get()
        if entity is not None:
            _apply(entity, attributes)

    def traceparent(self) -> str | None:
        entity = _current.get()
        if entity is None:
            return None
        flags = "01" if entity.sampled else "00"
        return f"00-{w3c_trace_id(entity.trace_id)}-{entity.id}-{flags}"

    def ids(self) -> tuple[str, str] | None:
        entity = _current.get()
        return None if entity is None else (entity.trace_id, entity.id)

    def shutdown(self) -> None:
        pass  # UDP: nothing buffered

    # -- sending ---------------------------------------------------------------------------------------

    def finished(self, segment: Segment) -> None:
        """After a segment or one of its subsegments closed: send what is complete, stream what is big."""
        if not segment.sampled:
            return
        with self._send_lock:
            if getattr(segment, "_shop_sent", False):
                return
            if segment.ready_to_send():
                segment._shop_sent = True
                self.emitter.send_entity(segment)
            elif self.streaming.is_eligible(segment):
                self.streaming.stream(segment, self.emitter.send_entity)


def _apply(entity: Any, attributes: Attributes) -> None:
    for key, value in attributes.items():
        _set(entity, key, value)


def _set(entity: Any, key: str, value: Attribute) -> None:
    if key in ("http.request.method", "http.method"):
        entity.put_http_meta("method", value)
    elif key in ("url.full", "http.url"):
        entity.put_http_meta("url", value)
    elif key in ("http.response.status_code", "http.status_code") and isinstance(value, int):
        entity.put_http_meta("status", value)
        entity.apply_status_code(value)
    elif key == "db.query.text":
        entity.sql["sanitized_query"] = str(value)
    elif key == "db.namespace":
        entity.sql["url"] = str(value)
    elif key == "db.system.name":
        entity.sql["database_type"] = "PostgreSQL" if value == "postgresql" else str(value)
    else:
        entity.put_annotation(_annotation_key(key), value)


class _EntitySpan:
    """A segment (`parent` None) or a subsegment added to `parent` on entering, current while open."""

    def __init__(self, backend: XrayBackend, entity: Any, attributes: Attributes, parent: Any = None) -> None:
        self.backend = backend
        self.entity = entity
        self.parent = parent
        _apply(entity, attributes)
        self._token: contextvars.Token[Any] | None = None

    @property
    def recording(self) -> bool:
        return bool(self.entity.sampled)

    def __enter__(self) -> _EntitySpan:
        if self.parent is not None:
            self.parent.add_subsegment(self.entity)
        self._token = _current.set(self.entity)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.entity.add_exception(exc, [], remote=False)
        if self._token is not None:
            _current.reset(self._token)
        self.entity.close()
        self.backend.finished(self.entity if self.parent is None else self.entity.parent_segment)

    def set(self, key: str, value: Attribute) -> None:
        _set(self.entity, key, value)

    def update(self, attributes: Attributes) -> None:
        _apply(self.entity, attributes)

    def fail(self, description: str) -> None:
        self.entity.add_fault_flag()

    def inject(self, headers: MutableMapping[str, str]) -> None:
        headers[TRACE_HEADER] = _header(self.entity)


def _header(entity: Any) -> str:
    header = TraceHeader(root=entity.trace_id, parent=entity.id, sampled=1 if entity.sampled else 0)
    return str(header.to_header_str())
