"""The cluster files checked by the upstream projects' own code (k8s/validate, Go, pinned to the releases
k8s/cluster.mk installs): every rendered object of every overlay, kind's and skaffold's configs and the
OpenFaaS stack pass, and each validator refuses a broken object with the upstream project's message.

The validator is built once per source into ~/.cache/knative-shop/validate (k8s.tools.upstream). Without Go
these tests are skipped locally and fail under CI=true. Nothing here starts a cluster or dials anything.
"""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions import table
from k8s import generate
from k8s.tools import upstream
from tests.cluster.conftest import OVERLAYS, ROOT, Resource, of_kind

STRIMZI_GROUP = "kafka.strimzi.io"


def in_ci() -> bool:
    import os

    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_validator() -> Path:
    """The built validator; no Go: skipped locally, a failure naming Go under CI."""
    try:
        return upstream.binary()
    except upstream.GoMissing as exc:
        if in_ci():
            pytest.fail(
                f"CI is set and Go is missing, so the upstream validators cannot run: {exc}", pytrace=False
            )
        pytest.skip(f"Go is missing: {exc}")


@pytest.fixture(scope="session")
def validator() -> Path:
    return require_validator()


@pytest.fixture(scope="session")
def rendered_text(k8s_copy: Path) -> dict[str, str]:
    return {name: upstream.render(k8s_copy / "overlays" / name) for name in OVERLAYS}


def check(
    validator: Path,
    resources: list[Resource],
    cluster_config: Path = ROOT / "k8s" / "cluster",
) -> list[upstream.Result]:
    text = "---\n".join(yaml.safe_dump(r, sort_keys=False) for r in resources)
    return upstream.run({"mutated": text}, configs={}, cluster_config=cluster_config, validator=validator)


def check_config(validator: Path, flag: str, path: Path) -> list[upstream.Result]:
    return upstream.run({}, configs={flag: (path,)}, validator=validator)


# --- everything the project deploys passes ------------------------------------------------------------------


def test_every_rendered_object_of_every_overlay_passes_its_upstream_validator(
    validator: Path, rendered_text: dict[str, str], rendered: dict[str, list[Resource]]
) -> None:
    results = upstream.run(rendered_text, configs={}, validator=validator)
    failures = [f"{r.source} {r.kind}/{r.name}: {r.error}" for r in results if r.error]
    assert failures == []
    # one verdict per object, and only Strimzi's kinds without an upstream validator (see strimzi.go)
    for overlay, resources in rendered.items():
        mine = [r for r in results if r.source == overlay]
        assert len(mine) == len(resources), overlay
        unchecked = {r.kind.split(".")[0] for r in mine if r.unchecked}
        strimzi = {r["kind"] for r in resources if r["apiVersion"].startswith(STRIMZI_GROUP)}
        assert unchecked == strimzi, overlay
    checked = {r.kind for r in results if not r.unchecked}
    assert {
        "Service.serving.knative.dev/v1",
        "PingSource.sources.knative.dev/v1",
        "KafkaSource.sources.knative.dev/v1beta1",
        "KafkaSink.eventing.knative.dev/v1alpha1",
        "Deployment.apps/v1",
        "NetworkPolicy.networking.k8s.io/v1",
    } <= checked


def test_kind_skaffold_and_the_openfaas_stack_pass_their_upstream_parsers(validator: Path) -> None:
    results = upstream.run({}, validator=validator)
    assert [f"{r.source}: {r.error}" for r in results if r.error] == []
    kinds = [r.kind for r in results]
    assert kinds.count("Cluster.kind.x-k8s.io/v1alpha4") == 2
    assert "Config.skaffold/v4beta11" in kinds
    functions = {r.name for r in results if r.kind == "Function.openfaas"}
    assert functions == {generate.service_name(f.name) for f in table.FUNCTIONS}


# --- each validator refuses a broken object with the upstream message ---------------------------------------


