"""A guarded sampling profiler: `GET /debug/profile?seconds=N` samples this process for N seconds with py-spy
(every thread, without pausing it) and answers the profile, as pprof's /debug/pprof/profile did for the Go
originals.

Off unless SHOP_PROFILING_TOKEN is set; then only a request with `Authorization: Bearer <token>` gets one,
one profile at a time per process, at most SHOP_PROFILING_MAX_SECONDS long. Formats: `speedscope` (JSON for
speedscope.app, the default), `raw` (collapsed stacks for flamegraph.pl) and `flamegraph` (SVG).
`python -m shared_lib.devtools.profile URL --token T --seconds 10 -o profile.json` fetches one.
"""

from __future__ import annotations

import hmac
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from shared_lib.observability.settings import settings

PATH = "/debug/profile"
FORMATS = {
    "speedscope": "application/json",
    "raw": "text/plain; charset=utf-8",
    "flamegraph": "image/svg+xml",
}
_busy = threading.Lock()
_PR_SET_PTRACER = 0x59616D61
_PR_SET_PTRACER_ANY = -1


class ProfilerUnavailableError(RuntimeError):
    pass


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _allow_tracing_by_children() -> None:
    """Under Yama's ptrace_scope 1 a child may not attach to its parent unless the parent says so."""
    if sys.platform != "linux":
        return
    import ctypes  # here, not at import: only a profile asked for needs it, no function's cold start

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PTRACER, ctypes.c_ulong(_PR_SET_PTRACER_ANY), 0, 0, 0)
    except (OSError, AttributeError):  # no Yama, no prctl: nothing to allow
        pass


def sample(seconds: float, output_format: str = "speedscope", pid: int | None = None) -> bytes:
    """Sample process `pid` (this one by default) for `seconds`; the profile in `output_format`."""
    binary = py_spy()
    if binary is None:
        raise ProfilerUnavailableError("py-spy is not installed")
    _allow_tracing_by_children()
    import subprocess  # here, not at import: only a profile asked for runs py-spy, no function's cold start

    with tempfile.TemporaryDirectory(prefix="shop-profile-") as directory:
        out = Path(directory) / "profile"
        command = [
            binary,
            "record",
            "--pid",
            str(pid or os.getpid()),
            "--duration",
            str(max(1, round(seconds))),
            "--format",
            output_format,
            "--nonblocking",  # never pause the function being profiled
            "--output",
            str(out),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
        if result.returncode != 0 or not out.exists():
            raise ProfilerUnavailableError(f"py-spy failed: {result.stderr.strip()[-500:]}")
        return out.read_bytes()


def _answer(start_response: Callable[..., Any], status: str, body: bytes, content_type: str) -> list[bytes]:
    start_response(
        status,
        [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")],
    )
    return [body]


def _error(start_response: Callable[..., Any], status: str, message: str) -> list[bytes]:
    code = {400: 3, 401: 16, 404: 5, 409: 10, 503: 14}.get(int(status[:3]), 13)
    body = json.dumps({"code": code, "message": message, "details": []}).encode()
    return _answer(start_response, status, body, "application/json")


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The /debug/profile endpoint (the caller checked the path)."""
    config = settings()
    token = config.profiling_token.get_secret_value()
    if not token:
        return _error(start_response, "404 Not Found", f"no route for {PATH}")
    given = environ.get("HTTP_AUTHORIZATION", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return _error(start_response, "401 Unauthorized", "a profiling token is required")
    if environ.get("REQUEST_METHOD") != "GET":
        return _error(start_response, "400 Bad Request", "GET only")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        seconds = float(query.get("seconds", ["10"])[0])
    except ValueError:
        return _error(start_response, "400 Bad Request", "seconds must be a number")
    output_format = query.get("format", ["speedscope"])[0]
    if not 1 <= seconds <= config.profiling_max_seconds:
        return _error(
            start_response, "400 Bad Request", f"seconds must be 1 to {config.profiling_max_seconds}"
        )
    if output_format not in FORMATS:
        return _error(start_response, "400 Bad Request", "format must be one of " + ", ".join(FORMATS))
    if not _busy.acquire(blocking=False):
        return _error(start_response, "409 Conflict", "a profile is being taken already")
    import subprocess

    try:
        profile = sample(seconds, output_format)
    except (ProfilerUnavailableError, subprocess.TimeoutExpired) as exc:
        return _error(start_response, "503 Service Unavailable", str(exc))
    finally:
        _busy.release()
    return _answer(start_response, "200 OK", profile, FORMATS[output_format])
