"""Small pieces the benchmarks share: free ports, scratch directories, percentiles, printing figures and
calling a WSGI app in process.

CPU time from /proc and the alternation of what is compared are bench/cpu.py's."""

from __future__ import annotations

import atexit
import io
import json
import resource
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_lib.devtools.kafka_server import topic_size
from shared_lib.devtools.ports import free_port

__all__ = ["free_port", "topic_size"]

RESULTS = Path(__file__).resolve().parent / "results"


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory (a server's data, logs), removed when the benchmark's process exits: a
    PostgreSQL data directory alone is ~300 MB, and benchmarks run again and again."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def report(title: str, figures: Mapping[str, float | int | str]) -> None:
    """Print the figures and keep them in bench/results/<title>.json for the README."""
    print(f"\n== {title}")
    for name, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"  {name:<40} {shown}")
    RESULTS.mkdir(exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")[:60]
    (RESULTS / f"{slug}.json").write_text(
        json.dumps({"title": title, **figures}, indent=2, ensure_ascii=False)
    )


def wsgi_get(app: Callable[..., object], path: str, label: str) -> list[str]:
    """GET `path` from a WSGI app in this process, as a server on 127.0.0.1:8080 would call it; the body read
    and closed. Its status line(s); RuntimeError unless 200 (`label` names what failed)."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8080",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    statuses: list[str] = []
    body: Any = app(environ, lambda status, _headers, _exc=None: statuses.append(status))
    b"".join(body)
    if hasattr(body, "close"):
        body.close()
    if not statuses[0].startswith("200"):
        raise RuntimeError(f"{label}: {statuses[0]}")
    return statuses


def print_cpu_per_call(call: Callable[[], object], calls: int, who: int = resource.RUSAGE_THREAD) -> None:
    """Print {"user": µs, "system": µs} of CPU per call of `call`, after a warm-up; `who` is getrusage's
    (RUSAGE_SELF counts the whole process: under gevent, its hub's work)."""
    for _ in range(max(200, calls // 10)):
        call()
    before = resource.getrusage(who)
    for _ in range(calls):
        call()
    after = resource.getrusage(who)
    user = (after.ru_utime - before.ru_utime) / calls * 1e6
    system = (after.ru_stime - before.ru_stime) / calls * 1e6
    print(json.dumps({"user": user, "system": system}))
