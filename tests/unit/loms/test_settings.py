"""loms configuration from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from functions.loms.settings import LomsSettings


def test_defaults_need_no_environment() -> None:
    settings = LomsSettings()
    assert settings.shards() == ["postgresql://postgres@127.0.0.1:15432/loms"]
    assert settings.replicas() == []
    assert settings.stock_seed_path.is_file()


def test_shards_and_replicas_are_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOMS_SHARD_DSNS", "postgresql://a/x, postgresql://b/y")
    monkeypatch.setenv("LOMS_REPLICA_DSNS", ",postgresql://c/y")
    settings = LomsSettings()
    assert settings.shards() == ["postgresql://a/x", "postgresql://b/y"]
    assert settings.replicas() == [None, "postgresql://c/y"]


@pytest.mark.parametrize(
    ("shards", "replicas"), [("postgresql://a/x,postgresql://b/y", "postgresql://c/x"), (" , ", "")]
)
def test_inconsistent_lists_are_refused(monkeypatch: pytest.MonkeyPatch, shards: str, replicas: str) -> None:
    monkeypatch.setenv("LOMS_SHARD_DSNS", shards)
    monkeypatch.setenv("LOMS_REPLICA_DSNS", replicas)
    with pytest.raises(ValidationError):
        LomsSettings()


def test_event_settings_default_to_no_transport_and_ten_minutes() -> None:
    settings = LomsSettings()
    assert (settings.kafka_bootstrap, settings.event_routes()) == ("", {})
    assert settings.stale_after_seconds == 600
    assert settings.relay_poll_seconds == 1.0


def test_event_sinks_are_topic_url_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "LOMS_EVENT_SINKS",
        "loms.order-events=http://127.0.0.1:8085/events/notify_status, loms.order-events=http://h/x,a=https://b/c",
    )
    assert LomsSettings().event_routes() == {
        "loms.order-events": ["http://127.0.0.1:8085/events/notify_status", "http://h/x"],
        "a": ["https://b/c"],
    }


@pytest.mark.parametrize("sinks", ["loms.order-events", "=http://h/x", "loms.order-events=ftp://h/x"])
def test_malformed_event_sinks_are_refused(monkeypatch: pytest.MonkeyPatch, sinks: str) -> None:
    monkeypatch.setenv("LOMS_EVENT_SINKS", sinks)
    with pytest.raises(ValidationError):
        LomsSettings()
