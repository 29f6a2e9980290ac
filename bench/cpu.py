"""CPU time per request, read from /proc, and the alternation every benchmark runs: bare, shop, bare, shop …

The judged figure of a benchmark is the CPU time (user + system, from /proc/<pid>/stat) that each serving
process spent during a load window, divided by the requests completed in it. A "process" is a process tree:
a gunicorn arbiter and its workers, PostgreSQL's postmaster and its backends, Memcached, a relay. The tree is
read at the window's start and end (one scan of /proc each); processes that exited inside the window are not
counted (nothing the benchmarks run exits while loaded). Throughput on this shared 2-core machine swings with
whatever else runs; CPU per request hardly does.

`alternate` runs the variants in turn for several rounds, the order reversed every other round (bare, shop;
shop, bare; …) so that a drift of the machine's speed lands on both alike, and `summarise` reports medians
and, for each variant, the ratio to the floor: the median over rounds of (variant / floor of that round).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    """pid → (parent pid, user + system CPU seconds) of every live process."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        # after the command's ")": state, ppid, …; utime and stime are the 14th and 15th fields of the line
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    return table


def _tree(root: int, table: Mapping[int, tuple[int, float]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _cpu) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and all its descendants (live ones)."""
    table = _processes()
    return sum(table[pid][1] for pid in _tree(root, table))


def tree_run_seconds(root: int) -> float:
    """Seconds a process and its descendants ran on a CPU, from the scheduler's nanosecond clock summed over
    their live threads (/proc/<pid>/task/<tid>/schedstat): finer than tree_cpu_seconds' clock ticks (10 ms
    steps here); a thread that already exited is not counted (a cold start's servers keep theirs)."""
    nanoseconds = 0
    for pid in _tree(root, _processes()):
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                nanoseconds += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except OSError:  # exited while we looked
            continue
    return nanoseconds / 1e9


def cpu_of(roots: Mapping[str, int]) -> dict[str, float]:
    """name → CPU seconds of the tree rooted at that pid, all read from one scan of /proc."""
    table = _processes()
    return {name: sum(table[pid][1] for pid in _tree(root, table)) for name, root in roots.items()}


@dataclass(frozen=True)
class Window:
    """One load window of one variant: requests completed, wall seconds, CPU seconds per process tree."""

    requests: int
    errors: int
    seconds: float
    cpu: dict[str, float]
    extra: dict[str, float] = field(default_factory=dict)  # e.g. events relayed in the window

    def per_request_us(self, process: str) -> float:
        return self.cpu[process] / max(self.requests, 1) * 1e6

    def total_us(self) -> float:
        return sum(self.cpu.values()) / max(self.requests, 1) * 1e6


@dataclass(frozen=True)
class Loaded:
    """What a load generator reports: requests completed (any status), those that failed, wall seconds."""

    requests: int
    errors: int
    seconds: float


def measure(
    processes: Mapping[str, int],
    load: Callable[[], Loaded],
    settle: Callable[[], None] | None = None,
    extra: Callable[[], dict[str, float]] | None = None,
) -> Window:
    """CPU of each process tree across one load window. `settle` runs after the load and before the second
    reading, for work the requests leave behind (a relay publishing their events, an exporter sending their
    spans); `extra` is read before and after too (counters that grow with the window, e.g. events relayed)."""
    extra_before = extra() if extra else {}
    before = cpu_of(processes)
    loaded = load()
    if settle is not None:
        settle()
    after = cpu_of(processes)
    extra_after = extra() if extra else {}
    return Window(
        requests=loaded.requests,
        errors=loaded.errors,
        seconds=loaded.seconds,
        cpu={name: after[name] - before[name] for name in processes},
        extra={key: extra_after[key] - extra_before[key] for key in extra_after},
    )


def alternate(
    variants: Mapping[str, Callable[[], Window]],
    rounds: int,
    describe: Callable[[str, Window], str] | None = None,
) -> dict[str, list[Window]]:
    """Every variant once per round, in order on even rounds and reversed on odd ones; prints each window."""
    results: dict[str, list[Window]] = {name: [] for name in variants}
    names = list(variants)
    for round_number in range(rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            window = variants[name]()
            results[name].append(window)
            shown = describe(name, window) if describe else default_line(window)
            print(f"round {round_number + 1}/{rounds} {name:<12} {shown}", flush=True)
    return results


def default_line(window: Window) -> str:
    per_process = ", ".join(f"{p} {window.per_request_us(p):,.0f}" for p in window.cpu)
    return (
        f"{window.requests / window.seconds:,.0f} req/s, {window.errors} errors;"
        f" CPU µs/request: {per_process}"
    )


def median_ratio(values: Sequence[float], floors: Sequence[float]) -> float:
    """Median over rounds of value / floor of the same round."""
    return statistics.median(v / f for v, f in zip(values, floors, strict=True) if f > 0)


def summarise(
    results: Mapping[str, list[Window]],
    floor: str,
    compared: str = "function",
) -> dict[str, float | int | str]:
    """Flat figures for bench.common.report: per variant and process the median CPU µs per request, the
    median throughput and errors; per variant the ratio of its `compared` process (and of all its processes
    together) to the floor's `compared` process, paired round by round."""
    figures: dict[str, float | int | str] = {"rounds": len(results[floor])}
    floor_windows = results[floor]
    floor_compared = [w.per_request_us(compared) for w in floor_windows]
    for name, windows in results.items():
        figures[f"{name}: requests/s (median)"] = statistics.median(w.requests / w.seconds for w in windows)
        figures[f"{name}: errors"] = sum(w.errors for w in windows)
        for process in windows[0].cpu:
            figures[f"{name}: {process} CPU µs/request"] = statistics.median(
                w.per_request_us(process) for w in windows
            )
        figures[f"{name}: all processes CPU µs/request"] = statistics.median(w.total_us() for w in windows)
        if name != floor:
            figures[f"{name}: {compared} / floor"] = median_ratio(
                [w.per_request_us(compared) for w in windows], floor_compared
            )
            figures[f"{name}: all processes / floor {compared}"] = median_ratio(
                [w.total_us() for w in windows], floor_compared
            )
    return figures
