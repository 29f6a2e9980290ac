"""The one place a function's requests are observed: a WSGI middleware around each function's app that counts
and times every request by function, route template and status, opens its span (a server span under the
caller's context, or, for a CloudEvent function, a consumer span linked to the event's producer), scopes its
log lines, and serves GET /metrics and the guarded GET /debug/profile beside the function.

functions.entrypoint wraps every function with it, so the container and the dev server (which builds each
function as its container does) are observed alike, with no code in any service. shared_lib.web adds the
request's key ids through `annotate`. Nothing here knows about a particular service.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from shared_lib.observability import logs, metrics, profiling, tracing
from shared_lib.observability.settings import settings

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Trigger = Literal["http", "cloudevent", "cron"]
METRICS_PATH = "/metrics"
_TRACE_HEADERS = {"traceparent": "HTTP_TRACEPARENT", "tracestate": "HTTP_TRACESTATE"}
_XRAY_HEADER = "HTTP_X_AMZN_TRACE_ID"
# the names a request may give its key ids in (path, query or body), and the one the logs use
_ID_NAMES = {
    "user_id": "user_id",
    "userId": "user_id",
    "order_id": "order_id",
    "orderId": "order_id",
    "sku": "sku",
}


def setup(service: str) -> None:
    """What a process serving functions of `service` does once: name its traces, route its logs."""
    tracing.set_service(service)
    logs.set_process(service=service)
    logs.configure()


def metrics_endpoint(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """GET /metrics: the Prometheus exposition of this function's processes."""
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        body = json.dumps({"code": 3, "message": "method not allowed; allowed: GET", "details": []}).encode()
        start_response(
            "405 METHOD NOT ALLOWED",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Allow", "GET")],
        )
        return [body]
    payload = metrics.render() if settings().observability else b""
    start_response(
        "200 OK",
        [
            ("Content-Type", metrics.CONTENT_TYPE),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [payload]


class ObservedFunction:
    """One function's app, observed. `route` is the table's path template: a label, never the real path."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        function: str,
        service: str,
        route: str,
        method: str = "",
        trigger: Trigger = "http",
        topic: str = "",
    ) -> None:
        self.app = app
        self.function = function
        self.service = service
        self.route = route or "/"
        self.trigger = trigger
        self.topic = topic
        if trigger == "cloudevent":
            self.span_name = f"process {topic}" if topic else f"process {function}"
        else:
            self.span_name = f"{method} {self.route}".strip()
        self.faas_trigger = {"http": "http", "cloudevent": "pubsub", "cron": "timer"}[trigger]
        # status -> (requests counter, duration histogram) of this function and route (_count)
        self._series: dict[str, tuple[metrics.Child, metrics.Child]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == METRICS_PATH:
            return metrics_endpoint(environ, start_response)
        if path == profiling.PATH:
            return profiling.wsgi(environ, start_response)
        if not settings().observability:
            return self.app(environ, start_response)
        started = time.perf_counter()
        statuses: list[str] = []

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        status = "500"
        span_of = self._span(environ, tracing.backend())
        with logs.request_context(self.service, self.function) as context, span_of as span:
            try:
                result = self.app(environ, recording_start_response)
                status = statuses[-1][:3] if statuses else "500"
            finally:
                if span.recording:
                    # the request's key ids, bound to its log lines meanwhile, go onto its span in one call
                    ended: dict[str, tracing.Attribute] = {"http.response.status_code": int(status)}
                    for key in logs.ID_FIELDS:
                        if key in context:
                            ended[f"shop.{key}"] = context[key]
                    span.update(ended)
                    if status >= "500":
                        span.fail(f"HTTP {status}")
                self._count(status, time.perf_counter() - started)
        return result

    def _count(self, status: str, elapsed: float) -> None:
        """One request answered with `status` in `elapsed` seconds: its count and its duration. The two series
        of a status are looked up once per function (Family.labels returns prometheus-client's child)."""
        series = self._series.get(status)
        if series is None:
            counted = metrics.HTTP_REQUESTS.labels(self.function, self.route, status)
            timed = metrics.HTTP_DURATION.labels(self.function, self.route, status)
            if counted is metrics.NOOP or timed is metrics.NOOP:  # observability off meanwhile: keep nothing
                return
            series = self._series[status] = (counted, timed)
        series[0].inc()
        series[1].observe(elapsed)

    def _span(self, environ: dict[str, Any], backend: tracing.Backend) -> tracing.Span:
        if isinstance(backend, tracing.NoopBackend):  # metrics and logs only: a span that records nothing
            if self.trigger == "cloudevent":
                _event_delay(environ, self.topic)
            return tracing.NOOP_SPAN
        # few attributes: the SDK cleans each one, and the span's name already says method and route
        attributes: dict[str, tracing.Attribute] = {
            "faas.name": self.function,
            "http.request.method": environ.get("REQUEST_METHOD", ""),
            "http.route": self.route,
        }
        if self.trigger == "cloudevent":
            delay = _event_delay(environ, self.topic)
            attributes.update(
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": self.topic,
                    "messaging.message.id": environ.get("HTTP_CE_ID", ""),
                    "cloudevents.event_type": environ.get("HTTP_CE_TYPE", ""),
                    "cloudevents.event_source": environ.get("HTTP_CE_SOURCE", ""),
                }
            )
            if delay is not None:
                attributes["shop.event.delay_seconds"] = round(delay, 6)  # from the change to its handling
            return backend.consumer(self.span_name, environ.get("HTTP_TRACEPARENT"), attributes)
        headers: dict[str, str] = {}
        if "HTTP_TRACEPARENT" in environ:  # most requests have no caller's context: nothing to copy
            headers = {name: environ[key] for name, key in _TRACE_HEADERS.items() if key in environ}
        if _XRAY_HEADER in environ:
            headers["X-Amzn-Trace-Id"] = environ[_XRAY_HEADER]
        return backend.server(self.span_name, headers, attributes)


def _event_delay(environ: dict[str, Any], topic: str) -> float | None:
    """Seconds from the event's `ce-time` (when the change happened) to now; recorded per topic."""
    stamp = environ.get("HTTP_CE_TIME")
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delay = max(0.0, (datetime.now(UTC) - moment).total_seconds())
    metrics.CONSUME_DELAY.labels(topic or "unknown").observe(delay)
    return delay


def annotate_request(
    params: Mapping[str, Any], query: Mapping[str, Any], body: bytes, unparsed: Any = None
) -> Any:
    """The key ids of a request under observation (path, query, a small JSON object body); else nothing.

    Returns the body as parsed for it (a JSON object), so that the caller need not parse it again; `unparsed`
    when it did not parse one (not observed, no body, a body too large or not an object, invalid JSON)."""
    if not logs.in_request():
        return unparsed
    parsed: Any = unparsed
    if body and len(body) <= 4096 and body.lstrip()[:1] == b"{":
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = unparsed
    annotate(params, query, parsed if isinstance(parsed, dict) else None)
    return parsed


def annotate_reply(body: Any) -> None:
    """The id of an order an answer names (a new order's), when the request did not know it."""
    if isinstance(body, dict) and ("order_id" in body or "orderId" in body) and logs.in_request():
        annotate({k: body[k] for k in ("order_id", "orderId") if k in body})


def annotate(*sources: Mapping[str, Any] | None) -> None:
    """Bind the request's key ids (user_id, order_id, sku under any of their spellings) found in `sources`
    (path parameters, query, a JSON body or reply) to its log lines; the middleware puts them on its span."""
    found: dict[str, int | str] = {}
    for source in sources:
        if not source:
            continue
        for name, value in source.items():
            key = _ID_NAMES.get(name)
            if key is not None and isinstance(value, (int, str)) and not isinstance(value, bool):
                found.setdefault(key, value)
    if found:
        logs.bind(**found)


# --- long-running workers (no functions-framework app): their probes and their metrics -------------------


class WorkerEndpoints:
    """GET /healthz and GET /metrics of a long-running worker process (loms' outbox relay in the cluster),
    on `port` of all interfaces, served from a daemon thread until `close()`. `health()` says whether the
    worker still makes progress, with details for the body: 200 when it does, 503 when not (the liveness
    probe then restarts it)."""

    def __init__(
        self, port: int, health: Callable[[], tuple[bool, dict[str, Any]]], host: str = "0.0.0.0"
    ) -> None:
        # imported here: a function's cold start does not pay for what only workers use
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not news
                pass

        self.health = health
        self._server: WSGIServer = make_server(host, port, self, handler_class=Quiet)
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="worker-endpoints", daemon=True
        )
        self._thread.start()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == METRICS_PATH:
            return metrics_endpoint(environ, start_response)
        if path == "/healthz" and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            alive, details = self.health()
            status = "200 OK" if alive else "503 Service Unavailable"
            return json_reply(start_response, status, {"status": "ok" if alive else "stalled", **details})
        return json_reply(
            start_response, "404 NOT FOUND", {"code": 5, "message": f"no route for {path}", "details": []}
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def json_reply(start_response: Callable[..., Any], status: str, body: Mapping[str, Any]) -> list[bytes]:
    """A small uncached JSON answer straight from WSGI (health routes, a worker's endpoints)."""
    payload = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [payload]
