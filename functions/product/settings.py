"""The product service's configuration: the only reader of the environment for this service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProductSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCT_")

    api_keys: str = "testToken"  # comma-separated accepted X-API-KEY values
    generated_count: int = Field(10_000, ge=0, le=100_000_000)  # 1_000_000 for a million-SKU catalogue
    latency_ms: int = Field(0, ge=0)
    latency_jitter_ms: int = Field(0, ge=0)
    rate_limit_rps: float = Field(0, ge=0)  # 0: no server-side limit
    rate_limit_burst: int = Field(10, ge=1)

    def keys(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())
