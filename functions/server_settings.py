"""How a function process is served: the container's entry point and the dev server read their environment
here and nowhere else (each service's own configuration stays in functions/<service>/settings.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    # the container (functions.entrypoint): the names Knative and functions-framework use
    function_target: str = Field("", validation_alias="FUNCTION_TARGET")
    host: str = Field("0.0.0.0", validation_alias="HOST")
    port: int = Field(8080, validation_alias="PORT")
    workers: int = Field(1, ge=1, validation_alias="WEB_CONCURRENCY")
    threads: int = Field(16, ge=1, validation_alias="GUNICORN_THREADS")  # the most requests served at once
    # gunicorn's worker (functions.entrypoint.WORKER_CLASSES): gevent_pywsgi (gevent's own HTTP server, one
    # greenlet per connection: the lowest CPU per request measured), gevent (gunicorn's parser on greenlets)
    # or gthread (a poller thread and a pool of threads)
    worker_class: Literal["gevent", "gthread", "gevent_pywsgi"] = Field(
        "gevent_pywsgi", validation_alias="SHOP_WORKER_CLASS"
    )
    # the gevent worker's most open connections (idle keep-alive ones too; gthread's limit on them as well)
    worker_connections: int = Field(1000, ge=1, validation_alias="GUNICORN_WORKER_CONNECTIONS")
    graceful_timeout: int = Field(30, ge=0, validation_alias="GRACEFUL_TIMEOUT")
    log_level: str = Field("", validation_alias="GUNICORN_LOG_LEVEL")  # empty: each server's own default
    # the most request body any function takes, CloudEvent ones included (a 413 above it; 1 MiB as Kafka's
    # default record limit); the HTTP API's own 1 MiB (shared_lib.web.MAX_BODY_BYTES) holds besides
    max_body_bytes: int = Field(1024 * 1024, ge=1, validation_alias="MAX_REQUEST_BODY_BYTES")
    # OpenFaaS: its secrets are files in this directory; each is exported as the variable of its name (unless
    # that variable is set), so the services' settings read them as they do on Knative
    secrets_dir: Path | None = Field(None, validation_alias="SECRETS_DIR")
    # OpenFaaS's cron-connector calls a function at "/": the path "/" then stands for this one (the table's)
    root_path: str = Field("", validation_alias="FUNCTION_ROOT_PATH")

    # the dev server (make run)
    pg_port: int = Field(15432, validation_alias="SHOP_PG_PORT")
    kafka_port: int = Field(19092, validation_alias="SHOP_KAFKA_PORT")  # its KRaft controller: the next port
    memcached_port: int = Field(11311, validation_alias="SHOP_MEMCACHED_PORT")
    data: Path = Field(ROOT / ".local", validation_alias="SHOP_DATA")
    port_offset: int = Field(0, validation_alias="SHOP_PORT_OFFSET")
    embedded: bool = Field(False, validation_alias="SHOP_EMBEDDED")