def first(
    resources: list[Resource], kind: str, predicate: Callable[[Resource], bool] = lambda r: True
) -> Resource:
    return copy.deepcopy(next(r for r in resources if r["kind"] == kind and predicate(r)))


def template_annotations(service: Resource) -> dict[str, str]:
    found: dict[str, str] = service["spec"]["template"]["metadata"]["annotations"]
    return found


def http_service(dev: list[Resource]) -> Resource:
    return first(dev, "Service", lambda r: r["apiVersion"].startswith("serving.knative.dev"))


def set_window(service: Resource) -> Resource:
    template_annotations(service)["autoscaling.knative.dev/window"] = "5s"
    return service


def misspell_concurrency(service: Resource) -> Resource:
    spec = service["spec"]["template"]["spec"]
    spec["containerConcurency"] = spec.pop("containerConcurrency")
    return service


def ping_at_minute_61(source: Resource) -> Resource:
    source["spec"]["schedule"] = "61 * * * *"
    return source


def negative_retry(source: Resource) -> Resource:
    source["spec"]["delivery"]["retry"] = -1
    return source


def seconds_not_iso(source: Resource) -> Resource:
    source["spec"]["delivery"]["backoffDelay"] = "5s"
    return source


def random_ordering(source: Resource) -> Resource:
    source["spec"]["ordering"] = "random"
    return source


def misplaced_delivery_field(source: Resource) -> Resource:
    source["spec"]["delivery"]["retries"] = 5
    return source


def xml_sink(sink: Resource) -> Resource:
    sink["spec"]["contentMode"] = "xml"
    return sink


def misspelt_replicas(deployment: Resource) -> Resource:
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    return deployment


def bad_policy_port(policy: Resource) -> Resource:
    policy["spec"]["ingress"][0]["ports"] = [{"port": "http", "protocol": "TCP", "endPort": "x"}]
    return policy


