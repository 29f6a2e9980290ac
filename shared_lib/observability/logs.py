"""Structured logs: one JSON object per line on stdout with timestamp, level, service, function, message,
the current span's trace_id and span_id, and the request's key ids (user_id, order_id, sku) where known.

Only those fields (plus the logger's name and a traceback) are ever written: no request or response bodies,
no headers, no `extra` of a call site, so no secret reaches the logs by accident. The level comes from
ObservabilitySettings (SHOP_LOG_LEVEL). Named `logs`, not `logging`, so that it never shadows the standard
module for a reader.

A warning that repeats (the same logger and message template) is written at most once per
SHOP_LOG_REPEAT_SECONDS (RepeatFilter): a dependency that is down warns on every request, and a flood of
lines costs every worker CPU and, where stdout does not cooperate (gevent), stalls it on a slow log reader.
The next line written for it says how many were held back (`suppressed`); `shop_log_warnings_total` counts
every warning, written or held back. Errors and every other level are always written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from shared_lib.observability import metrics, tracing
from shared_lib.observability.settings import settings

ID_FIELDS = ("user_id", "order_id", "sku")

# per request: service, function and the ids bound so far (a fresh dict per request, never shared)
_request: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "shop_log_context", default=None
)
_process: dict[str, str] = {}
_configured = threading.Lock()
_done = False


def set_process(service: str = "", function: str = "") -> None:
    """What every line of this process says when no request is under way (first caller wins per field)."""
    if service:
        _process.setdefault("service", service)
    if function:
        _process.setdefault("function", function)


class request_context:
    """A request's log context: lines logged inside name its service and function, and the ids bound. A class
    rather than a generator: entered around every request, it costs no generator and no contextlib frames."""

    __slots__ = ("_context", "_token")

    def __init__(self, service: str, function: str) -> None:
        self._context: dict[str, Any] = {"service": service, "function": function}
        self._token: contextvars.Token[dict[str, Any] | None] | None = None

    def __enter__(self) -> dict[str, Any]:
        self._token = _request.set(self._context)
        return self._context

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _request.reset(self._token)
            self._token = None


def in_request() -> bool:
    return _request.get() is not None


def bind(**ids: int | str | None) -> None:
    """Add key ids (user_id, order_id, sku) to the current request's lines; outside a request: nothing."""
    context = _request.get()
    if context is None:
        return
    for key, value in ids.items():
        if value is not None and key in ID_FIELDS:
            context[key] = value


class JsonFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)  # timestamps in UTC, to the millisecond: 2026-11-22T08:00:00.123Z
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def format(self, record: logging.LogRecord) -> str:
        context = _request.get() or {}
        line: dict[str, Any] = {
            "timestamp": self.formatTime(record),
            "level": record.levelname.lower(),
            "service": context.get("service") or _process.get("service") or tracing.service(),
            "function": context.get("function") or _process.get("function", ""),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = tracing.current_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        for key in ID_FIELDS:
            if key in context:
                line[key] = context[key]
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        suppressed = getattr(record, SUPPRESSED, 0)
        if suppressed:
            line[SUPPRESSED] = suppressed
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines (SHOP_LOG_FORMAT=text), with the count of repeats held back before the line, if any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        suppressed = getattr(record, SUPPRESSED, 0)
        return f"{text} [{suppressed} like it suppressed]" if suppressed else text


# the attribute RepeatFilter sets on a line it lets through after holding back repeats, and the JSON field
SUPPRESSED = "suppressed"
# at most this many (logger, template) pairs are watched; a new pair past it is written and not watched
MAX_WATCHED = 1024


class RepeatFilter(logging.Filter):
    """Writes a warning the first time its logger logs its message template, then at most once per
    `interval` seconds; one let through after others were held back carries their count (`suppressed`).

    Only WARNING records are held back: errors (a request failed for a reason its caller sees as a 500, a
    poison event dropped, a record that could not be dead-lettered) and every other level always pass, and so
    does any warning of another logger or template, however close in time. Every warning is counted in
    `shop_log_warnings_total` {logger, outcome: written | suppressed}, so the metrics lose none of them. A
    count still held when no further line of its pair comes is in the metric only. `interval` 0: nothing is
    held back. `clock` is injected by tests.

    The lock is never held across anything that can switch greenlets (a dict lookup and two numbers): under
    gevent, where it may be a native lock made before the worker patched threading, no greenlet waits on it.
    """

    def __init__(
        self, interval: float, clock: Callable[[], float] = time.monotonic, max_watched: int = MAX_WATCHED
    ) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.max_watched = max_watched
        self._lock = threading.Lock()
        # (logger, template) -> [end of its window, repeats held back since its last line]
        self._windows: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        written, suppressed = self._decide((record.name, str(record.msg)))
        metrics.LOG_WARNINGS.labels(record.name, "written" if written else "suppressed").inc()
        if suppressed:
            setattr(record, SUPPRESSED, suppressed)
        return written

    def _decide(self, key: tuple[str, str]) -> tuple[bool, int]:
        """(written, repeats held back before it) for one more warning of `key`."""
        if self.interval <= 0:
            return True, 0
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now < window[0]:
                window[1] += 1
                return False, 0
            if window is None and len(self._windows) >= self.max_watched:
                self._forget_quiet(now)
                if len(self._windows) >= self.max_watched:
                    return True, 0
            held = 0 if window is None else int(window[1])
            self._windows[key] = [now + self.interval, 0]
            return True, held

    def _forget_quiet(self, now: float) -> None:
        """Stop watching the pairs whose window ended with nothing held back (their next line is a first)."""
        for key in [key for key, (end, held) in self._windows.items() if end <= now and not held]:
            del self._windows[key]

    def watched(self) -> dict[tuple[str, str], int]:
        """Every (logger, template) watched, with the repeats held back since its last line written."""
        with self._lock:
            return {key: int(held) for key, (_, held) in self._windows.items()}

    def held(self) -> dict[tuple[str, str], int]:
        """The repeats held back since the last line written, per (logger, template) that has any."""
        return {key: held for key, held in self.watched().items() if held}


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """stdout, looked up on each line (tests capture it by replacing sys.stdout)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure(force: bool = False) -> None:
    """Route the root logger to stdout as JSON lines (or plain text with SHOP_LOG_FORMAT=text), once."""
    global _done
    with _configured:
        if _done and not force:
            return
        config = settings()
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
            root.removeHandler(handler)
        handler = _Handler()
        if config.log_format == "json" and config.observability:
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(TextFormatter())
        handler.addFilter(RepeatFilter(config.log_repeat_seconds))
        root.addHandler(handler)
        root.setLevel(config.log_level.upper())
        logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))  # every connection step at INFO
        _done = True


def repeat_filter() -> RepeatFilter | None:
    """The filter of the handler configure() put on the root logger (None before)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _Handler):
            for candidate in handler.filters:
                if isinstance(candidate, RepeatFilter):
                    return candidate
    return None


def reset() -> None:
    """Take the handler off the root logger again (tests)."""
    global _done
    with _configured:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
            root.removeHandler(handler)
        _done = False
