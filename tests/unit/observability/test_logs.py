"""Structured logs: JSON lines on stdout carrying the current span's ids and the request's key ids, at the
configured level, and never more than the fixed fields (no bodies, no headers, no extras)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared_lib.observability import logs, settings, tracing
from tests.unit.observability.conftest import sample

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


# --- repeated warnings (logs.RepeatFilter) -----------------------------------------------------------------


class Clock:
    """The filter's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warning(name: str, msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def decide(repeats: logs.RepeatFilter, record: logging.LogRecord) -> tuple[bool, int]:
    """(written, the `suppressed` count the line carries) for one record through the filter."""
    written = repeats.filter(record)
    return written, getattr(record, logs.SUPPRESSED, 0)


def test_a_repeated_warning_is_written_first_then_once_per_interval_with_the_count_held_back() -> None:
    clock = Clock()
    repeats = logs.RepeatFilter(10.0, clock)
    template = "memcached did not serve %s: %s"
    assert decide(repeats, warning("shared_lib.cache", template, "get", "down")) == (True, 0)
    # the same template with other arguments is the same warning: held back, counted
    for what in ("set", "get", "get_many"):
        assert decide(repeats, warning("shared_lib.cache", template, what, "down")) == (False, 0)
    clock.now += 9.999
    assert decide(repeats, warning("shared_lib.cache", template, "get", "down")) == (False, 0)
    assert repeats.held() == {("shared_lib.cache", template): 4}
    clock.now += 0.001  # the interval is over: the next one is written with the four held back
    assert decide(repeats, warning("shared_lib.cache", template, "get", "down")) == (True, 4)
    assert repeats.held() == {}
    assert decide(repeats, warning("shared_lib.cache", template, "get", "down")) == (False, 0)
    clock.now += 60.0  # long after: written, one held back since the last line
    assert decide(repeats, warning("shared_lib.cache", template, "get", "down")) == (True, 1)


def test_other_templates_other_loggers_errors_and_other_levels_are_never_held_back() -> None:
    clock = Clock()
    repeats = logs.RepeatFilter(10.0, clock)
    assert decide(repeats, warning("shared_lib.cache", "memcached is unavailable (%s: %s)", "get", "x"))[0]
    assert decide(repeats, warning("shared_lib.cache", "memcached did not serve %s: %s", "get", "x"))[0]
    assert decide(repeats, warning("shared_lib.web", "memcached did not serve %s: %s", "get", "x"))[0]
    for _ in range(3):
        assert decide(repeats, warning("shared_lib.web", "unhandled error", level=logging.ERROR)) == (True, 0)
        assert decide(repeats, warning("shared_lib.web", "served", level=logging.INFO)) == (True, 0)
        assert decide(repeats, warning("shared_lib.web", "crash", level=logging.CRITICAL)) == (True, 0)
    assert repeats.held() == {}


def test_an_interval_of_zero_holds_nothing_back() -> None:
    repeats = logs.RepeatFilter(0.0, Clock())
    for _ in range(5):
        assert decide(repeats, warning("shared_lib.cache", "memcached did not serve %s", "get")) == (True, 0)


def test_past_the_watched_pairs_a_new_one_is_written_and_a_quiet_one_forgotten() -> None:
    clock = Clock()
    repeats = logs.RepeatFilter(10.0, clock, max_watched=2)
    assert decide(repeats, warning("a", "first"))[0] and decide(repeats, warning("b", "second"))[0]
    assert decide(repeats, warning("b", "second")) == (False, 0)  # b holds one back
    # full: a third pair is written, not watched (so not held back either)
    assert decide(repeats, warning("c", "third")) == (True, 0)
    assert decide(repeats, warning("c", "third")) == (True, 0)
    clock.now += 10.0  # a's window ended with nothing held: forgotten for c; b keeps its count
    assert decide(repeats, warning("c", "third")) == (True, 0)
    assert decide(repeats, warning("c", "third")) == (False, 0)
    assert repeats.held() == {("b", "second"): 1, ("c", "third"): 1}
    assert decide(repeats, warning("b", "second")) == (True, 1)


def test_the_configured_handler_writes_the_count_in_its_line_and_the_metric_counts_every_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHOP_LOG_REPEAT_SECONDS", "30")
    settings.reset()
    logs.configure(force=True)
    try:
        repeats = logs.repeat_filter()
        assert repeats is not None and repeats.interval == 30.0
        clock = Clock()
        repeats.clock = clock
        name = "tests.observability.repeats"
        before = {
            o: sample("shop_log_warnings_total", logger=name, outcome=o) for o in ("written", "suppressed")
        }
        repeated = logging.getLogger(name)
        for attempt in range(7):
            repeated.warning("the dependency is down (attempt %d)", attempt)
        clock.now += 30.0
        repeated.warning("the dependency is down (attempt %d)", 7)
        lines = read(capsys)
        assert [line["message"] for line in lines] == [
            "the dependency is down (attempt 0)",
            "the dependency is down (attempt 7)",
        ]
        assert "suppressed" not in lines[0] and lines[1]["suppressed"] == 6
        after = {
            o: sample("shop_log_warnings_total", logger=name, outcome=o) for o in ("written", "suppressed")
        }
        assert (after["written"] - before["written"], after["suppressed"] - before["suppressed"]) == (2, 6)
    finally:
        monkeypatch.delenv("SHOP_LOG_REPEAT_SECONDS")
        settings.reset()
        logs.reset()


def test_a_plain_text_line_says_how_many_were_held_back() -> None:
    record = warning("shared_lib.cache", "memcached did not serve %s", "get")
    setattr(record, logs.SUPPRESSED, 3)
    assert (
        logs.TextFormatter()
        .format(record)
        .endswith("WARNING shared_lib.cache memcached did not serve get [3 like it suppressed]")
    )
