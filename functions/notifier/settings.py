"""The notifier's configuration: the only reader of the environment for this service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_")

    database_url: str = "postgresql://postgres@127.0.0.1:15432/notifier"
    pool_size: int = Field(8, ge=1, le=1000)  # a delivery holds its connection while the sink is called

    sink: Literal["log", "webhook", "sns"] = "log"
    webhook_url: str = ""
    webhook_timeout_seconds: float = Field(5.0, gt=0)
    webhook_tries: int = Field(3, ge=1)  # tries in all per delivery, then the event comes again later
    webhook_backoff_base_seconds: float = Field(0.2, ge=0)
    webhook_backoff_max_seconds: float = Field(2.0, ge=0)
    sns_topic_arn: str = ""
    aws_region: str = ""
    aws_endpoint_url: str = ""  # optional: another SNS endpoint (a local emulator)

    memcached: str = ""  # host:port,host:port; empty: a cache in this process only
    cache_ttl_seconds: float = Field(300, gt=0)

    # the CloudEvent sources notify_status takes events from, comma-separated (exact ce-source values); any
    # other is refused with a 403, which the event source dead-letters. "/loms": the source loms' outbox
    # writes on every event (functions.loms.service.EVENT_SOURCE), kept through Kafka by the event sources
    event_sources: str = "/loms"

    @property
    def accepted_sources(self) -> frozenset[str]:
        return frozenset(s.strip() for s in self.event_sources.split(",") if s.strip())

    @model_validator(mode="after")
    def _sink_is_complete(self) -> NotifierSettings:
        if self.sink == "webhook" and not self.webhook_url:
            raise ValueError("NOTIFIER_SINK=webhook needs NOTIFIER_WEBHOOK_URL")
        if self.sink == "sns" and not (self.sns_topic_arn and self.aws_region):
            raise ValueError("NOTIFIER_SINK=sns needs NOTIFIER_SNS_TOPIC_ARN and NOTIFIER_AWS_REGION")
        if not self.accepted_sources:
            raise ValueError("NOTIFIER_EVENT_SOURCES names no source: every event would be refused")
        return self
