"""The vocabulary every tracing backend shares: the Span protocol, attribute types, the no-op span and the
W3C traceparent parser. shared_lib.observability.tracing and its backends (xray) import this; it imports
neither, so the backends need not import tracing back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Literal, Protocol

Kind = Literal["client", "producer", "internal"]
Attribute = str | int | float | bool
Attributes = Mapping[str, Attribute]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Span(Protocol):
    """An open span, used as a context manager: entering makes it current, leaving ends it (an exception
    leaving it marks it failed)."""

    @property
    def recording(self) -> bool:
        """Whether what is set on it is kept: callers skip building attributes when not."""
        ...

    def __enter__(self) -> Span: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def set(self, key: str, value: Attribute) -> None: ...

    def update(self, attributes: Attributes) -> None: ...

    def fail(self, description: str) -> None:
        """Mark the span failed without an exception (a 5xx answer, a dead-lettered record)."""
        ...

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add the headers that carry this span's context to an outbound call."""
        ...


class NoopSpan:
    """A span that records nothing and carries no context."""

    recording = False

    def __enter__(self) -> NoopSpan:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass

    def set(self, key: str, value: Attribute) -> None:
        pass

    def update(self, attributes: Attributes) -> None:
        pass

    def fail(self, description: str) -> None:
        pass

    def inject(self, headers: MutableMapping[str, str]) -> None:
        pass


NOOP_SPAN = NoopSpan()


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) of a W3C traceparent, or None when it is not one."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2), bool(int(match.group(3), 16) & 1)
