"""bench.cpu: the CPU of a whole process tree from /proc, the alternation of variants, the paired ratios."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bench.cpu import Loaded, Window, alternate, cpu_of, measure, summarise, tree_cpu_seconds
from tests.polling import wait_for

# a parent that only waits, and its child (then grandchild) that burns CPU until killed
BURNING_GRANDCHILD = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'while True: pass']).wait()"])
child.wait()
"""


def own_cpu(pid: int) -> float:
    from bench.cpu import TICKS

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def test_a_tree_counts_its_descendants_cpu_not_only_the_root() -> None:
    parent = subprocess.Popen([sys.executable, "-c", BURNING_GRANDCHILD], start_new_session=True)
    try:
        burnt = wait_for(lambda: tree_cpu_seconds(parent.pid) >= 0.3, what="the grandchild's CPU counted")
        assert burnt
        assert own_cpu(parent.pid) < tree_cpu_seconds(parent.pid) - 0.2  # the root alone is far less
        assert cpu_of({"tree": parent.pid})["tree"] >= 0.3
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the tree's own process group: the grandchild too
        parent.wait()


def test_a_process_that_is_gone_counts_nothing() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert tree_cpu_seconds(process.pid) == 0.0


def test_measure_reads_each_tree_around_the_load_and_the_extra_counters() -> None:
    counter = iter([10.0, 16.0])
    window = measure(
        {"me": 1},
        lambda: Loaded(requests=4, errors=0, seconds=1.0),
        extra=lambda: {"events": next(counter)},
    )
    assert window.requests == 4
    assert window.extra == {"events": 6.0}
    assert window.cpu["me"] >= 0.0


def window(cpu: float, requests: int = 1000) -> Window:
    return Window(requests=requests, errors=0, seconds=1.0, cpu={"function": cpu})


def test_alternate_reverses_the_order_every_other_round() -> None:
    calls: list[str] = []

    def variant(name: str) -> Window:
        calls.append(name)
        return window(0.5)

    results = alternate({"bare": lambda: variant("bare"), "shop": lambda: variant("shop")}, rounds=3)
    assert calls == ["bare", "shop", "shop", "bare", "bare", "shop"]
    assert [len(windows) for windows in results.values()] == [3, 3]


def test_the_ratio_to_the_floor_is_paired_round_by_round() -> None:
    # the machine slows down twofold in round 2: paired ratios stay 2.0; a ratio of medians would not
    results = {
        "bare": [window(0.5), window(1.0), window(0.5)],
        "shop": [window(1.0), window(2.0), window(1.0)],
    }
    figures = summarise(results, "bare")
    assert figures["shop: function / floor"] == 2.0
    assert figures["bare: function CPU µs/request"] == 500.0
    assert figures["shop: function CPU µs/request"] == 1000.0
