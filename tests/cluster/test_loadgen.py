"""The load generator's shop scenario, run headless against the dev server (as against `make run`): every step
of a shopper's visit is exercised and none fails.

Locust runs until its stats file shows every step, however long that takes on a busy machine (bounded), and
is then stopped: the test asserts what the run did, never that it fit in a time limit.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from functions import table
from tests.cluster.conftest import ROOT
from tests.polling import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is not installed"),
]

STEPS = {"list_products", "get_product", "add_item", "list_cart", "checkout", "pay_order"}


def stats(path: Path) -> dict[str, dict[str, str]]:
    """The per-step rows of Locust's stats CSV (rewritten each second while it runs), {} before the first."""
    try:
        with path.open() as f:
            return {r["Name"]: r for r in csv.DictReader(f) if r["Name"] != "Aggregated"}
    except (FileNotFoundError, csv.Error, KeyError):
        return {}


def every_step_ran(path: Path) -> bool:
    rows = stats(path)
    return set(rows) >= STEPS and all(int(rows[s]["Request Count"]) > 0 for s in STEPS)


def test_the_shop_scenario_runs_without_failures(shop: dict[str, str], tmp_path: Path) -> None:
    # the test shop listens on the contract's ports shifted by one offset; the scenario is told which
    offset = urlsplit(shop["cart"]).port - table.SERVICES["cart"].port  # type: ignore[operator]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SHOP_TARGET": "local",
        "SHOP_WAIT_MAX_SECONDS": "0.05",
        "SHOP_PORT_OFFSET": str(offset),
    }
    argv = [sys.executable, "-m", "locust", "-f", "bench/loadgen/locustfile.py", "--headless"]
    # the run time is only the outer bound: the test stops Locust once every step has run
    argv += ["-u", "4", "-r", "4", "-t", "600s", "--stop-timeout", "10", "--csv", str(tmp_path / "run")]
    argv += ["--only-summary"]
    log = (tmp_path / "locust.log").open("w+")
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: every_step_ran(tmp_path / "run_stats.csv") or process.poll() is not None,
            timeout=300,
            interval=0.2,
            what="every step of the scenario in Locust's stats",
        )
        assert process.poll() is None, "Locust stopped before every step ran"
        process.send_signal(signal.SIGTERM)  # Locust stops its users and writes its final stats
        returncode = process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    log.seek(0)
    output = log.read()
    assert returncode == 0, output[-3000:]
    rows = stats(tmp_path / "run_stats.csv")
    assert set(rows) >= STEPS, sorted(rows)
    for name in STEPS:
        assert int(rows[name]["Request Count"]) > 0, name
        assert int(rows[name]["Failure Count"]) == 0, (name, output[-2000:])
