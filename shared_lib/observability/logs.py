"""Structured logs: one JSON object per line on stdout with timestamp, level, service, function, message,
the current span's trace_id and span_id, and the request's key ids (user_id, order_id, sku) where known.

Only those fields (plus the logger's name and a traceback) are ever written: no request or response bodies,
no headers, no `extra` of a call site, so no secret reaches the logs by accident. The level comes from
ObservabilitySettings (SHOP_LOG_LEVEL). Named `logs`, not `logging`, so that it never shadows the standard
module for a reader.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from typing import Any

from shared_lib.observability import tracing
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
        return json.dumps(line, ensure_ascii=False, default=str)


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
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(config.log_level.upper())
        logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))  # every connection step at INFO
        _done = True


def reset() -> None:
    """Take the handler off the root logger again (tests)."""
    global _done
    with _configured:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
            root.removeHandler(handler)
        _done = False
