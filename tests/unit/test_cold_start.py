"""What a function's cold start does and does not do (issue 14), checked by what a fresh process imported and
how it set its garbage collector, never by time: bench.cold_start measures the time.

- A function answers its first request without importing what that request does not use: trace exporters
  when no tracing is configured, drivers it never touches, the docs' YAML parser, the profiler's ctypes.
  Each check has its counterpart (configured, or asked for, the module is imported), so an absence means a
  deferral works, not that nothing would ever import the module.
- The container's command starts without the cyclic garbage collector and without pydantic's plugin lookup;
  a worker builds its app that way, then freezes what it built and collects again.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from functions import entrypoint
from shared_lib.devtools.ports import free_port

# what get_product's first answer must not import: it neither traces (no exporter configured), nor touches
# PostgreSQL, Kafka or Memcached, nor serves its docs or a profile
NOT_FOR_GET_PRODUCT = (
    "opentelemetry",
    "aws_xray_sdk",
    "kafka",
    "pg8000",
    "pymemcache",
    "yaml",
    "ctypes",
    # (not "subprocess": the profiler imports it only for a profile asked for, but pydantic-settings' import
    # brings it in through asyncio anyway)
)
TRACING_ENV = (
    "SHOP_TRACING",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "PYDANTIC_DISABLE_PLUGINS",
)


def run_python(code: str, **env: str) -> dict[str, object]:
    """Run `code` in a fresh interpreter (the shop's root on its path, no tracing configured unless `env`
    says so); what it printed last, as JSON."""
    clean = {k: v for k, v in os.environ.items() if k not in TRACING_ENV}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=entrypoint.ROOT,
        env={**clean, "PYTHONPATH": str(entrypoint.ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(answer, dict)
    return answer


FIRST_REQUESTS = """
    import json, sys
    from werkzeug.test import Client
    from functions import entrypoint

    client = Client(entrypoint.function_app("get_product"))
    statuses = [client.get(path, headers={"X-API-KEY": "testToken"}).status_code for path in PATHS]
    modules = {name.split(".")[0] for name in sys.modules} | set(sys.modules)
    print(json.dumps({"statuses": statuses, "imported": sorted(m for m in WATCHED if m in modules)}))
"""


def first_requests(paths: list[str], watched: tuple[str, ...], **env: str) -> dict[str, object]:
    code = f"PATHS = {paths!r}\nWATCHED = {watched!r}\n" + textwrap.dedent(FIRST_REQUESTS)
    return run_python(code, **env)


def test_get_products_first_answer_imports_no_exporter_driver_yaml_or_ctypes() -> None:
    answer = first_requests(["/product/1076963", "/healthz", "/metrics"], NOT_FOR_GET_PRODUCT)
    assert answer == {"statuses": [200, 200, 200], "imported": []}


def test_with_an_otlp_endpoint_configured_the_first_answer_imports_the_exporter() -> None:
    # nothing listens there, and no span is sampled: nothing is sent
    endpoint = f"http://127.0.0.1:{free_port()}"
    exporter = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    answer = first_requests(
        ["/product/1076963"],
        (exporter, "opentelemetry.sdk.trace"),
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        SHOP_TRACE_SAMPLE_RATIO="0",
    )
    assert answer == {"statuses": [200], "imported": [exporter, "opentelemetry.sdk.trace"]}


def test_the_docs_and_their_yaml_parser_come_with_the_first_docs_request() -> None:
    answer = first_requests(["/product/1076963", "/openapi.json", "/openapi.yaml"], ("yaml",))
    assert answer == {"statuses": [200, 200, 200], "imported": ["yaml"]}


STARTED = """
    import gc, json, os, runpy, sys
    sys.argv = ["entrypoint", "--help"]  # argparse answers and exits: after the imports, before serving
    try:
        runpy.run_module("functions.entrypoint", run_name=RUN_NAME, alter_sys=True)
    except SystemExit:
        pass
    print(json.dumps({"gc": gc.isenabled(), "plugins": os.environ.get("PYDANTIC_DISABLE_PLUGINS")}))
"""


def test_the_container_command_starts_without_the_collector_and_pydantic_plugin_lookup() -> None:
    answer = run_python('RUN_NAME = "__main__"\n' + textwrap.dedent(STARTED))
    assert answer == {"gc": False, "plugins": "__all__"}


def test_an_explicit_pydantic_plugin_setting_is_kept() -> None:
    answer = run_python('RUN_NAME = "__main__"\n' + textwrap.dedent(STARTED), PYDANTIC_DISABLE_PLUGINS="")
    assert answer == {"gc": False, "plugins": ""}


def test_importing_the_entrypoint_changes_neither_the_collector_nor_the_environment() -> None:
    answer = run_python('RUN_NAME = "functions.entrypoint"\n' + textwrap.dedent(STARTED))
    assert answer == {"gc": True, "plugins": None}


@pytest.fixture
def started_without_gc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process playing a container's worker; its collector as it was afterwards."""
    monkeypatch.setattr(entrypoint, "STARTED_WITHOUT_GC", True)
    yield
    gc.unfreeze()
    gc.enable()


@pytest.mark.usefixtures("started_without_gc")
def test_a_worker_builds_its_app_without_the_collector_then_freezes_what_it_built() -> None:
    entrypoint.post_fork(None, None)
    assert not gc.isenabled()
    app = entrypoint.function_app("get_product")
    entrypoint.post_worker_init(None)
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert not any(obj is app for obj in gc.get_objects())  # frozen: in no generation the collector scans


def test_imported_not_started_the_hooks_leave_the_collector_alone() -> None:
    assert entrypoint.STARTED_WITHOUT_GC is False
    frozen = gc.get_freeze_count()
    entrypoint.post_fork(None, None)
    assert gc.isenabled()
    entrypoint.post_worker_init(None)
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


@pytest.mark.parametrize(
    ("target", "first_user"),
    [
        ("create_order", "from shared_lib.events import HttpEventSender as First; First()"),
        (
            "notify_status",
            "from shared_lib.httpclient import HttpClient as First; First('http://127.0.0.1:9')",
        ),
    ],
)
def test_a_function_that_sends_nothing_over_http_imports_no_http_client_or_kafka(
    target: str, first_user: str
) -> None:
    """loms' functions write their events to the outbox (the relay sends them) and the notifier's default
    sink is the log: building their apps imports neither urllib3 nor kafka-python; the first HTTP event
    sender or client does import urllib3."""
    code = f"""
        import json, sys
        from functions import entrypoint

        entrypoint.function_app({target!r})
        before = sorted(m for m in ("urllib3", "kafka") if m in sys.modules)
        {first_user}
        print(json.dumps({{"before": before, "after": "urllib3" in sys.modules}}))
    """
    assert run_python(code) == {"before": [], "after": True}
