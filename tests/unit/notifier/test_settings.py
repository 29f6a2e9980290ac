"""NotifierSettings from the environment, and the sink and cache bootstrap builds from them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from functions.notifier import bootstrap
from functions.notifier.adapters.sinks import LogSink, WebhookSink
from functions.notifier.settings import NotifierSettings
from shared_lib.cache import InProcessCache, MemcachedCache


@pytest.fixture(autouse=True)
def fresh_bootstrap() -> object:
    bootstrap.reset()
    yield
    bootstrap.reset()


def test_the_defaults() -> None:
    config = NotifierSettings()
    assert config.database_url == "postgresql://postgres@127.0.0.1:15432/notifier"
    assert config.sink == "log"
    assert config.memcached == ""


def test_the_log_sink_and_the_in_process_cache_by_default() -> None:
    assert isinstance(bootstrap.sink(), LogSink)
    assert isinstance(bootstrap.cache(), InProcessCache)


def test_memcached_servers_select_the_memcached_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_MEMCACHED", "127.0.0.1:11211,127.0.0.1:11212")
    assert isinstance(bootstrap.cache(), MemcachedCache)


def test_the_webhook_sink_needs_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_SINK", "webhook")
    with pytest.raises(ValidationError):
        NotifierSettings()
    monkeypatch.setenv("NOTIFIER_WEBHOOK_URL", "http://127.0.0.1:9/hook?x=1")
    sink = bootstrap.sink()
    assert isinstance(sink, WebhookSink)
    assert sink.path == "/hook?x=1"


def test_the_sns_sink_needs_a_topic_and_a_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_SINK", "sns")
    monkeypatch.setenv("NOTIFIER_SNS_TOPIC_ARN", "arn:aws:sns:eu-central-1:123456789012:orders")
    with pytest.raises(ValidationError):
        NotifierSettings()
    monkeypatch.setenv("NOTIFIER_AWS_REGION", "eu-central-1")
    assert type(bootstrap.sink()).__name__ == "SnsSink"


def test_an_unknown_sink_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_SINK", "email")
    with pytest.raises(ValidationError):
        NotifierSettings()
