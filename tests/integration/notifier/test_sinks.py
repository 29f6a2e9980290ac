"""The delivery sinks against real peers: SNS through boto3 against moto, the webhook against a local HTTP
server (retries, Idempotency-Key, refusals), and notify_status delivering to SNS end to end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.notifier.adapters.sinks import WebhookSink
from functions.notifier.adapters.sns import SnsSink
from functions.notifier.domain import DeliveryRefusedError, notification_for
from shared_lib.devtools.ports import free_port
from shared_lib.errors import TransientError
from shared_lib.retry import Backoff
from tests.integration.notifier.conftest import Apps, Webhook
from tests.unit.notifier.fakes import change, cloud_event, order_events

pytestmark = pytest.mark.integration

REGION = "eu-central-1"
FAST = Backoff(0.01, 0.02, jitter=False)
PAID = notification_for(change(42, order_id=7, status="paid", user_id=31337))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """moto's SNS and SQS: (sns client, sqs client); credentials are fakes, nothing leaves the process."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("sns", region_name=REGION), boto3.client("sqs", region_name=REGION)


def topic_with_queue(
    sns: Any, sqs: Any, name: str, fifo: bool = False
) -> tuple[str, Callable[[], list[Any]]]:
    """A topic and a queue subscribed to it; the second value reads what the queue received."""
    attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if fifo else {}
    topic = sns.create_topic(Name=name + (".fifo" if fifo else ""), Attributes=attributes)["TopicArn"]
    queue_attributes = {"FifoQueue": "true"} if fifo else {}
    queue = sqs.create_queue(QueueName=name + (".fifo" if fifo else ""), Attributes=queue_attributes)[
        "QueueUrl"
    ]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    def received() -> list[Any]:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]

    return topic, received


def test_sns_publishes_the_message_with_its_attributes(aws: tuple[Any, Any]) -> None:
    sns, sqs = aws
    topic, received = topic_with_queue(sns, sqs, "order-notifications")
    SnsSink(topic, REGION).deliver(PAID)
    [envelope] = received()
    assert envelope["TopicArn"] == topic
    assert envelope["Subject"] == "Order 7: paid"
    assert json.loads(envelope["Message"]) == {
        "event_id": "42",
        "order_id": "7",
        "user_id": "31337",
        "status": "paid",
        "message": "Order 7 is paid",
        "created_at": "2026-11-22T08:00:42Z",
    }
    assert envelope["MessageAttributes"] == {
        "event_id": {"Type": "String", "Value": "42"},
        "order_id": {"Type": "Number", "Value": "7"},
        "user_id": {"Type": "Number", "Value": "31337"},
        "status": {"Type": "String", "Value": "paid"},
    }


def test_sns_fifo_topics_deduplicate_on_the_event_id(aws: tuple[Any, Any]) -> None:
    sns, sqs = aws
    topic, received = topic_with_queue(sns, sqs, "order-notifications", fifo=True)
    sink = SnsSink(topic, REGION)
    sink.deliver(PAID)
    sink.deliver(PAID)  # a redelivery: the same deduplication id
    assert [json.loads(e["Message"])["event_id"] for e in received()] == ["42"]


def test_sns_without_the_topic_is_transient_so_nothing_is_lost(aws: tuple[Any, Any]) -> None:
    with pytest.raises(TransientError):
        SnsSink(f"arn:aws:sns:{REGION}:123456789012:missing", REGION).deliver(PAID)


def test_sns_unreachable_is_transient() -> None:
    sink = SnsSink(
        f"arn:aws:sns:{REGION}:123456789012:t", REGION, f"http://127.0.0.1:{free_port()}", timeout=1
    )
    with pytest.raises(TransientError):
        sink.deliver(PAID)


def test_notify_status_delivers_to_sns_once(
    aws: tuple[Any, Any], notifier_apps: Apps, unique_id: Callable[[], int]
) -> None:
    sns, sqs = aws
    topic, received = topic_with_queue(sns, sqs, "orders")
    client = notifier_apps(NOTIFIER_SINK="sns", NOTIFIER_SNS_TOPIC_ARN=topic, NOTIFIER_AWS_REGION=REGION)[
        "notify_status"
    ]
    events = order_events(unique_id() * 10, unique_id())
    for event in events * 2:
        headers, body = cloud_event(event)
        assert client.post("/", headers=headers, data=body).status_code == 200
    delivered = [json.loads(e["Message"]) for e in received()]
    assert [d["status"] for d in delivered] == ["new", "awaiting payment", "paid"]
    assert [d["event_id"] for d in delivered] == [str(e.event.id) for e in events]


# --- the webhook ----------------------------------------------------------------------------------------


def test_the_webhook_gets_the_message_with_the_idempotency_key(webhook: Webhook) -> None:
    WebhookSink(webhook.url, backoff=FAST).deliver(PAID)
    [(headers, body)] = webhook.received
    assert headers["Idempotency-Key"] == "42"
    assert headers["Content-Type"] == "application/json"
    assert body["event_id"] == "42" and body["status"] == "paid"


@pytest.mark.parametrize("status", [500, 503, 429, 408])
def test_the_webhook_is_retried_on_outages_and_throttling(webhook: Webhook, status: int) -> None:
    webhook.fail_next, webhook.fail_status = 2, status
    WebhookSink(webhook.url, tries=3, backoff=FAST).deliver(PAID)
    assert webhook.events() == [42]


def test_a_webhook_down_for_every_try_is_transient(webhook: Webhook) -> None:
    webhook.fail_next = 3
    with pytest.raises(TransientError):
        WebhookSink(webhook.url, tries=3, backoff=FAST).deliver(PAID)
    assert webhook.fail_next == 0  # all three tries reached it
    assert webhook.received == []


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_a_webhook_refusal_is_not_retried(webhook: Webhook, status: int) -> None:
    webhook.fail_next, webhook.fail_status = 3, status
    with pytest.raises(DeliveryRefusedError):
        WebhookSink(webhook.url, tries=3, backoff=FAST).deliver(PAID)
    assert webhook.fail_next == 2  # one try only


def test_a_closed_port_is_transient() -> None:
    with pytest.raises(TransientError):
        WebhookSink(f"http://127.0.0.1:{free_port()}/hook", tries=2, backoff=FAST).deliver(PAID)
