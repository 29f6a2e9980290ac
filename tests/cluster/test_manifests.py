"""The cluster manifests, rendered offline by kustomize and checked against schemas and the function table.

Built-in kinds: kubernetes-validate (strict) for a pinned Kubernetes version. Knative Service and PingSource:
cloudcoil's typed models, round-tripped so a misspelt or misplaced field (which the models would silently
drop) fails. KafkaSource, KafkaSink and Strimzi's kinds: the JSON schemas in tests/cluster/schemas.
"""

from __future__ import annotations

import base64
import copy
import functools
import importlib
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from functions import table
from k8s import generate
from shared_lib import eventsource
from tests.cluster.conftest import KNATIVE_OVERLAYS, ROOT, Resource, of_kind

# the cluster tooling of the dev dependencies (kubernetes-validate, cloudcoil's Knative models, jsonschema)
jsonschema = pytest.importorskip("jsonschema", reason="install the dev dependencies: pip install -e '.[dev]'")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="install the dev dependencies")
pytest.importorskip("cloudcoil.models.knative_serving", reason="install the dev dependencies")

KUBERNETES = "1.33"  # the oldest node version the cluster path supports (kind >= 0.29; Knative 1.21)
SCHEMAS = Path(__file__).resolve().parent / "schemas"
CRD_SCHEMAS = {
    ("sources.knative.dev/v1beta1", "KafkaSource"): "kafkasource.json",
    ("eventing.knative.dev/v1alpha1", "KafkaSink"): "kafkasink.json",
    ("kafka.strimzi.io/v1beta2", "Kafka"): "kafka.json",
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): "kafkanodepool.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic.json",
}
THIRD_PARTY_IMAGES = (
    "docker.io/library/",
    "docker.io/nginxinc/",
    "docker.io/grafana/",
    "docker.io/jaegertracing/",
    "quay.io/prometheus/",
)
# shared_lib.observability reads these (and the functions' own settings do not)
NOT_SETTINGS = {
    "FUNCTION_TARGET",
    "GUNICORN_THREADS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "SHOP_TRACE_SAMPLE_RATIO",
}


def settings_variables(service: str) -> set[str]:
    """The environment variables the service's settings classes (functions/<service>/settings.py) read."""
    try:
        module = importlib.import_module(f"functions.{service}.settings")
    except ModuleNotFoundError:
        return set()
    classes = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, BaseSettings) and c.__module__ == module.__name__
    ]
    return {c.model_config.get("env_prefix", "") + name.upper() for c in classes for name in c.model_fields}


def is_builtin(resource: Resource) -> bool:
    group = resource["apiVersion"].rpartition("/")[0]
    return group in ("", "apps", "batch", "policy") or group.endswith(".k8s.io")


def knative_services(resources: list[Resource]) -> list[Resource]:
    return of_kind(resources, "Service", "serving.knative.dev")


def by_function(resources: list[Resource]) -> dict[str, Resource]:
    return {r["metadata"]["labels"]["shop/function"]: r for r in resources}


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def pod_specs(resources: list[Resource]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for r in resources:
        name = f"{r['kind']}/{r['metadata']['name']}"
        if r["kind"] in ("Deployment", "StatefulSet", "Job") or (
            r["kind"] == "Service" and r["apiVersion"].startswith("serving.knative.dev")
        ):
            specs.append((name, r["spec"]["template"]["spec"]))
    return specs


def dropped(original: Any, roundtrip: Any, path: str = "") -> list[str]:
    """Paths of `original` that `roundtrip` lost or changed (fields a model adds, like defaults, are fine)."""
    if isinstance(original, dict):
        if not isinstance(roundtrip, dict):
            return [path or "/"]
        return [p for k, v in original.items() for p in dropped(v, roundtrip.get(k), f"{path}/{k}")]
    if isinstance(original, list):
        if not isinstance(roundtrip, list) or len(roundtrip) != len(original):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(original, roundtrip, strict=True))
            for p in dropped(a, b, f"{path}/{i}")
        ]
    return [] if original == roundtrip else [path]


