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
