"""The loms service's configuration: the only reader of the environment for this service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DATA = Path(__file__).resolve().parent / "data"


class LomsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOMS_")

    # Comma-separated. Orders are sharded over every DSN by order id; the first shard also holds the stock.
    shard_dsns: str = "postgresql://postgres@127.0.0.1:15432/loms"
    # Comma-separated read replicas, one per shard (an empty entry: that shard has none); empty: no replicas.
    replica_dsns: str = ""
    pool_size: int = Field(10, ge=1, le=1000)  # connections per shard and per replica
    idempotency_pool_size: int = Field(4, ge=1, le=1000)  # held while an Idempotency-Key request runs
    stock_seed_path: Path = DATA / "stock-data.json"

    # Where status events go. Kafka brokers (comma-separated host:port) when set; else the embedded fallback,
    # HTTP delivery straight to CloudEvent functions: comma-separated topic=url pairs (a topic may repeat);
    # else nowhere: events wait in the outbox until a transport is configured.
    kafka_bootstrap: str = ""
    event_sinks: str = ""
    relay_batch_size: int = Field(1000, ge=1, le=100_000)  # events per publish and per mark
    relay_linger_seconds: float = Field(5.0, ge=0, le=900)  # how long a cron-triggered relay stays listening
    relay_poll_seconds: float = Field(1.0, gt=0, le=60)  # the fallback when no notification comes
    # Under a steady inflow the relay drains at most once per this many seconds (one publish and one mark for
    # all that came meanwhile; each costs ~1 ms of CPU whatever its size); an event after a quiet spell goes
    # at once. 0: a drain per commit.
    relay_gather_seconds: float = Field(0.05, ge=0, le=1)
    # Orders `new` or `awaiting payment` for longer than this are cancelled by cancel_stale_orders.
    stale_after_seconds: float = Field(600, ge=0)
    sweep_batch_size: int = Field(500, ge=1, le=100_000)  # orders per shard per sweep
    # Sent outbox events older than this are deleted by the same sweep (0: kept forever), at most so many
    # per shard a run.
    outbox_retention_seconds: float = Field(7 * 24 * 3600, ge=0)
    outbox_prune_batch_size: int = Field(10_000, ge=1, le=1_000_000)

    def event_routes(self) -> dict[str, list[str]]:
        """LOMS_EVENT_SINKS as {topic: [url, …]}."""
        routes: dict[str, list[str]] = {}
        for pair in filter(None, (p.strip() for p in self.event_sinks.split(","))):
            topic, _, url = pair.partition("=")
            routes.setdefault(topic.strip(), []).append(url.strip())
        return routes

    def shards(self) -> list[str]:
        return [d.strip() for d in self.shard_dsns.split(",") if d.strip()]

    def replicas(self) -> list[str | None]:
        """One entry per shard (None: no replica), or an empty list when no replica is configured."""
        if not self.replica_dsns.strip():
            return []
        return [d.strip() or None for d in self.replica_dsns.split(",")]

    @model_validator(mode="after")
    def _replicas_match_shards(self) -> LomsSettings:
        if not self.shards():
            raise ValueError("LOMS_SHARD_DSNS needs at least one DSN")
        replicas = self.replicas()
        if replicas and len(replicas) != len(self.shards()):
            raise ValueError("LOMS_REPLICA_DSNS needs one entry per shard (leave an entry empty for none)")
        for topic, urls in self.event_routes().items():
            if not topic or not all(url.startswith(("http://", "https://")) for url in urls):
                raise ValueError("LOMS_EVENT_SINKS is a comma-separated list of topic=http(s)://… pairs")
        return self
