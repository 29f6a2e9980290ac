"""Cold start of one function process: from process start to its first 200, as Knative would see it.

Runs `functions-framework --target get_product` several times and prints min / median / max. Target: at
most 400 ms. The shop's own modules are compiled to bytecode first, as the image does (`compileall` in the
Dockerfile): otherwise, where PYTHONDONTWRITEBYTECODE is set (the image sets it; so do some shells), every
start would compile them from source again, which no container does.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, report  # noqa: E402


def one_start(target: str, path: str, headers: dict[str, str]) -> float:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        target,
        "--source",
        f"functions/{service_of(target)}/main.py",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        while True:
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError("the function process exited") from None
                time.sleep(0.005)
    finally:
        process.terminate()
        process.wait(5)


def service_of(target: str) -> str:
    from functions.table import BY_NAME

    return BY_NAME[target].service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    compile_all = [sys.executable, "-m", "compileall", "-q", "functions", "shared_lib"]
    subprocess.run(compile_all, cwd=ROOT, check=True)
    one_start("get_product", "/product/1076963", {"X-API-KEY": "testToken"})  # warm the file cache
    samples = [
        one_start("get_product", "/product/1076963", {"X-API-KEY": "testToken"}) for _ in range(args.runs)
    ]
    report(
        "cold start: get_product process start -> first 200",
        {
            "min ms": min(samples) * 1000,
            "median ms": statistics.median(samples) * 1000,
            "max ms": max(samples) * 1000,
            "target ms": 400,
            "median / target": statistics.median(samples) * 1000 / 400,
        },
    )


if __name__ == "__main__":
    main()
