"""The observability configuration of every function: the only reader of the environment in shared_lib.

Standard variable names where a standard exists (OTEL_*, AWS_XRAY_DAEMON_ADDRESS, PROMETHEUS_MULTIPROC_DIR),
`SHOP_*` otherwise. Nothing here opens a connection or starts a thread.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ObservabilitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore")

    # SHOP_OBSERVABILITY=off turns every metric, span and structured log off (the baseline of the overhead
    # benchmark); on, metrics are always recorded and spans only where a trace exporter is configured
    observability: bool = True
    # service.name of the traces and `service` of the logs when the process serves no function of the table
    # (the dev server's relay, a local event source); a function's own service wins otherwise
    service_name: str = Field("", validation_alias=AliasChoices("SHOP_SERVICE_NAME", "OTEL_SERVICE_NAME"))

    # auto: OTLP when an OTLP endpoint is set, else no tracing; xray: the X-Ray daemon; off: never
    tracing: Literal["auto", "otlp", "xray", "off"] = "auto"
    otlp_endpoint: str = Field(
        "", validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )  # base URL: /v1/traces added
    otlp_traces_endpoint: str = Field("", validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")  # full URL
    traces_exporter: str = Field("otlp", validation_alias="OTEL_TRACES_EXPORTER")  # "none" turns OTLP off
    trace_sample_ratio: float = Field(1.0, ge=0.0, le=1.0)  # for traces that start here (parents decide)
    xray_daemon_address: str = Field("127.0.0.1:2000", validation_alias="AWS_XRAY_DAEMON_ADDRESS")

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # a warning repeated (same logger and template) is written at most once per this many seconds (0: always)
    log_repeat_seconds: float = Field(10.0, ge=0.0)

    # /debug/profile answers only with `Authorization: Bearer <token>`; empty: the endpoint does not exist
    profiling_token: SecretStr = SecretStr("")
    profiling_max_seconds: int = Field(60, ge=1, le=600)

    # where prometheus-client keeps the per-process metric files when several processes serve one function
    prometheus_multiproc_dir: str = Field(
        "", validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
    )

    def otlp_url(self) -> str:
        """Where spans go over OTLP/HTTP, or "" when OTLP is not configured."""
        if self.traces_exporter.strip().lower() == "none":
            return ""
        if self.otlp_traces_endpoint.strip():
            return self.otlp_traces_endpoint.strip()
        base = self.otlp_endpoint.strip().rstrip("/")
        if not base and self.tracing == "otlp":
            base = "http://127.0.0.1:4318"  # the collector's default port, asked for explicitly
        return f"{base}/v1/traces" if base else ""

    def trace_backend(self) -> Literal["otlp", "xray", "off"]:
        if not self.observability or self.tracing == "off":
            return "off"
        if self.tracing == "xray":
            return "xray"
        return "otlp" if self.otlp_url() else "off"


@functools.cache
def settings() -> ObservabilitySettings:
    return ObservabilitySettings()


def reset() -> None:
    """Read the environment again on next use (tests)."""
    settings.cache_clear()