@functools.cache
def knative_models() -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generated eventing models shadow Resource.name; harmless here
        from cloudcoil.models.knative_eventing.sources.v1 import PingSource
        from cloudcoil.models.knative_serving.serving.v1 import Service
    return {"Service": Service, "PingSource": PingSource}


def model_problems(resource: Resource) -> list[str]:
    model = knative_models()[resource["kind"]]
    typed = model.model_validate(resource)
    return dropped(resource, typed.model_dump(by_alias=True, exclude_none=True, mode="json"))


@functools.cache
def crd_validator(api_version: str, kind: str) -> Any:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# --- every resource is valid ------------------------------------------------------------------------------


def test_every_overlay_renders_the_shop(rendered: dict[str, list[Resource]]) -> None:
    for overlay, resources in rendered.items():
        expected = len(table.FUNCTIONS) if overlay in KNATIVE_OVERLAYS else 0  # OpenFaaS: from stack.yml
        assert len(knative_services(resources)) == expected, overlay
        assert of_kind(resources, "Secret"), overlay


def test_every_rendered_resource_has_a_validator(rendered: dict[str, list[Resource]]) -> None:
    for resources in rendered.values():
        for r in resources:
            known = (
                is_builtin(r)
                or (r["apiVersion"], r["kind"]) in CRD_SCHEMAS
                or (r["apiVersion"], r["kind"])
                in {("serving.knative.dev/v1", "Service"), ("sources.knative.dev/v1", "PingSource")}
            )
            assert known, f"no validator for {r['apiVersion']} {r['kind']}: add a schema"


