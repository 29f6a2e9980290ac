"""shared_lib.devtools.memcached_server: a real memcached on 127.0.0.1, started, stopped and started again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from shared_lib.devtools.memcached_server import MemcachedServer, answers, available
from shared_lib.devtools.ports import free_port
from tests.conftest import ROOT
from tests.fixtures.required import missing

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> MemcachedServer:
    ok, detail = available()
    if not ok:
        missing("memcached", detail)
    return MemcachedServer(free_port())


def test_start_stop_and_start_again_on_the_same_port(server: MemcachedServer) -> None:
    assert not server.running()
    server.start()
    try:
        assert server.running()
        assert server.address == f"127.0.0.1:{server.port}"
        server.start()  # already running: nothing to do
        server.stop()
        assert not server.running()
        assert not answers("127.0.0.1", server.port)
        server.start()
        assert server.running()
    finally:
        server.stop()


def test_it_listens_on_loopback_only_and_without_udp(server: MemcachedServer) -> None:
    command = server.command()
    assert command[command.index("-l") + 1] == "127.0.0.1"
    assert command[command.index("-U") + 1] == "0"
    assert ("-u" in command) == (os.geteuid() == 0)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=1) as sock:
            sock.sendall(b"set k 0 60 2\r\nhi\r\nget k\r\n")
            reply = b""
            while b"END" not in reply:
                reply += sock.recv(100)
        assert b"VALUE k 0 2\r\nhi" in reply
    finally:
        server.stop()


def test_a_taken_port_is_a_clear_error(server: MemcachedServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.port))
        taken.listen()
        with pytest.raises((RuntimeError, TimeoutError)):
            # something listens there but does not speak memcached
            MemcachedServer(server.port).start(timeout=1)


def test_the_command_line_reports_availability() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared_lib.devtools.memcached_server", "check"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == (0 if available()[0] else 1)
    assert result.stdout.strip()
