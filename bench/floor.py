"""Serving what the CPU benchmarks compare: one function of the shop as its container serves it, and the bare
floor (bench/bare.py) served the same way.

The shop's function: `python -m functions.entrypoint --target NAME` (the image's ENTRYPOINT: gunicorn's
gthread worker, WEB_CONCURRENCY workers, GUNICORN_THREADS threads, keep-alive 30 s). The floor:
`python -m bench.floor --port P --workers W --threads T`, gunicorn with the entrypoint's settings around
functions-framework's app of `bare` and nothing else (no observing wrapper, no health routes, no JSON error
pages: the worker's error mixin only acts on refused requests, so plain gthread is the same server on the
path measured). It imports only gunicorn and functions-framework, so its cold start is the floor's too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import free_port, scratch_dir

ROOT = Path(__file__).resolve().parent.parent
BARE = Path(__file__).with_name("bare.py")
WORKERS = 1  # the container's defaults (functions/server_settings.py)
THREADS = 16


def serve(host: str, port: int, workers: int, threads: int) -> None:
    import functions_framework
    import gunicorn.app.base

    app = functions_framework.create_app(target="bare", source=str(BARE))

    class Server(gunicorn.app.base.BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread",
                "limit_request_line": 0,
                "graceful_timeout": 5,
                "timeout": 30,
                "keepalive": 30,
                "loglevel": "warning",
                "errorlog": "-",
                "proc_name": "fn-bare",
            }
            if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
                options["worker_tmp_dir"] = "/dev/shm"
            if "control_socket_disable" in self.cfg.settings:
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    Server().run()


@dataclass
class Served:
    """A server process the benchmark started; `pid` roots its process tree (arbiter and workers)."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def workers(self) -> list[int]:
        """The gunicorn workers' pids (the arbiter's children)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def function_command(target: str, port: int, workers: int = WORKERS, threads: int = THREADS) -> list[str]:
    return [
        sys.executable,
        "-m",
        "functions.entrypoint",
        "--target",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--log-level",
        "warning",
    ]


def bare_command(port: int, workers: int = WORKERS, threads: int = THREADS) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.floor",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
    ]


def spawn(name: str, command: list[str], environment: Mapping[str, str], port: int) -> Served:
    log = (scratch_dir("shop-bench-serve-") / f"{name.replace('/', '-')}.log").open("ab")
    env = {**os.environ, **environment, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    return Served(name, port, process)


def wait_ready(
    served: Served, path: str, headers: Mapping[str, str] | None = None, timeout: float = 60
) -> None:
    """Until `path` answers 200 (the process dying or `timeout` passing is an error)."""
    request = urllib.request.Request(f"http://127.0.0.1:{served.port}{path}", headers=dict(headers or {}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if served.process.poll() is not None:
            raise RuntimeError(f"{served.name} exited with {served.process.returncode} before answering")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{served.name} did not answer {path} within {timeout} s")
        time.sleep(0.005)


@contextlib.contextmanager
def function(
    target: str,
    environment: Mapping[str, str],
    workers: int = WORKERS,
    threads: int = THREADS,
    name: str | None = None,
) -> Iterator[Served]:
    """One function of the shop served as its container serves it, on a free port, ready (GET /readyz)."""
    port = free_port()
    served = spawn(name or target, function_command(target, port, workers, threads), environment, port)
    try:
        wait_ready(served, "/readyz")
        yield served
    finally:
        served.stop()


@contextlib.contextmanager
def bare(workers: int = WORKERS, threads: int = THREADS) -> Iterator[Served]:
    """The floor, served the same way, on a free port, ready."""
    port = free_port()
    served = spawn("bare", bare_command(port, workers, threads), {}, port)
    try:
        wait_ready(served, "/")
        yield served
    finally:
        served.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the bare floor target (bench/bare.py)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args()
    serve(args.host, args.port, args.workers, args.threads)


if __name__ == "__main__":
    main()
