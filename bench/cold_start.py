"""Cold start: process start → first 200, for a function of the shop and for the bare floor, in the same run.

`python -m bench.cold_start`. Alternating for --runs rounds: the bare functions-framework
target (bench/bare.py served by bench.floor), `get_product` as its container starts it (`python -m
functions.entrypoint`), and `get_product` through functions-framework's own command (`python -m
functions_framework`, the way earlier figures were taken). Each start is timed from Popen to the first 200 and
its process tree's CPU seconds up to that answer are read from /proc (the CPU figure hardly moves with the
machine's load; the wall time does).
Medians, and each ratio to the bare start of the same round. The shop's modules are compiled to bytecode
first, as the image does (`compileall` in the Dockerfile).
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
from bench.common import free_port, report
from bench.cpu import median_ratio, tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("/product/1076963", {"X-API-KEY": "testToken"})


def commands(port: int) -> dict[str, tuple[list[str], str, dict[str, str]]]:
    """variant → (argv, path, headers)."""
    return {
        "bare": (floor.bare_command(port), "/", {}),
        "get_product (entrypoint)": (floor.function_command("get_product", port), *PRODUCT),
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


def one_start(variant: str) -> tuple[float, float]:
    """(seconds from process start to the first 200, CPU seconds of its process tree by then)."""
    port = free_port()
    command, path, headers = commands(port)[variant]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="rounds, each starting every variant once")
    args = parser.parse_args()
    compile_all = [sys.executable, "-m", "compileall", "-q", "functions", "shared_lib", "bench"]
    subprocess.run(compile_all, cwd=ROOT, check=True)
    variants = list(commands(0))
    load_before = os.getloadavg()[0]
    for variant in variants:
        one_start(variant)  # the file cache warm
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for round_number in range(args.runs):
        order = variants if round_number % 2 == 0 else variants[::-1]
        for variant in order:
            seconds, cpu_seconds = one_start(variant)
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
    # the wall figures swing with what else runs on the machine; the CPU figures hardly do
    figures["load average (1 min) before–after"] = f"{load_before:.1f}–{os.getloadavg()[0]:.1f}"
    figures["targets"] = "≤ 1.3× bare, median ≤ 300 ms"
    report("cold start: process start -> first 200, vs the bare floor", figures)


if __name__ == "__main__":
    main()
