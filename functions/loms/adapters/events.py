"""Event transports for the outbox relay that shared_lib does not provide: none configured, and one shared
transport per process used by one relay at a time. The Kafka and HTTP publishers themselves are shared_lib's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from functions.loms.ports import EventPublisher
from shared_lib.errors import TransientError
from shared_lib.events import Event


class NoEventTransport:
    """Neither Kafka nor an HTTP sink is configured: every publish fails, so events wait in the outbox."""

    def publish(self, topic: str, events: Sequence[Event]) -> None:
        if events:
            raise TransientError("no event transport configured")


class SerializedPublisher:
    """One publisher (one Kafka producer) per process, lent to one relay thread at a time: a failing publish
    resets the producer, which must not happen under another thread's feet."""

    def __init__(self, inner: EventPublisher) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def publish(self, topic: str, events: Sequence[Event]) -> None:
        with self._lock:
            self.inner.publish(topic, events)
