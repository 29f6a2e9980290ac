"""The shop's three process entry points (the container's functions.entrypoint, the ingest worker, the relay
worker) start alike: started as a program, each tells pydantic not to scan for plugins before its imports
build a model (lifecycle.program_starting), keeps a value the environment already has, and changes nothing
when merely imported."""

from __future__ import annotations

import textwrap

import pytest

from tests.unit.test_cold_start import run_python  # a fresh interpreter, PYDANTIC_DISABLE_PLUGINS unset

ENTRY_POINTS = ("functions.entrypoint", "functions.orders.ingest_worker", "functions.loms.relay_worker")

STARTED = """
    import json, os, runpy, sys
    sys.argv = [MODULE, "--help"]  # argparse answers and exits: after the imports, before any work
    try:
        runpy.run_module(MODULE, run_name=RUN_NAME, alter_sys=True)
    except SystemExit:
        pass
    plugins = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
    print(json.dumps({"plugins": plugins, "pydantic": "pydantic" in sys.modules}))
"""


def started(module: str, run_name: str, **env: str) -> dict[str, object]:
    """What a fresh interpreter that ran `module` under `run_name` (until its --help) printed last."""
    return run_python(f"MODULE = {module!r}\nRUN_NAME = {run_name!r}\n" + textwrap.dedent(STARTED), **env)


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_started_as_a_program_pydantic_plugins_are_off(module: str) -> None:
    # pydantic is imported by then (each module's imports build models), so the setting is made before them
    assert started(module, "__main__") == {"plugins": "__all__", "pydantic": True}


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_an_explicit_plugin_setting_is_kept(module: str) -> None:
    assert started(module, "__main__", PYDANTIC_DISABLE_PLUGINS="") == {"plugins": "", "pydantic": True}


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_importing_an_entry_point_leaves_the_environment_alone(module: str) -> None:
    assert started(module, module)["plugins"] is None