MUTATIONS: dict[
    str, tuple[str, Callable[[list[Resource]], Resource], Callable[[Resource], Resource], str]
] = {
    # name: (kind shown, pick, mutate, the upstream message expected)
    "autoscaling window below 6s": (
        "Service.serving.knative.dev/v1",
        http_service,
        set_window,
        "expected 6s <= 5s <= 1h0m0s: spec.template.metadata.annotations.autoscaling.knative.dev/window",
    ),
    "unknown field in a Knative Service": (
        "Service.serving.knative.dev/v1",
        http_service,
        misspell_concurrency,
        'strict decoding error: unknown field "spec.template.spec.containerConcurency"',
    ),
    "cron field of 61": (
        "PingSource.sources.knative.dev/v1",
        lambda dev: first(dev, "PingSource"),
        ping_at_minute_61,
        "end of range (61) above maximum (59): 61",
    ),
    "negative retry": (
        "KafkaSource.sources.knative.dev/v1beta1",
        lambda dev: first(dev, "KafkaSource"),
        negative_retry,
        "invalid value: -1: spec.delivery.retry",
    ),
    "backoff delay not ISO 8601": (
        "KafkaSource.sources.knative.dev/v1beta1",
        lambda dev: first(dev, "KafkaSource"),
        seconds_not_iso,
        "invalid value: 5s: spec.delivery.backoffDelay",
    ),
    "unknown ordering": (
        "KafkaSource.sources.knative.dev/v1beta1",
        lambda dev: first(dev, "KafkaSource"),
        random_ordering,
        "invalid value: random: spec.ordering",
    ),
    "misplaced delivery field": (
        "KafkaSource.sources.knative.dev/v1beta1",
        lambda dev: first(dev, "KafkaSource"),
        misplaced_delivery_field,
        'unknown field "retries"',
    ),
    "KafkaSink content mode": (
        "KafkaSink.eventing.knative.dev/v1alpha1",
        lambda dev: first(dev, "KafkaSink"),
        xml_sink,
        "invalid value: xml: spec.contentMode",
    ),
    "unknown field in a Deployment": (
        "Deployment.apps/v1",
        lambda dev: first(dev, "Deployment"),
        misspelt_replicas,
        'strict decoding error: unknown field "spec.replica"',
    ),
    "wrong type in a NetworkPolicy": (
        "NetworkPolicy.networking.k8s.io/v1",
        lambda dev: first(dev, "NetworkPolicy"),
        bad_policy_port,
        "endPort",
    ),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_a_broken_object_is_refused_with_the_upstream_message(
    validator: Path, dev: list[Resource], case: str
) -> None:
    kind, pick, mutate, message = MUTATIONS[case]
    original = pick(dev)
    assert [r.error for r in check(validator, [original])] == [""], "the unbroken object passes"
    (result,) = check(validator, [mutate(original)])
    assert result.kind == kind
    assert message in result.error, result.error


def test_init_containers_need_the_feature_flag_the_cluster_sets(
    validator: Path, dev: list[Resource], tmp_path: Path
) -> None:
    service = first(dev, "Service", lambda r: "initContainers" in r["spec"]["template"]["spec"])
    template_annotations(service).pop("autoscaling.knative.dev/initial-scale", None)
    assert [r.error for r in check(validator, [service])] == [""]
    # the same object on a cluster whose config-features lacks kubernetes.podspec-init-containers
    (result,) = check(validator, [service], cluster_config=tmp_path)
    assert "must not set the field(s): spec.template.spec.initContainers" in result.error, result.error


def test_initial_scale_zero_needs_the_cluster_to_allow_it(
    validator: Path, dev: list[Resource], tmp_path: Path
) -> None:
    service = http_service(dev)
    assert template_annotations(service)["autoscaling.knative.dev/initial-scale"] == "0"
    features = ROOT / "k8s" / "cluster" / "knative-config-features.yaml"
    (tmp_path / features.name).write_text(features.read_text())  # init containers stay allowed
    (result,) = check(validator, [service], cluster_config=tmp_path)
    assert "initial-scale=0 not allowed by cluster" in result.error, result.error


def mutated_file(tmp_path: Path, source: Path, change: Callable[[Any], Any], name: str = "") -> Path:
    data = yaml.safe_load(source.read_text())
    target = tmp_path / (name or source.name)
    target.write_text(yaml.safe_dump(change(copy.deepcopy(data)), sort_keys=False))
    return target


def test_kinds_loader_refuses_an_unknown_field(validator: Path, tmp_path: Path) -> None:
    def misspell(config: Any) -> Any:
        config["nodes"][0]["extraPortMapping"] = config["nodes"][0].pop("extraPortMappings")
        return config

    (result,) = check_config(validator, "kind", mutated_file(tmp_path, ROOT / "kind-config.yaml", misspell))
    assert "field extraPortMapping not found in type v1alpha4.Node" in result.error, result.error


def test_skaffolds_schema_refuses_an_unknown_field_and_version(validator: Path, tmp_path: Path) -> None:
    def misspell(config: Any) -> Any:
        config["build"]["artifact"] = config["build"].pop("artifacts")
        return config

    def unknown_version(config: Any) -> Any:
        config["apiVersion"] = "skaffold/v9"
        return config

    (result,) = check_config(validator, "skaffold", mutated_file(tmp_path, ROOT / "skaffold.yaml", misspell))
    assert "field artifact not found in type" in result.error, result.error
    path = mutated_file(tmp_path, ROOT / "skaffold.yaml", unknown_version, "unknown.yaml")
    (result,) = check_config(validator, "skaffold", path)
    assert "skaffold/v9" in result.error, result.error


STACK = ROOT / "k8s" / "openfaas" / "stack.yml"


def a_cron_function(stack: Any) -> str:
    functions: dict[str, Any] = stack["functions"]
    return next(name for name, f in functions.items() if f["annotations"].get("topic") == "cron-function")


def test_faas_clis_parser_refuses_a_wrong_provider(validator: Path, tmp_path: Path) -> None:
    def provider(stack: Any) -> Any:
        stack["provider"]["name"] = "faas"
        return stack

    (result,) = check_config(validator, "stack", mutated_file(tmp_path, STACK, provider))
    assert 'is the only valid "provider.name" for the OpenFaaS CLI, but you gave: faas' in result.error


def test_the_stack_check_refuses_unknown_fields_and_bad_schedules(validator: Path, tmp_path: Path) -> None:
    def misspell(stack: Any) -> Any:
        first_function = next(iter(stack["functions"].values()))
        first_function["enviroment"] = first_function.pop("environment")
        return stack

    def minute_61(stack: Any) -> Any:
        stack["functions"][a_cron_function(stack)]["annotations"]["schedule"] = "61 * * * *"
        return stack

    (result,) = check_config(validator, "stack", mutated_file(tmp_path, STACK, misspell))
    assert "field enviroment not found in type stack.Function" in result.error, result.error
    results = check_config(validator, "stack", mutated_file(tmp_path, STACK, minute_61, "cron.yml"))
    (broken,) = [r for r in results if r.error]
    assert "end of range (61) above maximum (59): 61" in broken.error, broken.error


# --- one setting for the versions --------------------------------------------------------------------------


def make_versions() -> dict[str, str]:
    out = subprocess.run(
        ["make", "-s", "-f", "k8s/cluster.mk", "versions"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def go_mod_requirements() -> dict[str, str]:
    text = (ROOT / "k8s" / "validate" / "go.mod").read_text()
    return dict(re.findall(r"^\s+(\S+) (v\S+)", text, re.MULTILINE))


def test_the_validator_runs_exactly_the_releases_cluster_up_installs(validator: Path) -> None:
    required = go_mod_requirements()
    built = upstream.versions(validator)
    for module in ("knative.dev/serving", "knative.dev/eventing", "sigs.k8s.io/kind"):
        assert built[module] == required[module], module
    assert required["knative.dev/eventing"] == required["knative.dev/serving"]  # one Knative release
    pinned = make_versions()
    _, minor, patch = required["knative.dev/serving"].removeprefix("v").split(".")
    assert pinned["knative"] == f"1.{int(minor) - 27}.{patch}"  # Knative's Go modules: v0.48.0 = 1.21.0
    assert pinned["kind"] == required["sigs.k8s.io/kind"]
    assert pinned["skaffold"] == required["github.com/GoogleContainerTools/skaffold/v2"]
    commands = subprocess.run(
        ["make", "-n", "-f", "Makefile", "cluster-up"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    releases = set(re.findall(r"releases/download/knative-v(\d+\.\d+\.\d+)/", commands))
    assert releases == {pinned["knative"]}


def test_without_go_ci_fails_naming_it_and_a_laptop_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_go() -> str:
        raise upstream.GoMissing("Go is not installed")

    monkeypatch.setattr(upstream, "go", no_go)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set and Go is missing"):
        require_validator()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="Go is missing"):
        require_validator()


def test_the_build_is_cached_by_source(validator: Path) -> None:
    assert validator.parent == upstream.cache_dir()
    assert upstream.binary() == validator  # the second call builds nothing: same sources, same file
    assert validator.name == f"validate-{upstream.source_hash(upstream.go())}"


def test_strimzi_kinds_are_left_to_the_json_schemas_and_said_so(dev: list[Resource]) -> None:
    strimzi = [r for r in dev if r["apiVersion"].startswith(STRIMZI_GROUP)]
    assert {r["kind"] for r in strimzi} == {"Kafka", "KafkaNodePool", "KafkaTopic"}
    assert of_kind(dev, "KafkaTopic")  # checked by test_manifests against tests/cluster/schemas
