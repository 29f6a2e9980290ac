"""Starts and stops a local Memcached for `make run` and the tests, on 127.0.0.1 only.

Uses the system's `memcached` binary (Debian: `apt-get install memcached`). Under root it runs as `nobody`,
since memcached refuses to run as root. No service logic here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 11211


def find_binary() -> str | None:
    explicit = os.environ.get("MEMCACHED_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("memcached")
    if found:
        return found
    for candidate in ("/usr/bin/memcached", "/usr/local/bin/memcached", "/usr/sbin/memcached"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def available() -> tuple[bool, str]:
    """(True, path of the binary) or (False, why not)."""
    binary = find_binary()
    if binary is None:
        return False, "no memcached binary (apt-get install memcached, or set MEMCACHED_BIN)"
    return True, binary


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a memcached answers `version` at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"version\r\n")
            return sock.recv(64).startswith(b"VERSION")
    except OSError:
        return False


@dataclass
class MemcachedServer:
    """One memcached process on 127.0.0.1:`port`; start() and stop() may be called again and again."""

    port: int
    memory_mb: int = 64
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        ok, binary = available()
        if not ok:
            raise RuntimeError(binary)
        # -U 0: no UDP listener; -l: never on a public interface
        args = [binary, "-l", self.host, "-p", str(self.port), "-U", "0", "-m", str(self.memory_mb)]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        return args

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None and answers(self.host, self.port)

    def start(self, timeout: float = 10.0) -> None:
        if self.running():
            return
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in the terminal reaches the parent only; stop() ends it
        )
        deadline = time.monotonic() + timeout
        while not answers(self.host, self.port, timeout=0.2):
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"memcached did not start on {self.address}: {error.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"memcached did not answer on {self.address} within {timeout:.0f}s")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            # SIGKILL: a cache has nothing to save, and SIGTERM makes memcached linger for up to a second
            process.kill()
            process.wait(5)
        if process.stderr is not None:
            process.stderr.close()
        # the port is free again once nothing answers there
        deadline = time.monotonic() + 5
        while answers(self.host, self.port, timeout=0.1) and time.monotonic() < deadline:
            time.sleep(0.02)


# --- the command line: `python -m shared_lib.devtools.memcached_server start|stop|status|check` ---------


def _pid_file(port: int) -> Path:
    return Path(".local") / f"memcached-{port}.pid"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status", "check", "run"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--memory-mb", type=int, default=64)
    args = parser.parse_args()
    server = MemcachedServer(args.port, args.memory_mb)
    pid_file = _pid_file(args.port)
    if args.action == "check":
        ok, detail = available()
        print(detail)
        return 0 if ok else 1
    if args.action == "status":
        print("running" if answers(server.host, server.port) else "stopped")
        return 0
    if args.action == "start":  # in the background; `stop` ends it through the pid file
        server.start()
        assert server.process is not None
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(str(server.process.pid))
        print(server.address)
        return 0
    if args.action == "stop":
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            pid_file.unlink()
        return 0
    # run: in the foreground until Ctrl-C or SIGTERM
    server.start()
    print(server.address, flush=True)
    stop = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop and server.process is not None and server.process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
