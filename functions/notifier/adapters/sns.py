"""Amazon SNS as a notification sink, through boto3: one Publish per notification.

The message is the sinks' JSON; attributes carry event_id, order_id, user_id and status for subscription
filters. On a FIFO topic the order is the message group and the event id the deduplication id.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3  # type: ignore[import-untyped, unused-ignore]
from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped, unused-ignore]

from functions.notifier.adapters.sinks import message
from functions.notifier.domain import DeliveryRefusedError, Notification
from shared_lib.errors import TransientError

# SNS refuses these messages for what they are; anything else (throttling, outages, a missing topic or
# permission, which configuration can fix) is worth another try
_REFUSED = frozenset({"InvalidParameter", "InvalidParameterValue", "ParameterValueInvalid"})


class SnsSink:
    def __init__(
        self,
        topic_arn: str,
        region: str,
        endpoint_url: str | None = None,
        *,
        timeout: float = 5.0,
        client: Any = None,
    ) -> None:
        self.topic_arn = topic_arn
        self.region = region
        self.endpoint_url = endpoint_url or None
        self.timeout = timeout
        self._client = client
        self._lock = threading.Lock()

    def _sns(self) -> Any:
        with self._lock:  # boto3 clients are thread-safe once made; making one is not
            if self._client is None:
                self._client = boto3.session.Session().client(
                    "sns",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=Config(
                        connect_timeout=self.timeout,
                        read_timeout=self.timeout,
                        retries={"max_attempts": 3, "mode": "standard"},
                    ),
                )
            return self._client

    def deliver(self, notification: Notification) -> None:
        request: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Message": json.dumps(message(notification), ensure_ascii=False),
            "Subject": f"Order {notification.order_id}: {notification.status}",
            "MessageAttributes": {
                "event_id": {"DataType": "String", "StringValue": notification.event.dedupe_key},
                "order_id": {"DataType": "Number", "StringValue": str(notification.order_id)},
                "user_id": {"DataType": "Number", "StringValue": str(notification.user_id)},
                "status": {"DataType": "String", "StringValue": notification.status},
            },
        }
        if self.topic_arn.endswith(".fifo"):
            request["MessageGroupId"] = str(notification.order_id)
            request["MessageDeduplicationId"] = notification.event.dedupe_key
        try:
            self._sns().publish(**request)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _REFUSED:
                raise DeliveryRefusedError(f"SNS refused the notification ({code})") from exc
            raise TransientError(f"SNS is unavailable ({code or 'error'})") from exc
        except BotoCoreError as exc:  # endpoint unreachable, timeouts, no credentials
            raise TransientError("SNS is unavailable") from exc
