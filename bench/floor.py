"""Serving what the CPU benchmarks compare: one function of the shop as its container serves it, and the bare
floor (bench/bare.py) served the same way.

The shop's function: `python -m functions.entrypoint --target NAME` (the image's ENTRYPOINT: gunicorn's
worker of SHOP_WORKER_CLASS, gevent_pywsgi by default, WEB_CONCURRENCY workers, GUNICORN_THREADS requests at
once, keep-alive 30 s). The floor: `python -m bench.floor --port P --workers W --threads T --worker-class C`,
gunicorn with the entrypoint's settings around functions-framework's app of `bare` and nothing else (no
observing wrapper, no health routes, no JSON error pages, gunicorn's own worker class: the shop's worker
subclasses add only its request limit and its prompt stop on the path measured). It imports only gunicorn and
functions-framework (and gevent, under gevent), so its cold start is the floor's too.

Either can be served under any of the worker classes (`worker_class`: "gevent_pywsgi", "gevent" or
"gthread"), so a benchmark can show the floor and the shop under several servers side by side
(`add_server_option`, `side_by_side`; e.g. `python -m bench.get_order --servers gthread,gevent_pywsgi`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import free_port, scratch_dir
from bench.cpu import Window, default_line, median_ratio, summarise

ROOT = Path(__file__).resolve().parent.parent
BARE = Path(__file__).with_name("bare.py")
WORKERS = 1  # the container's defaults (functions/server_settings.py)
THREADS = 16
WORKER_CLASSES = ("gevent", "gthread", "gevent_pywsgi")  # functions.entrypoint.WORKER_CLASSES
# the floor can also be served by gunicorn's sync worker, for comparison (one request at a time per worker,
# no keep-alive: a connection per request); the shop then by bench.floor (see serve)
BARE_WORKER_CLASSES = (*WORKER_CLASSES, "sync")
DEFAULT_WORKER_CLASS = os.environ.get("SHOP_WORKER_CLASS") or "gevent_pywsgi"  # the container's default


def serve(
    host: str,
    port: int,
    workers: int,
    threads: int,
    worker_class: str = DEFAULT_WORKER_CLASS,
    target: str | None = None,
) -> None:
    """The floor under gunicorn's `worker_class`; with `target`, that function of the shop instead, built in
    the worker as the container builds it (functions.entrypoint.function_app) but served by gunicorn's own
    worker class: a way to measure the shop under a server the entrypoint does not offer (sync)."""
    import functions_framework
    import gunicorn.app.base

    app = None if target else functions_framework.create_app(target="bare", source=str(BARE))

    class Server(gunicorn.app.base.BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "threads": threads,
                "worker_class": worker_class,
                "limit_request_line": 0,
                "graceful_timeout": 5,
                "timeout": 30,
                "keepalive": 30,
                "loglevel": "warning",
                "errorlog": "-",
                "proc_name": f"fn-{target or 'bare'}",
            }
            if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
                options["worker_tmp_dir"] = "/dev/shm"
            if "control_socket_disable" in self.cfg.settings:
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            if target:  # in the worker, after gevent's workers patched the standard library
                from functions import entrypoint

                return entrypoint.function_app(target)
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


def function_command(
    target: str,
    port: int,
    workers: int = WORKERS,
    threads: int = THREADS,
    worker_class: str = DEFAULT_WORKER_CLASS,
) -> list[str]:
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
        "--worker-class",
        worker_class,
        "--log-level",
        "warning",
    ]


def bare_command(
    port: int, workers: int = WORKERS, threads: int = THREADS, worker_class: str = DEFAULT_WORKER_CLASS
) -> list[str]:
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
        "--worker-class",
        worker_class,
    ]


def spawn(
    name: str, command: list[str], environment: Mapping[str, str], port: int, tree: Path = ROOT
) -> Served:
    """`command` started from `tree` (its cwd, first on its path: another tree is a baseline's code)."""
    log = (scratch_dir("shop-bench-serve-") / f"{name.replace('/', '-')}.log").open("ab")
    env = {**os.environ, **environment, "PYTHONPATH": str(tree)}
    # Its own session: with the kernel's autogroup scheduling (sched_autogroup_enabled) a session is one
    # scheduling group, as a container is one cgroup. In the benchmark's session it would share one group's
    # CPU with the load generator's threads and whatever else that session runs, thread by thread: gevent's
    # one thread then gets one thread's share while gthread's 17 get more (README "Benchmarks").
    process = subprocess.Popen(
        command,
        cwd=tree,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
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
    worker_class: str = DEFAULT_WORKER_CLASS,
    tree: Path = ROOT,
) -> Iterator[Served]:
    """One function of the shop served as its container serves it, on a free port, ready (GET /readyz). Under
    a worker class the entrypoint does not offer (sync), by bench.floor (see serve). `tree`: whose code (a
    git worktree of an older commit serves a baseline)."""
    port = free_port()
    if worker_class in WORKER_CLASSES:
        command = function_command(target, port, workers, threads, worker_class)
    else:
        command = [*bare_command(port, workers, threads, worker_class), "--target", target]
    served = spawn(name or target, command, environment, port, tree)
    try:
        wait_ready(served, "/readyz")
        yield served
    finally:
        served.stop()


@contextlib.contextmanager
def bare(
    workers: int = WORKERS, threads: int = THREADS, worker_class: str = DEFAULT_WORKER_CLASS
) -> Iterator[Served]:
    """The floor, served the same way, on a free port, ready."""
    port = free_port()
    served = spawn(f"bare-{worker_class}", bare_command(port, workers, threads, worker_class), {}, port)
    try:
        wait_ready(served, "/")
        yield served
    finally:
        served.stop()


def waited_for_cpu(pid: int) -> float:
    """Seconds the process tree of `pid` (every thread of the gunicorn arbiter and its workers) has spent
    runnable but waiting for a CPU: the second field of each thread's /proc/<pid>/task/<tid>/schedstat.
    Read before and after a load window (measure's `extra`), divided by the window's wall time, it says how
    many of the server's threads wanted a CPU they did not get, on average: on a crowded machine a throughput
    drop with an unchanged CPU per request is made of this, not of the server blocking (threads that exited
    inside the window are not counted)."""
    waited = 0
    for one in (pid, *_children(pid)):
        try:
            tasks = os.listdir(f"/proc/{one}/task")
        except OSError:  # exited
            continue
        for task in tasks:
            try:
                waited += int(Path(f"/proc/{one}/task/{task}/schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return waited / 1e9


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_wait_share(window: Window, key: str = "waited for a CPU") -> float:
    """How many of the server's threads were waiting for a CPU, on average over a window (see
    waited_for_cpu): for a single-threaded server (gevent) the share of the window it wanted a CPU and had
    none; gthread's threads add up (one waiting half the window and another all of it: 1.5)."""
    return window.extra.get(key, 0.0) / window.seconds if window.seconds > 0 else 0.0


def cpu_wait_figures(results: Mapping[str, list[Window]]) -> dict[str, float | int | str]:
    """Per variant, the median over its windows of its server's threads waiting for a CPU (cpu_wait_share)."""
    import statistics

    return {
        f"{name}: threads waiting for a CPU, on average (median)": statistics.median(
            cpu_wait_share(w) for w in windows
        )
        for name, windows in results.items()
        if windows and "waited for a CPU" in windows[0].extra
    }


def window_line(window: Window) -> str:
    """bench.cpu's line for a window, with the server's wait for a CPU."""
    return f"{default_line(window)}; waiting for a CPU: {cpu_wait_share(window):.2f} threads on average"


# --- the floor and the shop under both servers, side by side ------------------------------------------


def add_server_option(parser: argparse.ArgumentParser) -> None:
    """--servers: the worker classes a benchmark serves the floor and the shop under (default: the shop's)."""
    parser.add_argument(
        "--servers",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=[DEFAULT_WORKER_CLASS],
        help=f"comma-separated worker classes of {', '.join(BARE_WORKER_CLASSES)} (e.g. gthread,gevent): "
        "the floor and the shop are served and measured under each, alternating, side by side (sync is "
        "not the entrypoint's: the shop is then served by bench.floor)",
    )


def check_servers(servers: Sequence[str], known: Sequence[str] = BARE_WORKER_CLASSES) -> None:
    unknown = [s for s in servers if s not in known]
    if unknown or not servers:
        raise SystemExit(f"--servers: choose among {', '.join(known)}, not {', '.join(unknown)}")


def variant_name(name: str, server: str, servers: Sequence[str]) -> str:
    """A variant's name: itself with one server, "<name> <server>" with several ("bare gevent")."""
    return name if len(servers) == 1 else f"{name} {server}"


def side_by_side(
    results: Mapping[str, list[Window]],
    servers: Sequence[str],
    names: Sequence[str],
    compared: str = "function",
) -> dict[str, float | int | str]:
    """bench.cpu.summarise's figures under each server, each variant against the floor of its own server,
    then each variant under the later servers against itself under the first (paired by round), and against
    the first server's floor: "get_order: gevent / gthread", "get_order gevent / bare gthread"."""
    if len(servers) == 1:
        return summarise(results, "bare", compared)
    figures: dict[str, float | int | str] = {}
    for server in servers:
        subset = {f"{name} {server}": results[f"{name} {server}"] for name in ["bare", *names]}
        figures.update(summarise(subset, f"bare {server}", compared))
    first = servers[0]
    floor_first = [w.per_request_us(compared) for w in results[f"bare {first}"]]
    for server in servers[1:]:
        for name in ["bare", *names]:
            here = [w.per_request_us(compared) for w in results[f"{name} {server}"]]
            there = [w.per_request_us(compared) for w in results[f"{name} {first}"]]
            figures[f"{name}: {compared} {server} / {first}"] = median_ratio(here, there)
            if name != "bare":
                figures[f"{name} {server}: {compared} / bare {first}"] = median_ratio(here, floor_first)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the bare floor target (bench/bare.py)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--worker-class", choices=BARE_WORKER_CLASSES, default=DEFAULT_WORKER_CLASS)
    parser.add_argument("--target", help="a function of the shop instead of the floor (see serve)")
    args = parser.parse_args()
    serve(args.host, args.port, args.workers, args.threads, args.worker_class, args.target)


if __name__ == "__main__":
    main()
