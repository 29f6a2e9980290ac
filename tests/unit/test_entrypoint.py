"""The container entry point in-process: health routes around a function's app, the argv, shutdown hooks.

Serving through gunicorn and SIGTERM draining are exercised on a real process in tests/cluster/test_image.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from werkzeug.test import Client

from functions import entrypoint, table
from shared_lib import lifecycle


@pytest.fixture(autouse=True)
def fresh_lifecycle() -> Iterator[None]:
    lifecycle.reset()
    yield
    lifecycle.reset()


@pytest.fixture(scope="module")
def product_client() -> Client:
    return Client(entrypoint.function_app("get_product"))


def test_command_runs_the_module_with_the_target() -> None:
    assert entrypoint.command("list_cart") == [
        "python",
        "-m",
        "functions.entrypoint",
        "--target",
        "list_cart",
    ]


def test_the_function_answers_beside_the_health_routes(product_client: Client) -> None:
    response = product_client.get("/product/1076963", headers={"X-API-KEY": "testToken"})
    assert response.status_code == 200
    assert response.get_json()["sku"] == 1076963
    assert product_client.get("/product/1076963").status_code == 401


def test_healthz_and_readyz_answer_ok(product_client: Client) -> None:
    for path in ("/healthz", "/readyz"):
        response = product_client.get(path)
        assert response.status_code == 200, path
        assert response.get_json() == {"status": "ok", "function": "get_product"}
        assert response.headers["Content-Type"] == "application/json"


def test_readyz_turns_false_while_draining_and_healthz_stays_true(product_client: Client) -> None:
    lifecycle.begin_shutdown()
    assert product_client.get("/readyz").status_code == 503
    assert product_client.get("/healthz").status_code == 200


def test_other_methods_on_health_paths_reach_the_function(product_client: Client) -> None:
    # the function's own routing answers: /healthz is not its route
    assert product_client.post("/healthz").status_code == 404


def test_unknown_target_is_refused() -> None:
    with pytest.raises(ValueError, match="no function"):
        entrypoint.function_app("no_such_function")
    with pytest.raises(SystemExit):
        entrypoint.main(["--target", "no_such_function"])


def test_every_http_function_of_the_table_builds_an_app() -> None:
    for function in table.FUNCTIONS:
        if function.service in ("product", "cart") and function.trigger == "http":
            assert callable(entrypoint.function_app(function.name))


def test_worker_exit_runs_the_shutdown_hooks_last_registered_first() -> None:
    ran: list[str] = []
    lifecycle.on_shutdown(lambda: ran.append("pool"))
    lifecycle.on_shutdown(lambda: ran.append("producer"))
    entrypoint.worker_exit(None, None)
    assert ran == ["producer", "pool"]
    assert lifecycle.shutting_down()
    entrypoint.worker_exit(None, None)  # hooks run once
    assert ran == ["producer", "pool"]


def test_a_failing_hook_does_not_stop_the_others() -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("close failed")

    lifecycle.on_shutdown(lambda: ran.append("pool"))
    lifecycle.on_shutdown(broken)
    errors = lifecycle.run_shutdown_hooks()
    assert ran == ["pool"]
    assert [str(e) for e in errors] == ["close failed"]


def test_on_shutdown_works_as_a_decorator() -> None:
    ran: list[str] = []

    @lifecycle.on_shutdown
    def close() -> None:
        ran.append("closed")

    lifecycle.run_shutdown_hooks()
    assert ran == ["closed"]
    assert callable(close)
