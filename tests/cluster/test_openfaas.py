"""The OpenFaaS path says what the table says: one function per function from the same image and target, its
settings and secrets, scaling labels, cron-connector annotations, an event source per CloudEvent function on
the shop's own event source CLI, and internal functions kept off the public route.
(Parsed by faas-cli's own parser in test_upstream_validators.)"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import yaml

from functions import entrypoint, table
from k8s import generate
from tests.cluster.conftest import ROOT, Resource, of_kind
from tests.cluster.test_manifests import NOT_SETTINGS, settings_variables

STACK = ROOT / "k8s" / "openfaas" / "stack.yml"
OPENFAAS_ONLY = {"PORT", "SECRETS_DIR", "FUNCTION_ROOT_PATH"}  # read by the entry point (ServerSettings)


def stack() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(STACK.read_text())
    return loaded


def test_every_function_is_an_openfaas_function_of_the_same_image_and_target() -> None:
    functions = stack()["functions"]
    assert set(functions) == {generate.service_name(f.name) for f in table.FUNCTIONS}
    for function in table.FUNCTIONS:
        spec = functions[generate.service_name(function.name)]
        assert spec["image"] == generate.OPENFAAS_IMAGE
        assert spec["image"].rpartition(":")[0] == generate.IMAGE  # the one image skaffold builds too
        assert spec["environment"]["FUNCTION_TARGET"] == function.name
        assert spec["labels"]["shop/function"] == function.name
        visibility = "public" if function.public else "internal"
        assert spec["labels"]["shop/visibility"] == visibility


def test_settings_and_secrets_are_those_the_services_read() -> None:
    functions = stack()["functions"]
    for function in table.FUNCTIONS:
        spec = functions[generate.service_name(function.name)]
        variables = set(spec["environment"]) - NOT_SETTINGS - OPENFAAS_ONLY
        assert variables <= settings_variables(function.service), function.name
        needs_secret = bool(generate.SECRET_ENV.get(function.service))
        assert spec.get("secrets", []) == ([generate.SECRET] if needs_secret else [])
        if needs_secret:
            assert spec["environment"]["SECRETS_DIR"] == "/var/openfaas/secrets"
        for url in (
            v for k, v in spec["environment"].items() if k.endswith("_URL") and k != "ORDERS_API_URL"
        ):
            # peers through the gateway, by their OpenFaaS name
            name = url.rsplit("/function/", 1)[1]
            assert url.startswith(generate.OPENFAAS_GATEWAY) and name in functions, url


def test_scaling_labels_and_probe_paths_the_server_answers() -> None:
    functions = stack()["functions"]
    for function in table.FUNCTIONS:
        spec = functions[generate.service_name(function.name)]
        scaling = generate.SCALING[function.trigger]
        labels = spec["labels"]
        assert int(labels["com.openfaas.scale.min"]) >= 1  # CE does not scale to zero
        assert int(labels["com.openfaas.scale.max"]) == scaling.max_scale
        annotations = spec["annotations"]
        probes = {annotations["com.openfaas.health.http.path"], annotations["com.openfaas.ready.http.path"]}
        assert probes == set(entrypoint.OPENFAAS_PROBE_PATHS)


def test_cron_functions_carry_the_cron_connectors_annotations() -> None:
    functions = stack()["functions"]
    for function in table.FUNCTIONS:
        spec = functions[generate.service_name(function.name)]
        annotations = spec["annotations"]
        if function.trigger == "cron":
            assert annotations["topic"] == "cron-function"
            assert annotations["schedule"] == function.schedule
            assert spec["environment"]["FUNCTION_ROOT_PATH"] == function.path
        else:
            assert "topic" not in annotations and "FUNCTION_ROOT_PATH" not in spec["environment"]


def event_source_options() -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "shared_lib.eventsource", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    return set(re.findall(r"(--[a-z][a-z-]+)", result.stdout))


def test_every_cloudevent_function_has_an_event_source_posting_to_the_gateway(
    rendered: dict[str, list[Resource]],
) -> None:
    resources = rendered["openfaas"]
    sources = [
        d
        for d in of_kind(resources, "Deployment", "apps")
        if d["metadata"]["labels"].get("shop/worker") == "eventsource"
    ]
    consumers = [f for f in table.FUNCTIONS if f.trigger == "cloudevent"]
    assert len(sources) == len(consumers)
    options = event_source_options()
    for function in consumers:
        (source,) = [s for s in sources if s["metadata"]["labels"]["shop/function"] == function.name]
        assert source["spec"]["replicas"] == 1  # one group member: ordered per partition
        (container,) = source["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", "shared_lib.eventsource"]
        assert container["image"] == generate.OPENFAAS_IMAGE
        args = container["args"]
        flags = [a for a in args if a.startswith("--")]
        assert set(flags) <= options, set(flags) - options
        value = dict(zip(args[::2], args[1::2], strict=True))
        assert value["--topic"] == function.topic
        assert value["--group"] == f"shop.{function.service}.{function.name}"  # the KafkaSource's group
        assert value["--sink"] == (
            f"{generate.OPENFAAS_GATEWAY}/function/{generate.service_name(function.name)}{function.path}"
        )
        assert value["--bootstrap"] == generate.KAFKA_BOOTSTRAP


def test_only_public_functions_have_a_route_from_outside(rendered: dict[str, list[Resource]]) -> None:
    resources = rendered["openfaas"]
    (config,) = [
        c for c in of_kind(resources, "ConfigMap") if c["metadata"]["name"] == generate.PUBLIC_GATEWAY
    ]
    conf = config["data"]["default.conf"]
    (pattern,) = re.findall(r"location ~ (\S+) \{", conf)
    routed = re.compile(pattern)
    for function in table.FUNCTIONS:
        path = f"/function/{generate.service_name(function.name)}{function.path}"
        assert bool(routed.match(path)) == function.public, path
    assert not routed.match("/system/functions") and not routed.match("/function/loms-relay-outbox-x")
    (service,) = [
        s for s in of_kind(resources, "Service") if s["metadata"]["name"] == generate.PUBLIC_GATEWAY
    ]
    assert service["spec"]["ports"][0]["nodePort"] == generate.OPENFAAS_PUBLIC_PORT
    kind_config = yaml.safe_load((ROOT / "k8s/openfaas/kind-config.yaml").read_text())
    mappings = [m for n in kind_config["nodes"] for m in n.get("extraPortMappings", [])]
    assert [(m["containerPort"], m["listenAddress"]) for m in mappings] == [
        (generate.OPENFAAS_PUBLIC_PORT, "127.0.0.1")
    ]


def test_function_pods_take_traffic_from_the_gateway_only(rendered: dict[str, list[Resource]]) -> None:
    (policy,) = of_kind(rendered["openfaas"], "NetworkPolicy")
    assert policy["metadata"]["namespace"] == generate.OPENFAAS_FN_NAMESPACE
    assert policy["spec"]["podSelector"] == {} and policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    (expression,) = peer["namespaceSelector"]["matchExpressions"]
    assert expression["values"] == [generate.OPENFAAS_NAMESPACE]


def test_the_openfaas_overlay_has_the_infrastructure_and_no_knative_kinds(
    rendered: dict[str, list[Resource]],
) -> None:
    resources = rendered["openfaas"]
    groups = {r["apiVersion"].split("/")[0] for r in resources}
    assert not groups & {"serving.knative.dev", "sources.knative.dev", "eventing.knative.dev"}
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    assert {("StatefulSet", "postgres"), ("Deployment", "memcached"), ("Job", "shop-migrate")} <= names
    assert ("Deployment", generate.RELAY) in names
    for _, spec in [
        (r["metadata"]["name"], r["spec"]["template"]["spec"]) for r in of_kind(resources, "Deployment")
    ]:
        for container in spec["containers"]:
            if container["image"].startswith(generate.IMAGE):
                assert container["image"] == generate.OPENFAAS_IMAGE


def test_the_make_targets_name_their_context_and_pin_the_charts() -> None:
    commands = subprocess.run(
        ["make", "-n", "-f", "Makefile", "openfaas-up", "openfaas-deploy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")  # continuation lines joined
    for line in commands.splitlines():
        for tool in ("kubectl", "helm"):
            if re.search(rf"(^|[|;&(]\s*){tool}\s", line):
                context = "--context" if tool == "kubectl" else "--kube-context"
                for call in re.findall(rf"{tool}\s[^|;&]*", line):
                    assert f"{context} kind-shop-openfaas" in call, call
    charts = re.findall(r"upgrade --install (\S+) (\S+) .*?--version (\S+)", commands)
    assert {(c[0], c[2]) for c in charts} == {("openfaas", "14.2.34"), ("cron-connector", "0.6.10")}
    assert "exposeServices=false" in commands
