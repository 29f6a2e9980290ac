"""The notifier's composition root: settings, the pool, the cache, the sink and the service, built once on
first use. Also what the dev server and deploy jobs call before serving: `migrate()`.

`bootstrap(...)` takes the dependencies to use (a test's fakes); what it is not given it builds from the
settings. The handlers in main.py use the current root, built from the environment when none was made.
"""

from __future__ import annotations

import functools
from pathlib import Path

from functions.notifier.adapters.postgres import PgNotificationHistory, PgNotificationStore
from functions.notifier.adapters.sinks import LogSink, WebhookSink
from functions.notifier.ports import NotificationHistory, NotificationSink, NotificationStore
from functions.notifier.service import NotifierService
from functions.notifier.settings import NotifierSettings
from shared_lib import lifecycle, postgres
from shared_lib.cache import Cache, shared_or_local
from shared_lib.counters import InProcessCounters
from shared_lib.observability import metrics
from shared_lib.postgres import ConnectionPool
from shared_lib.retry import Backoff

SQL = Path(__file__).resolve().parents[2] / "sql"
CACHE_PREFIX = "notifier:"


class ExportedCounters(InProcessCounters):
    """The in-process event counters, each increment also exported as shop_notifier_events_total{outcome}."""

    def increment(self, name: str, by: int = 1) -> None:
        super().increment(name, by)
        metrics.NOTIFIER_EVENTS.labels(name).inc(by)


class Root:
    """The notifier's objects; each built on first use unless given."""

    def __init__(
        self,
        settings: NotifierSettings | None = None,
        *,
        store: NotificationStore | None = None,
        history: NotificationHistory | None = None,
        sink: NotificationSink | None = None,
        cache: Cache | None = None,
        counters: InProcessCounters | None = None,
    ) -> None:
        self._settings, self._store, self._history = settings, store, history
        self._sink, self._cache, self._counters = sink, cache, counters

    @functools.cached_property
    def settings(self) -> NotifierSettings:
        return self._settings if self._settings is not None else NotifierSettings()

    @functools.cached_property
    def database(self) -> ConnectionPool:
        pool = ConnectionPool(self.settings.database_url, size=self.settings.pool_size, name="notifier")
        lifecycle.on_shutdown(pool.close)
        return pool

    @functools.cached_property
    def cache(self) -> Cache:
        if self._cache is not None:
            return self._cache
        return shared_or_local(self.settings.memcached, CACHE_PREFIX, "notifier-in-process")

    @functools.cached_property
    def counters(self) -> InProcessCounters:
        return self._counters if self._counters is not None else ExportedCounters()

    @functools.cached_property
    def sink(self) -> NotificationSink:
        if self._sink is not None:
            return self._sink
        config = self.settings
        if config.sink == "webhook":
            backoff = Backoff(config.webhook_backoff_base_seconds, config.webhook_backoff_max_seconds)
            return WebhookSink(
                config.webhook_url,
                timeout=config.webhook_timeout_seconds,
                tries=config.webhook_tries,
                backoff=backoff,
            )
        if config.sink == "sns":
            from functions.notifier.adapters.sns import SnsSink  # boto3 is imported only where SNS is used

            return SnsSink(config.sns_topic_arn, config.aws_region, config.aws_endpoint_url or None)
        return LogSink()

    @functools.cached_property
    def notifier_service(self) -> NotifierService:
        return NotifierService(
            store=self._store or PgNotificationStore(self.database),
            history=self._history or PgNotificationHistory(self.database),
            sink=self.sink,
            cache=self.cache,
            counters=self.counters,
            cache_ttl_seconds=self.settings.cache_ttl_seconds,
        )

    def close(self) -> None:
        """Close the pool this root opened (none when nothing was built)."""
        if "database" in self.__dict__:
            self.database.close()


_roots = lifecycle.Current(Root, Root.close)
bootstrap = _roots.bootstrap  # a root on the given dependencies, made the one in use
root = _roots.root
reset = _roots.reset


def settings() -> NotifierSettings:
    return root().settings


def database() -> ConnectionPool:
    return root().database


def cache() -> Cache:
    return root().cache


def counters() -> InProcessCounters:
    return root().counters


def sink() -> NotificationSink:
    return root().sink


def notifier_service() -> NotifierService:
    return root().notifier_service


def migrate() -> list[str]:
    """Apply sql/shared and sql/notifier to NOTIFIER_DATABASE_URL (the database must exist)."""
    return postgres.migrate(NotifierSettings().database_url, [SQL / "shared", SQL / "notifier"])
