"""The table of functions and workers: one namespace of names, workers that can run where the table says."""

from __future__ import annotations

import importlib.util

from functions import table


def test_function_and_worker_names_are_one_namespace_apart_from_the_services() -> None:
    names = [f.name for f in table.FUNCTIONS] + [w.name for w in table.WORKERS]
    assert len(names) == len(set(names))
    assert not set(names) & set(table.SERVICES)  # the dev server names its processes by them
    assert {table.row(n).name for n in names} == set(names)


def test_every_worker_is_a_module_of_a_known_service_with_a_port() -> None:
    for worker in table.WORKERS:
        assert worker.trigger == "worker"
        assert worker.service in table.SERVICES, worker.name
        assert importlib.util.find_spec(worker.module) is not None, worker.module
        assert worker.replicas >= 1
        assert 0 < worker.port < 65536, worker.name


def test_a_worker_consuming_a_topic_runs_no_more_replicas_than_its_partitions() -> None:
    for worker in table.WORKERS:
        if worker.topic:
            assert worker.topic in table.TOPICS and f"{worker.topic}.dlq" in table.TOPICS, worker.name
            assert worker.replicas <= table.TOPICS[worker.topic], worker.name


def test_one_relay_and_one_ingestion_path_both_workers_and_no_function_consumes_orders() -> None:
    relay, ingest = table.WORKER_BY_NAME["outbox_relay"], table.WORKER_BY_NAME["ingest_worker"]
    assert (relay.service, relay.module, relay.topic) == ("loms", "functions.loms.relay_worker", "")
    assert (ingest.service, ingest.module, ingest.topic) == (
        "orders",
        "functions.orders.ingest_worker",
        "orders",
    )
    assert [w.name for w in table.workers_of("loms")] == ["outbox_relay"]
    assert [w.name for w in table.workers_of("orders")] == ["ingest_worker"]
    assert "orders" not in {f.topic for f in table.FUNCTIONS}  # the worker is the only way orders come in
    # the relay's backstop: the cron function that drains the outbox when the worker is down
    assert table.BY_NAME["relay_outbox"].trigger == "cron"
