"""tests.fixtures.stack: the proof that a port is held by the process a test started, not by a stranger."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psutil

from functions import table
from tests.fixtures.stack import free_port_offset, listens_on

LISTEN = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
LISTEN += "print(s.getsockname()[1], flush=True); time.sleep(60)"


def test_a_port_this_process_listens_on_is_its_own() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert listens_on(os.getpid(), s.getsockname()[1])


def test_a_port_held_by_a_stranger_is_not_the_started_process_s() -> None:
    stranger = subprocess.Popen([sys.executable, "-c", LISTEN], stdout=subprocess.PIPE)
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert stranger.stdout is not None
        port = int(stranger.stdout.readline())
        assert listens_on(stranger.pid, port)
        assert not listens_on(ours.pid, port)  # something answers there, but not the process we started
    finally:
        stranger.kill()
        ours.kill()
        stranger.wait()
        ours.wait()


def test_a_child_of_the_started_process_counts_as_it() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {LISTEN!r}])"],
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        port = int(parent.stdout.readline())
        assert listens_on(parent.pid, port)  # gunicorn's workers are the server process's children
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()


def test_a_free_offset_has_every_service_port_free() -> None:
    offset = free_port_offset()
    for service in table.SERVICES.values():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
            s.bind(("127.0.0.1", service.port + offset))
