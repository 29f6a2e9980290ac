"""Cold start: process start → first 200, for a function of the shop and for the bare floor, in the same run.

`python -m bench.cold_start`. Alternating for --runs rounds: the bare functions-framework
target (bench/bare.py served by bench.floor), `get_product` as its container starts it (`python -m
functions.entrypoint`), and `get_product` through functions-framework's own command (`python -m
functions_framework`, the way earlier figures were taken). Each start is timed from Popen to the first 200 and
its process tree's CPU seconds up to that answer are read from /proc (the CPU figure hardly moves with the
machine's load; the wall time does).
Medians, and each ratio to the bare start of the same round. The shop's modules are compiled to bytecode
first, as the image does (`compileall` in the Dockerfile).
`--baseline COMMIT` adds `get_product` as the container starts it at another commit (exported with
`git archive` to a scratch directory, compiled likewise), in the same rounds: a paired before/after, with
the ratio of the tree's start to the baseline's, round by round.
Targets (issue 14): at most 1.3× the bare target's cold start, and a median of at most 300 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench import floor
from bench.common import free_port, report, scratch_dir
from bench.cpu import median_ratio, tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("/product/1076963", {"X-API-KEY": "testToken"})


ENTRYPOINT = "get_product (entrypoint)"
COMPILE = [sys.executable, "-m", "compileall", "-q", "functions", "shared_lib", "bench"]


def commands(port: int) -> dict[str, tuple[list[str], str, dict[str, str]]]:
    """variant → (argv, path, headers)."""
    return {
        "bare": (floor.bare_command(port), "/", {}),
        ENTRYPOINT: (floor.function_command("get_product", port), *PRODUCT),
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


def export(commit: str) -> Path:
    """The tree of `commit` in a scratch directory, compiled to bytecode."""
    directory = scratch_dir(f"cold-start-{commit}-")
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    subprocess.run(COMPILE, cwd=directory, check=True)
    return directory


def one_start(variant: str, root: Path = ROOT) -> tuple[float, float]:
    """(seconds from process start to the first 200, CPU seconds of its process tree by then), the variant
    started from the tree at `root`."""
    port = free_port()
    command, path, headers = commands(port)[variant]
    env = {**os.environ, "PYTHONPATH": str(root)}
    if root != ROOT and "--worker-class" in command:
        # a baseline may predate the option: the worker class goes by the environment instead (a tree from
        # before SHOP_WORKER_CLASS serves gthread only)
        at = command.index("--worker-class")
        env["SHOP_WORKER_CLASS"] = command[at + 1]
        command = command[:at] + command[at + 2 :]
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - started, tree_cpu_seconds(process.pid)
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"{variant}: the process exited") from None
                time.sleep(0.005)
        raise RuntimeError(f"{variant}: no 200 within 60 s")
    finally:
        process.terminate()
        process.wait(10)


def commands_variant(variant: str) -> str:
    """The variant of `commands` that `variant` starts (a baseline starts the entrypoint's command)."""
    return ENTRYPOINT if variant.startswith(f"{ENTRYPOINT} at ") else variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="rounds, each starting every variant once")
    parser.add_argument("--baseline", metavar="COMMIT", help="also start get_product's entrypoint at COMMIT")
    args = parser.parse_args()
    subprocess.run(COMPILE, cwd=ROOT, check=True)
    roots = {v: ROOT for v in commands(0)}
    baseline = f"{ENTRYPOINT} at {args.baseline}"
    if args.baseline:
        roots[baseline] = export(args.baseline)
    variants = list(roots)
    load_before = os.getloadavg()[0]
    for variant in variants:
        one_start(commands_variant(variant), roots[variant])  # the file cache warm
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for round_number in range(args.runs):
        order = variants if round_number % 2 == 0 else variants[::-1]
        for variant in order:
            seconds, cpu_seconds = one_start(commands_variant(variant), roots[variant])
            wall[variant].append(seconds * 1000)
            cpu[variant].append(cpu_seconds * 1000)
        shown = "; ".join(f"{v} {wall[v][-1]:,.0f} ms (CPU {cpu[v][-1]:,.0f} ms)" for v in variants)
        print(f"round {round_number + 1}/{args.runs}: {shown}", flush=True)
    figures: dict[str, float | int | str] = {"rounds": args.runs}
    for variant in variants:
        figures[f"{variant}: median ms"] = statistics.median(wall[variant])
        figures[f"{variant}: min–max ms"] = f"{min(wall[variant]):,.0f}–{max(wall[variant]):,.0f}"
        figures[f"{variant}: CPU ms to the first 200"] = statistics.median(cpu[variant])
        if variant != "bare":
            figures[f"{variant}: / bare (wall)"] = median_ratio(wall[variant], wall["bare"])
            figures[f"{variant}: / bare (CPU)"] = median_ratio(cpu[variant], cpu["bare"])
    if args.baseline:
        figures[f"{ENTRYPOINT}: / at {args.baseline} (wall)"] = median_ratio(wall[ENTRYPOINT], wall[baseline])
        figures[f"{ENTRYPOINT}: / at {args.baseline} (CPU)"] = median_ratio(cpu[ENTRYPOINT], cpu[baseline])
    # the wall figures swing with what else runs on the machine; the CPU figures hardly do
    figures["load average (1 min) before–after"] = f"{load_before:.1f}–{os.getloadavg()[0]:.1f}"
    figures["targets"] = "≤ 1.3× bare, median ≤ 300 ms"
    report("cold start: process start -> first 200, vs the bare floor", figures)


if __name__ == "__main__":
    main()
