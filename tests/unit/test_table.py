"""The table of functions and workers: one namespace of names, workers that can run where the table says."""

from __future__ import annotations

import importlib.util

from functions import table


def test_function_and_worker_names_are_one_namespace_apart_from_the_services() -> None:
    names = [f.name for f in table.FUNCTIONS] + [w.name for w in table.WORKERS]
    assert len(names) == len(set(names))
    assert not set(names) & set(table.SERVICES)  # the dev server names its processes by them
    assert {table.row(n).name for n in names} == set(names)


def test_every_worker_is_a_module_of_a_known_service_and_a_deployed_one_has_a_port() -> None:
    for worker in table.WORKERS:
        assert worker.trigger == "worker"
        assert worker.service in table.SERVICES, worker.name
        assert importlib.util.find_spec(worker.module) is not None, worker.module
        assert worker.replicas >= 1
        if worker.deployed:
            assert 0 < worker.port < 65536, worker.name


def test_a_worker_stands_in_only_for_a_cloudevent_function_of_its_own_service() -> None:
    for worker in table.WORKERS:
        if worker.stands_in_for:
            function = table.BY_NAME[worker.stands_in_for]
            assert function.trigger == "cloudevent" and function.service == worker.service, worker.name


def test_the_relay_is_deployed_and_the_ingest_worker_is_the_dev_servers_only() -> None:
    relay, ingest = table.WORKER_BY_NAME["outbox_relay"], table.WORKER_BY_NAME["ingest_worker"]
    assert (relay.service, relay.module, relay.deployed) == ("loms", "functions.loms.relay_worker", True)
    assert (ingest.service, ingest.module) == ("orders", "functions.orders.ingest_worker")
    assert (ingest.stands_in_for, ingest.deployed) == ("ingest_order", False)
    assert [w.name for w in table.workers_of("loms")] == ["outbox_relay"]
