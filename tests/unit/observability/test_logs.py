"""Structured logs: JSON lines on stdout carrying the current span's ids and the request's key ids, at the
configured level, and never more than the fixed fields (no bodies, no headers, no extras)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared_lib.observability import logs, settings, tracing

log = logging.getLogger("tests.observability")


@pytest.fixture
def lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[dict[str, object]]]:
    monkeypatch.setenv("SHOP_LOG_LEVEL", "INFO")
    settings.reset()
    logs.configure(force=True)
    captured: list[dict[str, object]] = []
    yield captured
    logs.reset()


def read(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_a_line_inside_a_span_carries_its_trace_and_span_ids(
    lines: list[dict[str, object]], spans: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    with logs.request_context("cart", "list_cart"), tracing.span("list_cart"):
        logs.bind(user_id=31337, sku=1076963, password="never")
        log.warning("cart of user %s holds an unknown sku", 31337)
    (span,) = spans.get_finished_spans()
    (line,) = read(capsys)
    assert line["trace_id"] == f"{span.context.trace_id:032x}"
    assert line["span_id"] == f"{span.context.span_id:016x}"
    assert (line["service"], line["function"], line["level"]) == ("cart", "list_cart", "warning")
    assert (line["user_id"], line["sku"]) == (31337, 1076963)
    assert line["message"] == "cart of user 31337 holds an unknown sku"
    assert str(line["timestamp"]).endswith("Z")
    assert set(line) <= {
        "timestamp",
        "level",
        "service",
        "function",
        "logger",
        "message",
        "trace_id",
        "span_id",
        "user_id",
        "order_id",
        "sku",
        "error",
    }


def test_outside_a_span_there_are_no_trace_ids_and_extras_are_never_written(
    lines: list[dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    log.info("started", extra={"authorization": "Bearer secret", "body": "{...}"})
    (line,) = read(capsys)
    assert "trace_id" not in line and "authorization" not in line and "body" not in line
    assert "secret" not in json.dumps(line)


def test_the_level_comes_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHOP_LOG_LEVEL", "WARNING")
    settings.reset()
    logs.configure(force=True)
    try:
        log.info("quiet")
        log.error("loud")
        assert [line["message"] for line in read(capsys)] == ["loud"]
    finally:
        monkeypatch.delenv("SHOP_LOG_LEVEL")
        settings.reset()
        logs.reset()


def test_a_traceback_is_one_field_of_one_line(
    lines: list[dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        raise RuntimeError("bug")
    except RuntimeError:
        log.exception("unhandled error")
    (line,) = read(capsys)
    assert "RuntimeError: bug" in str(line["error"])