def test_builtin_kinds_pass_strict_kubernetes_validation(rendered: dict[str, list[Resource]]) -> None:
    for resources in rendered.values():
        for r in filter(is_builtin, resources):
            try:
                kubernetes_validate.validate(r, KUBERNETES, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{r['kind']}/{r['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_knative_services_and_ping_sources_keep_every_field_through_the_typed_models(
    rendered: dict[str, list[Resource]],
) -> None:
    for resources in rendered.values():
        for r in [*knative_services(resources), *of_kind(resources, "PingSource")]:
            assert model_problems(r) == [], f"{r['kind']}/{r['metadata']['name']}"


def test_the_model_check_catches_a_misspelt_field(dev: list[Resource]) -> None:
    service = copy.deepcopy(knative_services(dev)[0])
    service["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    assert model_problems(service) == ["/spec/template/spec/containers/0/readinesProbe"]


def test_knative_pod_templates_are_valid_kubernetes_pod_specs(dev: list[Resource]) -> None:
    """Containers, probes, env and resources checked by the Kubernetes schema itself (Knative adds its own
    fields to the pod spec and lets probes omit the port: both are adjusted before validating)."""
    for service in knative_services(dev):
        spec = copy.deepcopy(service["spec"]["template"]["spec"])
        spec.pop("containerConcurrency")
        spec.pop("timeoutSeconds")
        for container in containers(spec):
            for probe in ("readinessProbe", "livenessProbe"):
                if probe in container:
                    container[probe]["httpGet"].setdefault("port", 8080)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": service["metadata"]["name"]},
            "spec": spec,
        }
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)


def test_kafka_and_strimzi_resources_match_their_schemas(rendered: dict[str, list[Resource]]) -> None:
    for resources in rendered.values():
        for r in resources:
            if (r["apiVersion"], r["kind"]) in CRD_SCHEMAS:
                errors = sorted(crd_validator(r["apiVersion"], r["kind"]).iter_errors(r), key=str)
                assert not errors, f"{r['kind']}/{r['metadata']['name']}: {errors[0].message}"


def test_the_schemas_refuse_unknown_fields(dev: list[Resource]) -> None:
    source = copy.deepcopy(of_kind(dev, "KafkaSource")[0])
    source["spec"]["delivery"]["retries"] = 5
    assert not crd_validator(source["apiVersion"], source["kind"]).is_valid(source)


# --- the manifests say what the table says ---------------------------------------------------------------


def test_every_function_has_exactly_one_knative_service_running_it(dev: list[Resource]) -> None:
    services = knative_services(dev)
    names = [s["metadata"]["name"] for s in services]
    assert sorted(names) == sorted(generate.service_name(f.name) for f in table.FUNCTIONS)
    for function in table.FUNCTIONS:
        (service,) = [s for s in services if s["metadata"]["name"] == generate.service_name(function.name)]
        container = service["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["FUNCTION_TARGET"] == function.name
        assert container["args"] == ["--target", function.name]
        assert service["metadata"]["labels"]["shop/function"] == function.name


def test_service_names_are_dns_labels() -> None:
    for function in table.FUNCTIONS:
        name = generate.service_name(function.name)
        assert name.replace("-", "").isalnum() and name.islower() and len(name) <= 63, name
    assert generate.service_name("add_item") == "cart-add-item"


def test_internal_functions_and_only_they_are_cluster_local(dev: list[Resource]) -> None:
    services = by_function(knative_services(dev))
    for function in table.FUNCTIONS:
        visibility = services[function.name]["metadata"]["labels"].get("networking.knative.dev/visibility")
        assert visibility == (None if function.public else "cluster-local"), function.name


def test_every_topic_has_a_kafka_topic_with_its_partitions(dev: list[Resource]) -> None:
    topics = {t["spec"]["topicName"]: t for t in of_kind(dev, "KafkaTopic")}
    assert set(topics) == set(table.TOPICS)
    for name, partitions in table.TOPICS.items():
        assert topics[name]["spec"]["partitions"] == partitions
        assert topics[name]["metadata"]["labels"]["strimzi.io/cluster"] == generate.KAFKA_CLUSTER
        assert topics[name]["metadata"]["namespace"] == generate.KAFKA_NAMESPACE


def test_every_cloudevent_function_has_an_ordered_kafka_source_that_rides_out_a_15_minute_outage(
    dev: list[Resource],
) -> None:
    sources = of_kind(dev, "KafkaSource")
    consumers = [f for f in table.FUNCTIONS if f.trigger == "cloudevent"]
    assert len(sources) == len(consumers)
    sinks = {s["metadata"]["name"]: s for s in of_kind(dev, "KafkaSink")}
    local = eventsource.KafkaEventSource.__init__.__kwdefaults__ or {}
    assert generate.delivery_budget_seconds() >= 15 * 60
    for function in consumers:
        (source,) = [s for s in sources if s["metadata"]["name"] == generate.service_name(function.name)]
        spec = source["spec"]
        assert spec["topics"] == [function.topic]
        assert spec["sink"]["ref"]["name"] == generate.service_name(function.name)
        assert spec["sink"]["uri"] == function.path
        # ordering is spec.ordering; the delivery.order annotation is read by Trigger reconcilers only
        assert "kafka.eventing.knative.dev/delivery.order" not in source["metadata"].get("annotations", {})
        assert spec["ordering"] == "ordered"
        delivery = spec["delivery"]
        # linear: waits of backoffDelay × n before the n-th retry, none longer than 100 s
        assert delivery["backoffPolicy"] == "linear"
        delay = float(delivery["backoffDelay"].removeprefix("PT").removesuffix("S"))
        waits = [delay * n for n in range(1, delivery["retry"] + 1)]
        assert sum(waits) >= 15 * 60 and max(waits) <= 100, waits
        assert delivery["timeout"] == generate.DELIVERY_TIMEOUT
        assert spec["initialOffset"] == local["initial_offset"]
        dead_letters = sinks[delivery["deadLetterSink"]["ref"]["name"]]
        assert dead_letters["spec"]["topic"] == f"{function.topic}.dlq"
        assert dead_letters["spec"]["topic"] in table.TOPICS


def test_every_cron_function_has_a_ping_source_on_its_schedule(dev: list[Resource]) -> None:
    sources = {s["metadata"]["name"]: s for s in of_kind(dev, "PingSource")}
    crons = [f for f in table.FUNCTIONS if f.trigger == "cron"]
    assert len(sources) == len(crons)
    for function in crons:
        spec = sources[generate.service_name(function.name)]["spec"]
        assert spec["schedule"] == function.schedule
        assert spec["sink"]["ref"] == {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "name": generate.service_name(function.name),
        }
        assert spec["sink"]["uri"] == function.path  # each function answers on its table path only


def test_event_consumers_keep_a_pod_and_http_functions_scale_to_zero_in_dev(dev: list[Resource]) -> None:
    allowed = yaml.safe_load((ROOT / "k8s/cluster/knative-config-autoscaler.yaml").read_text())["data"]
    assert allowed["allow-zero-initial-scale"] == "true"
    for function, service in by_function(knative_services(dev)).items():
        annotations = service["spec"]["template"]["metadata"]["annotations"]
        expected = {"http": "0", "cloudevent": "1", "cron": "0"}[table.BY_NAME[function].trigger]
        assert annotations["autoscaling.knative.dev/min-scale"] == expected, function
        # what may start cold is not started by a deploy; what is kept warm starts at its min-scale
        initial = annotations.get("autoscaling.knative.dev/initial-scale")
        assert initial == ("0" if expected == "0" else None), function
        assert int(annotations["autoscaling.knative.dev/max-scale"]) >= 1
        assert (
            int(annotations["autoscaling.knative.dev/target"])
            <= service["spec"]["template"]["spec"]["containerConcurrency"]
        )


def test_every_image_of_ours_is_the_one_skaffold_builds(rendered: dict[str, list[Resource]]) -> None:
    skaffold = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    (artifact,) = skaffold["build"]["artifacts"]
    assert artifact["image"] == generate.IMAGE
    for resources in rendered.values():
        for name, spec in pod_specs(resources):
            for container in containers(spec):
                image = container["image"]
                ours = image in (generate.IMAGE, generate.OPENFAAS_IMAGE)
                assert ours or image.startswith(THIRD_PARTY_IMAGES), f"{name}: {image}"
                if ours:
                    assert container.get("securityContext", {}).get("runAsNonRoot") is True, name


def test_every_secret_reference_resolves_to_a_generated_key(rendered: dict[str, list[Resource]]) -> None:
    for resources in rendered.values():
        secrets = {s["metadata"]["name"]: s for s in of_kind(resources, "Secret")}
        for name, spec in pod_specs(resources):
            for container in containers(spec):
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref is None:
                        continue
                    assert ref["name"] in secrets, (
                        f"{name}: no Secret {ref['name']} (hash suffix not applied?)"
                    )
                    data = secrets[ref["name"]]["data"]
                    assert ref["key"] in data, f"{name}: Secret {ref['name']} has no {ref['key']}"
                    assert base64.b64decode(data[ref["key"]]), ref["key"]


def test_no_password_is_written_in_a_manifest() -> None:
    for path in (ROOT / "k8s").rglob("*.yaml"):
        text = path.read_text()
        assert "shop-dev-password" not in text and "postgresql://" not in text, path


def test_every_setting_the_manifests_set_is_read_by_its_service(dev: list[Resource]) -> None:
    for function, service in by_function(knative_services(dev)).items():
        fields = settings_variables(table.BY_NAME[function].service)
        for container in containers(service["spec"]["template"]["spec"]):
            for env in container.get("env", []):
                name = env["name"]
                if name in NOT_SETTINGS:
                    continue
                assert name in fields, f"{function}: {name} is read by no settings class of its service"


def test_the_committed_generated_manifests_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "k8s.generate", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_notices_a_stale_file(tmp_path: Path) -> None:
    generate.write(tmp_path)
    assert generate.check(tmp_path) == []
    stale = tmp_path / "kafka-topics.yaml"
    stale.write_text(stale.read_text().replace("partitions: 2", "partitions: 3"))
    (problem,) = generate.check(tmp_path)
    assert "partitions: 3" in problem


def worker_deployments(resources: list[Resource]) -> dict[str, Resource]:
    """The Deployments of the table's workers, by worker name (their shop/worker label)."""
    return {
        d["metadata"]["labels"]["shop/worker"]: d
        for d in of_kind(resources, "Deployment", "apps")
        if d["metadata"]["labels"].get("shop/trigger") == "worker"
    }


def test_every_worker_of_the_table_runs_always_as_a_probed_scraped_deployment_of_its_service(
    rendered: dict[str, list[Resource]],
) -> None:
    deployed = list(table.WORKERS)
    assert {"outbox_relay", "ingest_worker"} <= {w.name for w in deployed}
    for overlay, resources in rendered.items():
        workers = worker_deployments(resources)
        assert sorted(workers) == sorted(w.name for w in deployed), overlay
        for worker in deployed:
            deployment = workers[worker.name]
            assert deployment["metadata"]["name"] == generate.service_name(worker.name)
            assert deployment["metadata"]["labels"]["shop/service"] == worker.service
            assert deployment["spec"]["replicas"] == worker.replicas, overlay
            template = deployment["spec"]["template"]
            selector = deployment["spec"]["selector"]["matchLabels"]
            assert selector.items() <= template["metadata"]["labels"].items()
            (container,) = template["spec"]["containers"]
            command = container["command"]
            assert command[:2] == ["python", "-m"] and importlib.util.find_spec(command[2]) is not None
            assert command[2] == worker.module
            assert container["args"] == [*worker.args, "--port", str(worker.port)]
            (named,) = container["ports"]
            assert (named["name"], named["containerPort"]) == ("metrics", worker.port)
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, overlay
            annotations = template["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
                str(worker.port),
                "/metrics",
            )
            assert [c["name"] for c in template["spec"]["initContainers"]] == ["wait-for-migrations"]
            names = {env["name"] for env in container["env"]}
            assert names - NOT_SETTINGS <= settings_variables(worker.service), overlay
            # traces go where the functions' go
            traced = {
                e["name"]
                for s in knative_services(resources)
                for e in s["spec"]["template"]["spec"]["containers"][0]["env"]
            }
            otlp = "OTEL_EXPORTER_OTLP_ENDPOINT"
            assert (otlp in names) == (otlp in traced), overlay


def test_the_outbox_relay_is_the_loms_deployment_the_makefile_execs_into(
    rendered: dict[str, list[Resource]],
) -> None:
    assert generate.service_name("outbox_relay") == generate.RELAY
    assert f"deploy/{generate.RELAY}" in (ROOT / "Makefile").read_text()
    for overlay, resources in rendered.items():
        relay = worker_deployments(resources)["outbox_relay"]
        assert relay["metadata"]["name"] == generate.RELAY
        (container,) = relay["spec"]["template"]["spec"]["containers"]
        assert container["command"][2] == "functions.loms.relay_worker", overlay
        names = {env["name"] for env in container["env"]}
        assert "LOMS_SHARD_DSNS" in names and "LOMS_KAFKA_BOOTSTRAP" in names


def test_orders_are_ingested_by_the_worker_alone_no_event_source_delivers_them(
    rendered: dict[str, list[Resource]],
) -> None:
    """One ingestion path: the ingest worker's Deployment, in both the Knative and the OpenFaaS overlays; no
    KafkaSource (Knative) nor event-source Deployment (OpenFaaS) reads `orders`, no function serves it."""
    worker = table.WORKER_BY_NAME["ingest_worker"]
    for overlay, resources in rendered.items():
        deployment = worker_deployments(resources)["ingest_worker"]
        assert deployment["metadata"]["name"] == "orders-ingest-worker"
        assert deployment["spec"]["replicas"] <= table.TOPICS[worker.topic], overlay
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 0  # a batch ends
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        names = {env["name"] for env in container["env"]}
        assert {"ORDERS_DATABASE_URL", "ORDERS_KAFKA_BOOTSTRAP"} <= names, overlay
        sources = of_kind(resources, "KafkaSource", "sources.knative.dev")
        assert all("orders" not in s["spec"]["topics"] for s in sources), overlay
        for d in of_kind(resources, "Deployment", "apps"):
            args = d["spec"]["template"]["spec"]["containers"][0].get("args", [])
            if "shared_lib.eventsource" in d["spec"]["template"]["spec"]["containers"][0].get("command", []):
                assert args[args.index("--topic") + 1] != "orders", (overlay, d["metadata"]["name"])
        assert "orders-ingest-order" not in {r["metadata"]["name"] for r in resources}, overlay
    assert "orders-ingest-order" not in generate.stack()["functions"]


def test_one_relay_path_the_worker_and_its_backstop_cron_in_every_overlay_and_the_dev_server(
    rendered: dict[str, list[Resource]],
) -> None:
    """The relay runs the same everywhere: the relay worker always, the relay_outbox cron function once a
    minute as its backstop (a PingSource on Knative, the cron-connector's annotations on OpenFaaS, the dev
    server's PingSource stand-in in make run), both publishing to Kafka through LOMS_KAFKA_BOOTSTRAP."""
    from functions import devserver

    cron = table.BY_NAME["relay_outbox"]
    assert (cron.trigger, cron.schedule) == ("cron", "* * * * *")
    for overlay, resources in rendered.items():
        (container,) = worker_deployments(resources)["outbox_relay"]["spec"]["template"]["spec"]["containers"]
        assert any(e["name"] == "LOMS_KAFKA_BOOTSTRAP" for e in container["env"]), overlay
        if overlay in KNATIVE_OVERLAYS:
            sources = of_kind(resources, "PingSource", "sources.knative.dev")
            pings = {p["metadata"]["name"]: p["spec"]["schedule"] for p in sources}
            assert pings[generate.service_name("relay_outbox")] == cron.schedule, overlay
    annotations = generate.stack()["functions"][generate.service_name("relay_outbox")]["annotations"]
    assert (annotations["topic"], annotations["schedule"]) == ("cron-function", cron.schedule)
    assert generate.OPENFAAS_PLAIN_ENV["loms"]["LOMS_KAFKA_BOOTSTRAP"] == generate.KAFKA_BOOTSTRAP
    stack = devserver.Stack({"LOMS_KAFKA_BOOTSTRAP": "127.0.0.1:19092"})
    assert stack.children()["outbox_relay"] == ["-m", "functions.loms.relay_worker"]
    assert stack.cron_seconds == 60.0  # the stand-in POSTs to every cron function once a minute


def test_a_worker_with_more_replicas_than_its_topics_partitions_is_refused() -> None:
    crowded = table.Worker(
        "crowded", "orders", "functions.orders.ingest_worker", port=9090, topic="orders", replicas=4
    )
    with pytest.raises(ValueError, match="replicas"):
        generate.worker_deployment(crowded)


def test_a_deployed_worker_without_a_port_is_refused() -> None:
    unprobed = table.Worker("unprobed", "loms", "functions.loms.relay_worker", port=0)
    with pytest.raises(ValueError, match="needs a port"):
        generate.worker_deployment(unprobed)


def selects(policy: Resource, labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert set(selector) <= {"matchLabels"}, "the shop's policies select by labels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_only_knatives_data_plane_reaches_the_internal_functions_pods(
    rendered: dict[str, list[Resource]],
) -> None:
    for overlay in KNATIVE_OVERLAYS:
        resources = rendered[overlay]
        policies = of_kind(resources, "NetworkPolicy", "networking.k8s.io")
        base = next(p for p in policies if p["metadata"]["name"] == "internal-functions-from-knative-only")
        (rule,) = base["spec"]["ingress"]
        (peer,) = rule["from"]
        (expression,) = peer["namespaceSelector"]["matchExpressions"]
        assert sorted(expression["values"]) == ["knative-serving", "kourier-system"]
        for function, service in by_function(knative_services(resources)).items():
            pod_labels = service["spec"]["template"]["metadata"]["labels"]
            selected = [p["metadata"]["name"] for p in policies if selects(p, pod_labels)]
            if table.BY_NAME[function].public:
                assert selected == [], (overlay, function)  # isolating a public function would cut it off
            else:
                assert base["metadata"]["name"] in selected, (overlay, function)
            for policy in policies:
                if policy is not base and selects(policy, pod_labels):
                    # any other policy (the observability component's scraper) opens named ports only
                    assert all(rule.get("ports") for rule in policy["spec"]["ingress"]), policy["metadata"]
