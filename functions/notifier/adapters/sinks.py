"""Where notifications go: the log (the default) and a webhook. Amazon SNS lives in adapters/sns.py.

Every sink sends the same JSON message and a dedupe key that is the same for every delivery of one event,
since a notification may be delivered more than once (at least once; the receiver deduplicates).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from functions.notifier.domain import DeliveryRefusedError, Notification, rfc3339
from shared_lib.errors import TransientError
from shared_lib.httpclient import HttpClient
from shared_lib.retry import DEFAULT_BACKOFF, Backoff, retry

log = logging.getLogger("functions.notifier.delivery")

RETRIED_STATUSES = frozenset({408, 425, 429})


def message(notification: Notification) -> dict[str, Any]:
    """The delivered message; int64 fields as strings, as the HTTP API writes them."""
    return {
        "event_id": notification.event.dedupe_key,
        "order_id": str(notification.order_id),
        "user_id": str(notification.user_id),
        "status": notification.status,
        "message": notification.message,
        "created_at": rfc3339(notification.created_at),
    }


class LogSink:
    """Writes each notification as one JSON log line at INFO."""

    def deliver(self, notification: Notification) -> None:
        log.info("notification %s", json.dumps(message(notification), ensure_ascii=False))


class WebhookSink:
    """POSTs the message as JSON with `Idempotency-Key: <event id>`; timeouts, 5xx, 408 and 429 are retried
    with backoff and, after the last try, a TransientError; any other non-2xx is a refusal for good."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, tries: int = 3, backoff: Backoff = DEFAULT_BACKOFF
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("the webhook URL must be an absolute http(s) URL")
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.client = HttpClient(
            f"{parts.scheme}://{parts.netloc}", name="the notification webhook", timeout=timeout
        )
        self.tries = tries
        self.backoff = backoff

    def deliver(self, notification: Notification) -> None:
        retry(lambda: self._attempt(notification), tries=self.tries, backoff=self.backoff)

    def _attempt(self, notification: Notification) -> None:
        response = self.client.post(
            self.path,
            json_body=message(notification),
            headers={"Idempotency-Key": notification.event.dedupe_key},
        )
        if 200 <= response.status < 300:
            return
        if response.status >= 500 or response.status in RETRIED_STATUSES:
            raise TransientError(f"the notification webhook is unavailable ({response.status})")
        raise DeliveryRefusedError(f"the notification webhook answered {response.status}")
