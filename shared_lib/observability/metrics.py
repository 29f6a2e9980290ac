"""Every Prometheus metric of the shop, defined once, here: never in a main.py, which functions-framework
executes again each time it builds an app (a second definition would be a duplicate-metric error).

Families are created on first use, in a registry that is itself created on first use, so importing this
module registers nothing and imports no prometheus-client: PROMETHEUS_MULTIPROC_DIR (several gunicorn
workers) may still be set after the import, as long as it is before the first metric is touched.
With SHOP_OBSERVABILITY=off every family is a no-op. No label carries an id: label sets stay small.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from shared_lib.observability.settings import settings

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]
Mode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent"
]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUERY_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
DELAY_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
COUNT_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100, 1000)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Child(Protocol):
    """One labelled series (prometheus-client's child objects, or the no-op)."""

    def inc(self, amount: float = 1) -> None: ...

    def set(self, value: float) -> None: ...

    def observe(self, amount: float) -> None: ...


class _Noop:
    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


NOOP: Child = _Noop()

_lock = threading.RLock()
_registry: Any = None
_on_scrape: list[Callable[[], None]] = []


class Family:
    """A metric family, created on first use. `labels(...)` gives the series to `inc`/`observe`/`set`."""

    def __init__(
        self,
        kind: Kind,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        multiprocess_mode: Mode = "livesum",
    ) -> None:
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(buckets)
        self.multiprocess_mode = multiprocess_mode  # gauges only: how the workers' values combine
        self._metric: Any = None
        self._children: dict[tuple[str, ...], Child] = {}

    def _create(self) -> Any:
        with _lock:
            if self._metric is None:
                import prometheus_client

                registry = _ensure_registry()
                common: dict[str, Any] = {"labelnames": self.labelnames, "registry": registry}
                if self.kind == "counter":
                    name = self.name.removesuffix("_total")
                    self._metric = prometheus_client.Counter(name, self.documentation, **common)
                elif self.kind == "gauge":
                    self._metric = prometheus_client.Gauge(
                        self.name, self.documentation, multiprocess_mode=self.multiprocess_mode, **common
                    )
                else:
                    self._metric = prometheus_client.Histogram(
                        self.name, self.documentation, buckets=self.buckets, **common
                    )
            return self._metric

    def labels(self, *values: str) -> Child:
        """The series with these label values (in `labelnames` order); the no-op when observability is off."""
        child = self._children.get(values)
        if child is None:
            if not settings().observability:
                return NOOP
            metric = self._create()
            child = metric.labels(*values) if self.labelnames else metric
            self._children[values] = child
        return child

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def observe(self, amount: float) -> None:
        self.labels().observe(amount)


def _ensure_registry() -> Any:
    global _registry
    with _lock:
        if _registry is None:
            import prometheus_client
            from prometheus_client import CollectorRegistry

            _registry = CollectorRegistry(auto_describe=True)
            if not multiprocess():
                # process and runtime figures only make sense per process: multiprocess mode cannot merge them
                prometheus_client.ProcessCollector(registry=_registry)
                prometheus_client.PlatformCollector(registry=_registry)
                prometheus_client.GCCollector(registry=_registry)
        return _registry


def multiprocess() -> bool:
    return bool(settings().prometheus_multiproc_dir)


def on_scrape(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` before every /metrics answer (gauges read at scrape time: a backlog in a database).
    A callback that fails is logged; the scrape still answers."""
    with _lock:
        if callback not in _on_scrape:
            _on_scrape.append(callback)
    return callback


def off_scrape(callback: Callable[[], None]) -> None:
    """Stop running a scrape-time callback (its resources are gone)."""
    with _lock:
        if callback in _on_scrape:
            _on_scrape.remove(callback)


def render() -> bytes:
    """The exposition text of every family (all of this function's worker processes in multiprocess mode)."""
    from prometheus_client import CollectorRegistry, generate_latest

    with _lock:
        callbacks = list(_on_scrape)
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.warning("a scrape-time metric callback failed", exc_info=True)
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry, path=settings().prometheus_multiproc_dir)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))
    return bytes(generate_latest(_ensure_registry()))


def mark_process_dead(pid: int) -> None:
    """A worker exited: drop its live gauges from the multiprocess directory (gunicorn's worker_exit)."""
    if not multiprocess():
        return
    from prometheus_client import multiprocess as mp

    mp.mark_process_dead(pid, settings().prometheus_multiproc_dir)  # type: ignore[no-untyped-call]


def load_client_before_workers() -> None:
    """Import prometheus-client now, in a server's master before it forks its workers, once the multiprocess
    mode is decided (PROMETHEUS_MULTIPROC_DIR set or not: the client reads it on import).

    A gevent worker patches the standard library (threading too) before it builds the app: imported after,
    the client guards every value with gevent's lock, whose acquire costs ~4,500 CPU instructions, four times
    per request (the request's count, its duration's sum and bucket, a cache lookup's count): a third of what
    metrics cost a request under gevent. Imported before, it keeps the thread module's lock (~100). That lock
    is held only around an addition to a float (or a write to its mmap in multiprocess mode), during which no
    greenlet can switch, so it never blocks the worker's hub. The first metric touched would import the client
    anyway before the first answer: a cold start pays the same import, in the master instead of the worker."""
    if settings().observability:
        import prometheus_client  # noqa: F401  (the import is the point)


def prepare_multiprocess_dir(path: str) -> None:
    """Create (or empty) the directory the workers of one server share; before any worker starts."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


# --- the families ---------------------------------------------------------------------------------------

# servers: every function's requests (shared_lib.observability.server)
HTTP_REQUESTS = Family(
    "counter",
    "shop_http_requests_total",
    "Requests a function answered, by function, route template and status code",
    ("function", "route", "status"),
)
HTTP_DURATION = Family(
    "histogram",
    "shop_http_request_duration_seconds",
    "Time to answer a request, by function, route template and status code",
    ("function", "route", "status"),
)

# logs: every warning, whether its line was written or held back as a repeat (shared_lib.observability.logs)
LOG_WARNINGS = Family(
    "counter",
    "shop_log_warnings_total",
    "Warnings logged, by logger and outcome (written, or suppressed as a repeat within the interval)",
    ("logger", "outcome"),
)

# clients: calls to other functions and the product service (shared_lib.httpclient)
CLIENT_DURATION = Family(
    "histogram",
    "shop_http_client_request_duration_seconds",
    "Time of an outbound call, by target and status code (`error`: no answer)",
    ("target", "status"),
)

# the database (every pg8000 connection shared_lib.postgres opens)
DB_QUERIES = Family(
    "counter",
    "shop_db_queries_total",
    "Database statements, by kind (select, insert, update, delete, other) and outcome (ok, error)",
    ("kind", "outcome"),
)
DB_DURATION = Family(
    "histogram",
    "shop_db_query_duration_seconds",
    "Time of a database statement, by kind and outcome",
    ("kind", "outcome"),
    buckets=QUERY_BUCKETS,
)

# caches (shared_lib.cache, and the cart's in-process product cache)
CACHE_REQUESTS = Family(
    "counter",
    "shop_cache_requests_total",
    "Cache lookups per key, by cache and result (hit, miss)",
    ("cache", "result"),
)

# the outbox and its relay (loms), events on Kafka or HTTP delivery (shared_lib.events)
ORDER_STATUS_CHANGES = Family(
    "counter",
    "shop_order_status_changes_total",
    "Order status changes relayed from the outbox, by new status",
    ("status",),
)
OUTBOX_BACKLOG = Family(
    "gauge",
    "shop_outbox_backlog",
    "Outbox events not yet acknowledged by the transport, per shard (read at scrape time)",
    ("shard",),
    multiprocess_mode="livemostrecent",
)
OUTBOX_OLDEST_AGE = Family(
    "gauge",
    "shop_outbox_oldest_unsent_age_seconds",
    "Age of the oldest unsent outbox event, per shard; 0 when none waits (read at scrape time)",
    ("shard",),
    multiprocess_mode="livemostrecent",
)
EVENTS_PUBLISHED = Family(
    "counter", "shop_events_published_total", "Events the transport acknowledged, by topic", ("topic",)
)
PUBLISH_DURATION = Family(
    "histogram",
    "shop_events_publish_duration_seconds",
    "Time of one relay publish (a batch, until the broker acknowledged it), by topic and outcome",
    ("topic", "outcome"),
)
RELAY_DELAY = Family(
    "histogram",
    "shop_events_relay_delay_seconds",
    "From an event's change to its acknowledgement by the transport, by topic",
    ("topic",),
    buckets=DELAY_BUCKETS,
)
CONSUME_DELAY = Family(
    "histogram",
    "shop_events_consume_delay_seconds",
    "From an event's change to the start of its handling by a CloudEvent function, by topic",
    ("topic",),
    buckets=DELAY_BUCKETS,
)

# the local KafkaSource (shared_lib.eventsource)
EVENTSOURCE_LAG = Family(
    "gauge",
    "shop_eventsource_lag_records",
    "Records of the topic not yet delivered by the event source (fetched or not), per topic",
    ("topic",),
    multiprocess_mode="livesum",
)
EVENTSOURCE_DELIVERED = Family(
    "counter", "shop_eventsource_delivered_total", "Records delivered to their sink, per topic", ("topic",)
)
EVENTSOURCE_DEAD_LETTERED = Family(
    "counter",
    "shop_eventsource_dead_lettered_total",
    "Records sent to the dead-letter topic after the retries, per topic",
    ("topic",),
)
EVENTSOURCE_DELIVERY_DELAY = Family(
    "histogram",
    "shop_eventsource_delivery_delay_seconds",
    "From a record's append to the broker to its delivery, per topic",
    ("topic",),
    buckets=DELAY_BUCKETS,
)
EVENTSOURCE_OLDEST_AGE = Family(
    "gauge",
    "shop_eventsource_oldest_undelivered_age_seconds",
    "Age of the oldest record of the partition not yet delivered or dead-lettered (0: none waits); grows "
    "while the partition is stuck",
    ("topic", "partition"),
    multiprocess_mode="livemax",
)
EVENTSOURCE_FAILED_ATTEMPTS = Family(
    "counter",
    "shop_eventsource_failed_attempts_total",
    "Deliveries that got no 2xx and were retried (a transient failure), per topic",
    ("topic",),
)
EVENTSOURCE_STALLS = Family(
    "counter",
    "shop_eventsource_stalls_total",
    "Warnings that a partition had records waiting and nothing moved for the stall time, per topic",
    ("topic",),
)
# dead-letter topics (shared_lib.deadletters), measured by the consumers that write them
DEAD_LETTERS_WAITING = Family(
    "gauge",
    "shop_dead_letters_waiting_records",
    "Records in a dead-letter topic that no redrive has passed yet, per dead-letter topic",
    ("topic",),
    multiprocess_mode="livemax",
)

# the notifier's event outcomes (notified, duplicate, out_of_order, poison, delivered, refused)
NOTIFIER_EVENTS = Family(
    "counter", "shop_notifier_events_total", "Status events the notifier handled, by outcome", ("outcome",)
)

# the cart
CART_ITEMS = Family(
    "histogram",
    "shop_cart_items",
    "Lines in a cart when it is read (list_cart, checkout)",
    buckets=COUNT_BUCKETS,
)
RATELIMIT_WAIT = Family(
    "histogram",
    "shop_ratelimit_wait_seconds",
    "Time a caller waited for the rate limiter, by limiter",
    ("limiter",),
    buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# the order viewer (functions/orders): what its ingest worker takes in and what it refuses
ORDERS_INGESTED = Family(
    "counter", "shop_orders_ingested_total", "Orders the order viewer stored from the `orders` topic"
)
ORDERS_REJECTED = Family(
    "counter",
    "shop_orders_rejected_total",
    "Order messages the order viewer refused, by reason (invalid, duplicate, …: a short fixed word)",
    ("reason",),
)
