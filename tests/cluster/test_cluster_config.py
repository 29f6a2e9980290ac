"""The cluster's own configuration: kind's port mappings, skaffold's build and profiles, the make targets and
the cluster patches agree with each other and with the generated manifests, and touch only 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from functions import table
from k8s import generate
from tests.cluster.conftest import ROOT

DEV_SERVER_PORTS = range(8080, 8086)
TARGETS = (
    "cluster-up",
    "dev",
    "port-forward",
    "cluster-down",
    "autoscale-demo",
    "k8s-generate",
    "loadgen",
    "versions",
    "validate-manifests",
    "test-cluster",
    "openfaas-up",
    "openfaas-deploy",
    "openfaas-port-forward",
    "openfaas-down",
)


def load(path: str) -> dict[str, object]:
    data = yaml.safe_load((ROOT / path).read_text())
    assert isinstance(data, dict)
    return data


def make_dry_run(target: str) -> str:
    result = subprocess.run(
        ["make", "-n", "-f", "Makefile", "-f", "k8s/cluster.mk", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kind_publishes_the_ingress_on_loopback_clear_of_the_dev_server() -> None:
    config = load("kind-config.yaml")
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    nodes = config["nodes"]
    assert isinstance(nodes, list)
    assert [n["role"] for n in nodes].count("control-plane") == 1 and len(nodes) <= 2
    mappings = [m for n in nodes for m in n.get("extraPortMappings", [])]
    assert {m["containerPort"] for m in mappings} == {31080, 31443}
    for mapping in mappings:
        assert mapping["listenAddress"] == "127.0.0.1"
        assert mapping["hostPort"] not in DEV_SERVER_PORTS
    nodeport = yaml.safe_load((ROOT / "k8s/cluster/kourier-nodeport.yaml").read_text())
    assert {p["nodePort"] for p in nodeport["spec"]["ports"]} == {m["containerPort"] for m in mappings}


def test_skaffold_builds_one_image_and_deploys_existing_overlays() -> None:
    config = load("skaffold.yaml")
    assert config["apiVersion"] == "skaffold/v4beta11" and config["kind"] == "Config"
    (artifact,) = config["build"]["artifacts"]  # type: ignore[index]
    assert artifact == {"image": generate.IMAGE, "docker": {"dockerfile": "Dockerfile"}}
    profiles = {p["name"]: p for p in config["profiles"]}  # type: ignore[attr-defined]
    assert set(profiles) == {"dev", "observability"}
    paths = [*config["manifests"]["kustomize"]["paths"]]  # type: ignore[index]
    for profile in profiles.values():
        paths += profile["manifests"]["kustomize"]["paths"]
    for path in paths:
        assert (ROOT / path / "kustomization.yaml").exists(), path
    forwards = [*config["portForward"]]  # type: ignore[misc]
    for profile in profiles.values():
        forwards += profile.get("portForward", [])
    assert any(f["resourceName"] == "kourier" and f["namespace"] == "kourier-system" for f in forwards)
    for forward in forwards:
        assert forward["address"] == "127.0.0.1"
        assert forward["localPort"] not in DEV_SERVER_PORTS


def test_the_make_targets_exist_and_name_the_kind_context_on_every_cluster_command() -> None:
    text = (ROOT / "k8s/cluster.mk").read_text()
    for target in TARGETS:
        assert re.search(rf"^{re.escape(target)}:", text, re.MULTILINE), target
    for target in ("cluster-up", "dev", "port-forward"):
        for line in make_dry_run(target).splitlines():
            for tool in ("kubectl ", "skaffold "):
                if line.startswith(tool) or f"| {tool}" in line:
                    assert "--context kind-shop" in line or "--kube-context kind-shop" in line, line


def test_cluster_up_installs_pinned_releases_only() -> None:
    commands = make_dry_run("cluster-up")
    urls = re.findall(r"https://\S+", commands)
    assert len(urls) >= 9
    for url in urls:
        assert "latest" not in url and "nightly" not in url, url
        assert re.search(r"/(knative-v\d+\.\d+\.\d+|\d+\.\d+\.\d+)/", url), url
    for patch in sorted((ROOT / "k8s/cluster").glob("*.yaml")):
        assert f"--patch-file k8s/cluster/{patch.name}" in commands, patch.name


def test_the_tools_only_target_loopback() -> None:
    assert "--ingress http://127.0.0.1:" in make_dry_run("autoscale-demo")
    assert "SHOP_INGRESS=http://127.0.0.1:" in make_dry_run("loadgen")


@pytest.mark.parametrize("function", [f.name for f in table.FUNCTIONS if f.public and f.trigger == "http"])
def test_public_functions_have_an_ingress_host_under_the_kind_domain(function: str) -> None:
    config_domain = yaml.safe_load((ROOT / "k8s/cluster/knative-config-domain.yaml").read_text())
    (domain,) = config_domain["data"]
    assert generate.external_host(function).endswith(f".{generate.NAMESPACE}.{domain}")


def test_cluster_patches_are_yaml_mappings() -> None:
    for path in sorted(Path(ROOT / "k8s/cluster").glob("*.yaml")):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_skaffold_dev_needs_nothing_prepared_the_dev_secret_is_committed() -> None:
    """`skaffold dev` run directly renders k8s/overlays/dev: every file its kustomization reads is in git."""
    kustomization = load("k8s/overlays/dev/kustomization.yaml")
    read = [f for g in kustomization["secretGenerator"] for f in g.get("envs", [])]  # type: ignore[attr-defined]
    tracked = subprocess.run(
        ["git", "ls-files", "k8s/overlays/dev"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert read and all(f"k8s/overlays/dev/{f}" in tracked for f in read), (read, tracked)
    assert "dev:" in (ROOT / "k8s/cluster.mk").read_text()
    assert ".env" not in make_dry_run("dev")
