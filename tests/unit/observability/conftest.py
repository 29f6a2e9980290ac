"""Fixtures for observing in tests: an in-memory span exporter installed as the tracing backend, the metrics
as Prometheus would scrape them, and a fresh read of the observability settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from shared_lib.observability import metrics, settings, tracing

Sample = Callable[..., float]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span ended during the test, exported synchronously."""
    exporter = InMemorySpanExporter()
    tracing.use(tracing.OtelBackend.exporting("test", exporter, batch=False))
    yield exporter
    tracing.reset()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    settings.reset()
    yield
    settings.reset()


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def sample(name: str, **labels: str) -> float:
    """One sample's value now (0 when the series does not exist yet): tests compare before and after."""
    return scrape().get((name, tuple(sorted(labels.items()))), 0.0)
