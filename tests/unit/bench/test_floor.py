"""bench.floor: how long a served process tree waited for a CPU (what explains a throughput drop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from bench.cpu import Window
from bench.floor import cpu_wait_share, waited_for_cpu
from tests.polling import wait_for

# a parent that only waits, and three children that burn CPU on one and the same CPU: two of them are always
# runnable and waiting for it, whatever else the machine runs
CROWDED_CHILDREN = """
import os, subprocess, sys
cpu = min(os.sched_getaffinity(0))
burn = f"import os; os.sched_setaffinity(0, {{{cpu}}})\\nwhile True: pass"
children = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(3)]
for child in children:
    child.wait()
"""


def test_the_wait_for_a_cpu_of_a_crowded_tree_grows_and_counts_its_children() -> None:
    parent = subprocess.Popen([sys.executable, "-c", CROWDED_CHILDREN], start_new_session=True)
    try:
        first = waited_for_cpu(parent.pid)
        assert wait_for(
            lambda: waited_for_cpu(parent.pid) >= first + 0.5,
            what="three processes sharing one CPU waiting for it",
        )
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_a_process_that_is_gone_waited_for_nothing() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert waited_for_cpu(process.pid) == 0.0


def test_the_share_is_the_wait_over_the_windows_wall_time() -> None:
    window = Window(requests=10, errors=0, seconds=4.0, cpu={}, extra={"waited for a CPU": 3.0})
    assert cpu_wait_share(window) == 0.75
    assert cpu_wait_share(Window(requests=10, errors=0, seconds=4.0, cpu={})) == 0.0
