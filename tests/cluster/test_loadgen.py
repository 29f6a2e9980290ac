"""The load generator's shop scenario, run headless for a few seconds against the dev server (as against
`make run`): every step of a shopper's visit is exercised and none fails."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is not installed"),
]

STEPS = {"list_products", "get_product", "add_item", "list_cart", "checkout", "pay_order"}


def test_the_shop_scenario_runs_without_failures(shop: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHOP_TARGET": "local", "SHOP_WAIT_MAX_SECONDS": "0.05"}
    argv = [sys.executable, "-m", "locust", "-f", "bench/loadgen/locustfile.py", "--headless"]
    argv += [
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "5s",
        "--stop-timeout",
        "5",
        "--csv",
        str(tmp_path / "run"),
        "--only-summary",
    ]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {r["Name"]: r for r in csv.DictReader(f) if r["Name"] != "Aggregated"}
    assert set(rows) >= STEPS, sorted(rows)
    for name in STEPS:
        assert int(rows[name]["Request Count"]) > 0, name
        assert int(rows[name]["Failure Count"]) == 0, (name, result.stderr[-2000:])
