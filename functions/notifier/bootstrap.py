"""The notifier's composition root: settings, the pool, the cache, the sink and the service, built once on
first use. Also what the dev server and deploy jobs call before serving: `migrate()`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from functions.notifier.adapters.postgres import PgNotificationHistory, PgNotificationStore
from functions.notifier.adapters.sinks import LogSink, WebhookSink
from functions.notifier.ports import NotificationSink
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


@functools.cache
def settings() -> NotifierSettings:
    return NotifierSettings()


@functools.cache
def database() -> ConnectionPool:
    pool = ConnectionPool(settings().database_url, size=settings().pool_size, name="notifier")
    lifecycle.on_shutdown(pool.close)
    return pool


@functools.cache
def cache() -> Cache:
    return shared_or_local(settings().memcached, CACHE_PREFIX, "notifier-in-process")


@functools.cache
def counters() -> InProcessCounters:
    return ExportedCounters()


@functools.cache
def sink() -> NotificationSink:
    config = settings()
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


@functools.cache
def notifier_service() -> NotifierService:
    pool = database()
    return NotifierService(
        store=PgNotificationStore(pool),
        history=PgNotificationHistory(pool),
        sink=sink(),
        cache=cache(),
        counters=counters(),
        cache_ttl_seconds=settings().cache_ttl_seconds,
    )


def migrate() -> list[str]:
    """Apply sql/shared and sql/notifier to NOTIFIER_DATABASE_URL (the database must exist)."""
    return postgres.migrate(NotifierSettings().database_url, [SQL / "shared", SQL / "notifier"])


def reset() -> None:
    """Forget everything built so far (tests change the environment between cases)."""
    for provider in (settings, database, cache, counters, sink, notifier_service):
        provider.cache_clear()
