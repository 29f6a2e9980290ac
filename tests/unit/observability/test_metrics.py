"""Metric families: defined once in shared_lib, created lazily, rendered for /metrics, merged across worker
processes in multiprocess mode, and no-ops when observability is off."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared_lib.observability import metrics
from tests.unit.observability.conftest import sample, scrape

ROOT = Path(__file__).resolve().parents[3]


def families() -> list[metrics.Family]:
    """Every metric family shared_lib defines (each is a module attribute of metrics)."""
    return [value for value in vars(metrics).values() if isinstance(value, metrics.Family)]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_the_code_registers_nothing_and_imports_no_prometheus_client() -> None:
    result = run_python(
        """
        import sys
        import functions.entrypoint, functions.cart.main, functions.loms.main, shared_lib.eventsource
        assert "prometheus_client" not in sys.modules, "imported at import time"
        from shared_lib.observability import metrics
        assert metrics._registry is None
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_family_has_a_unique_name_and_small_label_sets() -> None:
    names = [f.name for f in families()]
    assert len(names) == len(set(names))
    for family in families():
        assert family.name.startswith("shop_")
        assert len(family.labelnames) <= 3, family.name
        assert not {"user_id", "order_id", "sku", "path"} & set(family.labelnames), family.name


def test_a_counted_series_shows_on_the_exposition_with_its_labels() -> None:
    # a label value no real query uses: background threads of other tests in this process count real ones
    before = sample("shop_db_queries_total", kind="select", outcome="unit-test")
    metrics.DB_QUERIES.labels("select", "unit-test").inc()
    metrics.DB_QUERIES.labels("select", "unit-test").inc(2)
    assert sample("shop_db_queries_total", kind="select", outcome="unit-test") == before + 3


def test_a_histogram_is_exposed_with_buckets_count_and_sum() -> None:
    metrics.CLIENT_DURATION.labels("unit-target", "200").observe(0.003)
    samples = scrape()
    assert (
        samples[
            (
                "shop_http_client_request_duration_seconds_count",
                (("status", "200"), ("target", "unit-target")),
            )
        ]
        >= 1
    )
    bucket = (
        "shop_http_client_request_duration_seconds_bucket",
        (("le", "0.005"), ("status", "200"), ("target", "unit-target")),
    )
    assert samples[bucket] >= 1


def test_scrape_callbacks_set_gauges_and_a_failing_one_does_not_break_the_scrape() -> None:
    def broken() -> None:
        raise RuntimeError("database down")

    def backlog() -> None:
        metrics.OUTBOX_BACKLOG.labels("7").set(42)

    metrics.on_scrape(broken)
    metrics.on_scrape(backlog)
    try:
        assert sample("shop_outbox_backlog", shard="7") == 42
    finally:
        metrics._on_scrape.remove(broken)
        metrics._on_scrape.remove(backlog)


def test_off_makes_every_family_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared_lib.observability import settings

    monkeypatch.setenv("SHOP_OBSERVABILITY", "off")
    settings.reset()
    assert metrics.RATELIMIT_WAIT.labels("never-created") is metrics.NOOP
    monkeypatch.delenv("SHOP_OBSERVABILITY")
    settings.reset()
    assert ("shop_ratelimit_wait_seconds_count", (("limiter", "never-created"),)) not in scrape()


WORKER = """
import os, sys
from shared_lib.observability import metrics
metrics.HTTP_REQUESTS.labels("get_product", "/product/{sku:id}", "200").inc(int(sys.argv[1]))
metrics.EVENTSOURCE_LAG.labels("orders").set(int(sys.argv[1]))
print(os.getpid())
"""


def test_multiprocess_mode_merges_the_workers_and_forgets_a_dead_workers_live_gauges(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    metrics.prepare_multiprocess_dir(str(directory))
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    pids = []
    for count in ("2", "5"):
        result = subprocess.run(
            [sys.executable, "-c", WORKER, count],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        pids.append(int(result.stdout))
    render = """
    from shared_lib.observability import metrics
    import sys
    if len(sys.argv) > 1:
        metrics.mark_process_dead(int(sys.argv[1]))
    print(metrics.render().decode())
    """
    merged = run_python(render, **env)
    assert merged.returncode == 0, merged.stderr
    text = merged.stdout
    assert (
        'shop_http_requests_total{function="get_product",route="/product/{sku:id}",status="200"} 7.0' in text
    )
    assert 'shop_eventsource_lag_records{topic="orders"} 7.0' in text  # livesum of the live workers
    after = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(render), str(pids[0])],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert 'shop_eventsource_lag_records{topic="orders"} 5.0' in after  # the dead worker's gauge is gone
    assert 'status="200"} 7.0' in after  # counters keep what dead workers counted
