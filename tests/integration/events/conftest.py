"""Fixtures of the event tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared_lib.eventsource import KafkaEventSource


@pytest.fixture
def running() -> Iterator[list[KafkaEventSource]]:
    """Sources a test starts are stopped at its end, whatever happened."""
    sources: list[KafkaEventSource] = []
    yield sources
    for source in sources:
        source.stop(5)
