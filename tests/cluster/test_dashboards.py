"""The Grafana dashboards and the Prometheus scrape of the functions: every dashboard parses, every panel has
queries, and every metric a query names is one the code exports (the registry's names, collected after
importing the code), so a renamed metric cannot leave a panel silently empty."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared_lib.observability import metrics
from tests.cluster.conftest import Resource, of_kind

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = ROOT / "k8s" / "components" / "observability"
DASHBOARDS = sorted((COMPONENT / "dashboards").glob("*.json"))

# PromQL words that are not metric names
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
    "inf", "nan", "le",
}  # fmt: skip


def families() -> list[metrics.Family]:
    """Every metric family shared_lib defines (each is a module attribute of metrics)."""
    return [value for value in vars(metrics).values() if isinstance(value, metrics.Family)]


def exposed_names(family: metrics.Family) -> list[str]:
    """The sample names Prometheus stores for a family (what a PromQL query may name)."""
    if family.kind == "counter":
        base = family.name.removesuffix("_total")
        return [f"{base}_total", f"{base}_created"]
    if family.kind == "histogram":
        return [f"{family.name}_{s}" for s in ("bucket", "count", "sum", "created")]
    return [family.name]


def exported_names() -> set[str]:
    """The sample names the code's registry exposes, every family created (as after a full session)."""
    from prometheus_client.parser import text_string_to_metric_families

    import functions.cart.bootstrap
    import functions.loms.bootstrap
    import functions.notifier.bootstrap  # noqa: F401
    import shared_lib.eventsource  # noqa: F401

    for family in families():
        family.labels(*("x" for _ in family.labelnames))
    names: set[str] = set()
    for parsed in text_string_to_metric_families(metrics.render().decode()):
        names.update(sample.name for sample in parsed.samples)
        names.add(parsed.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS:
            continue
        found.add(name)
    return found


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # rows
    return [p for p in found if p.get("type") != "row"]


def test_the_metric_name_parser() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, kind) (rate(shop_db_query_duration_seconds_bucket{outcome="ok",'
        ' x=~"a b(c)"}[$__rate_interval]))) / on (kind) group_left sum(up) or vector(0)'
    )
    assert metric_names(expr) == {"shop_db_query_duration_seconds_bucket", "up"}


def test_there_are_dashboards_for_functions_events_and_dependencies() -> None:
    assert {p.stem for p in DASHBOARDS} == {"shop-functions", "shop-events", "shop-dependencies"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_queries_only_metrics_the_code_exports(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    exported = exported_names()
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(dashboard):
        targets = panel.get("targets", [])
        assert targets, f"{panel['title']}: no query"
        for target in targets:
            assert target["datasource"]["uid"] == "prometheus"
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']} names no metric"
            unknown = names - exported
            assert not unknown, f"{path.name} / {panel['title']}: {sorted(unknown)} is exported by no code"


def test_every_family_the_code_defines_is_on_some_dashboard() -> None:
    queried = {
        name
        for path in DASHBOARDS
        for panel in panels(json.loads(path.read_text()))
        for target in panel["targets"]
        for name in metric_names(target["expr"])
    }
    for family in families():
        assert set(exposed_names(family)) & queried, f"{family.name} is on no dashboard"


def test_grafana_provisions_the_dashboards_from_the_rendered_config_map(
    rendered: dict[str, list[Resource]],
) -> None:
    resources = rendered["observability"]
    maps = {m["metadata"]["name"]: m for m in of_kind(resources, "ConfigMap")}
    (dashboards,) = [m for name, m in maps.items() if name.startswith("grafana-dashboards")]
    assert sorted(dashboards["data"]) == sorted(p.name for p in DASHBOARDS)
    for text in dashboards["data"].values():
        json.loads(text)
    (grafana,) = [d for d in of_kind(resources, "Deployment") if d["metadata"]["name"] == "grafana"]
    volumes = {v["name"]: v for v in grafana["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dashboards"]["configMap"]["name"] == dashboards["metadata"]["name"]
    provider = yaml.safe_load(maps["grafana-dashboard-provider"]["data"]["shop.yaml"])
    (mount,) = [
        m
        for m in grafana["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if m["name"] == "dashboards"
    ]
    assert provider["providers"][0]["options"]["path"] == mount["mountPath"]
    sources = yaml.safe_load(maps["grafana-datasources"]["data"]["datasources.yaml"])
    assert "prometheus" in {s.get("uid") for s in sources["datasources"]}


def test_prometheus_scrapes_each_functions_own_metrics(rendered: dict[str, list[Resource]]) -> None:
    resources = rendered["observability"]
    (config,) = [m for m in of_kind(resources, "ConfigMap") if m["metadata"]["name"] == "prometheus-config"]
    jobs = {j["job_name"]: j for j in yaml.safe_load(config["data"]["prometheus.yml"])["scrape_configs"]}
    job = jobs["shop-functions"]
    rules = job["relabel_configs"]
    assert {"target_label": "__metrics_path__", "replacement": "/metrics"} in rules
    assert all(rule.get("target_label") != "function" for rule in rules), "the metrics' own label"
    container_rule = next(
        r for r in rules if "__meta_kubernetes_pod_container_name" in r.get("source_labels", [])
    )
    services = [s for s in of_kind(resources, "Service", "serving.knative.dev")]
    assert services
    for service in services:  # the rule keeps exactly each function's container and port
        (container,) = service["spec"]["template"]["spec"]["containers"]
        (port,) = container["ports"]
        assert re.fullmatch(container_rule["regex"], f"{container['name']};{port['containerPort']}")
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://jaeger.observability")
        assert env["SHOP_TRACE_SAMPLE_RATIO"] == "0.1", "the documented production default: 1 trace in 10"
