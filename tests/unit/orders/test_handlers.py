"""get_order and order_page through the real functions-framework apps, and the ingest worker's handling of a
polled batch, on in-memory fakes; get_order's and order_page's replies checked against
functions/orders/openapi.yaml."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import jsonschema_rs
import pytest
import yaml
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from functions import table
from functions.orders import bootstrap, consumer
from functions.orders.service import cache_key
from shared_lib import web
from shared_lib.cache import InProcessCache
from shared_lib.errors import TransientError
from tests.unit.orders.fakes import SAMPLE_BYTES, Viewer, record, sample

ROOT = Path(__file__).resolve().parents[3]
MAIN = str(ROOT / "functions/orders/main.py")
DOC: dict[str, Any] = yaml.safe_load((ROOT / "functions/orders/openapi.yaml").read_text("utf-8"))
UID = "b563feb7b2b84b6test"

_apps: dict[str, FlaskClient] = {}


def app(target: str) -> FlaskClient:
    if target not in _apps:
        _apps[target] = functions_framework.create_app(target=target, source=MAIN).test_client()
    return _apps[target]


def json_of(response: TestResponse) -> Any:
    """The answer's JSON body (werkzeug types it `Any | None`: None when the answer is not JSON)."""
    return response.json


@pytest.fixture
def viewer() -> Iterator[Viewer]:
    v = Viewer()
    v.bootstrap()
    yield v
    bootstrap.reset()


def ingest(body: bytes, offset: int = 17, partition: int = 1) -> None:
    """What the ingest worker does with a polled batch (ingest_forever's handler), for one record."""
    consumer.ingest(bootstrap.orders_service(), [record(body, offset=offset, partition=partition)])


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = DOC["components"][section][name]
    return node


def documented(response: Any, path: str) -> None:
    """The reply is one the document describes: its status, its content type, its body's schema."""
    operation = DOC["paths"][path]["get"]
    assert str(response.status_code) in operation["responses"], response.status_code
    spec = resolve(operation["responses"][str(response.status_code)])
    (content_type, media), *_ = spec["content"].items()
    assert response.mimetype == content_type
    if content_type == "application/json":
        validator = jsonschema_rs.Draft4Validator({**media["schema"], "components": DOC["components"]})
        assert [e.message for e in validator.iter_errors(response.json)] == []
    for name, header in spec.get("headers", {}).items():
        assert not header.get("required") or name in response.headers


# --- the ingest worker's batch handling -------------------------------------------------------------------


@pytest.mark.function("ingest_worker")
def test_an_order_is_stored_and_a_redelivery_changes_nothing(viewer: Viewer) -> None:
    ingest(SAMPLE_BYTES)
    ingest(SAMPLE_BYTES)  # a redelivery (a restart before the offsets were committed)
    assert list(viewer.orders.orders) == [UID]
    assert viewer.counters.snapshot() == {"stored": 1, "duplicate": 1}
    assert viewer.dead_letters.letters == []


@pytest.mark.function("ingest_worker")
def test_a_body_that_is_not_json_is_dead_lettered_with_its_bytes_and_offset(viewer: Viewer) -> None:
    ingest(b'{"order_uid": ')
    ingest(json.dumps(sample(sm_id="99")).encode())
    first, second = viewer.dead_letters.letters
    assert (first.record.value, first.record.partition, first.record.offset) == (b'{"order_uid": ', 1, 17)
    assert first.reason == "invalid: not JSON"
    assert second.reason.startswith("invalid: sm_id")
    assert viewer.orders.orders == {}


@pytest.mark.function("ingest_worker")
@pytest.mark.parametrize(
    "body", [b'{"sm_id": ' + b"1" * 5000 + b"}", b"[" * 100_000], ids=["huge-number", "deep"]
)
def test_json_python_cannot_hold_is_dead_lettered_with_its_bytes_never_dropped(
    viewer: Viewer, body: bytes
) -> None:
    """A number of thousands of digits or deep nesting fails to decode: the record goes to the dead-letter
    topic with its own bytes, where it came from and why, and the stream goes on (nothing stored)."""
    ingest(body, offset=5, partition=2)
    (letter,) = viewer.dead_letters.letters
    assert (letter.record.value, letter.record.partition, letter.record.offset) == (body, 2, 5)
    assert letter.reason == "invalid: not JSON"
    assert viewer.orders.orders == {}
    assert viewer.counters.snapshot() == {"invalid": 1}


@pytest.mark.function("ingest_worker")
def test_the_database_down_fails_the_batch_so_the_worker_retries_it(viewer: Viewer) -> None:
    viewer.orders.down = True
    with pytest.raises(TransientError):  # the stream rewinds to the batch and tries it again
        ingest(SAMPLE_BYTES)
    assert viewer.dead_letters.letters == [] and viewer.counters.snapshot() == {}
    viewer.orders.down = False
    ingest(SAMPLE_BYTES)
    assert list(viewer.orders.orders) == [UID]


# --- get_order -----------------------------------------------------------------------------------------


@pytest.mark.function("get_order")
def test_get_order_answers_exactly_the_sample_with_x_cache(viewer: Viewer) -> None:
    viewer.warm_cache = False
    viewer.bootstrap()  # the root again, on the same fakes, with the cache left cold
    ingest(SAMPLE_BYTES)
    first = app("get_order").get(f"/order/{UID}")
    assert (first.status_code, first.headers["X-Cache"]) == (200, "miss")
    assert first.get_data(as_text=True) == json.dumps(json.loads(SAMPLE_BYTES), separators=(",", ":"))
    documented(first, "/order/{order_uid}")
    second = app("get_order").get(f"/order/{UID}")
    assert (second.headers["X-Cache"], second.get_data()) == ("hit", first.get_data())


@pytest.mark.function("get_order")
def test_get_order_answers_the_same_bytes_from_the_database_either_cache_tier_and_as_before() -> None:
    """The answer of a miss, of a Memcached-tier hit and of a hit in this process: one status, one body, the
    same headers (X-Cache aside: `hit` from either tier); and the body, its type and length are what Flask
    answered when the order was decoded and encoded again per request (web.to_flask of the dict)."""
    viewer = Viewer(warm_cache=False, local=InProcessCache(name="orders-local"))
    viewer.bootstrap()
    try:
        named = sample(delivery={**sample()["delivery"], "name": "Тест Тестов", "city": "Кирьят-Моцкин"})
        ingest(json.dumps(named, ensure_ascii=False).encode())
        miss = app("get_order").get(f"/order/{UID}")  # the database; now in both tiers
        local = app("get_order").get(f"/order/{UID}")
        assert viewer.local is not None
        viewer.local.delete(cache_key(UID))
        shared = app("get_order").get(f"/order/{UID}")  # Memcached's stand-in; this process keeps it again
        again = app("get_order").get(f"/order/{UID}")
    finally:
        bootstrap.reset()
    assert [r.headers["X-Cache"] for r in (miss, local, shared, again)] == ["miss", "hit", "hit", "hit"]
    assert viewer.orders.reads == 1

    def answer(response: TestResponse) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [(k, "…" if k == "X-Cache" else v) for k, v in response.headers.items()]
        return response.status_code, headers, response.get_data()

    assert answer(miss) == answer(local) == answer(shared) == answer(again)
    before = web.to_flask(web.Reply(200, json.loads(miss.get_data()), {"X-Cache": "hit"}))
    assert miss.get_data() == before.get_data()
    assert json.loads(miss.get_data()) == named
    assert (miss.content_type, miss.content_length) == (before.content_type, before.content_length)
    documented(local, "/order/{order_uid}")


@pytest.mark.function("get_order")
@pytest.mark.parametrize(
    ("path", "status", "code"),
    [("/order/unknown", 404, 5), ("/order/a%20b", 400, 3), ("/order/" + "x" * 129, 400, 3)],
)
def test_get_order_errors_are_the_contract_json(viewer: Viewer, path: str, status: int, code: int) -> None:
    response = app("get_order").get(path)
    assert response.status_code == status
    assert json_of(response)["code"] == code and json_of(response)["details"] == []
    documented(response, "/order/{order_uid}")


@pytest.mark.function("get_order")
def test_get_order_other_methods_and_the_database_down(viewer: Viewer) -> None:
    response = app("get_order").post(f"/order/{UID}")
    assert (response.status_code, response.headers["Allow"]) == (405, "GET")
    viewer.orders.down = True
    response = app("get_order").get("/order/other")
    assert (response.status_code, json_of(response)["code"]) == (503, 14)


# --- order_page ------------------------------------------------------------------------------------------


@pytest.mark.function("order_page")
def test_the_page_is_html_with_the_recent_orders_in_it(viewer: Viewer) -> None:
    ingest(SAMPLE_BYTES)
    response = app("order_page").get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    documented(response, "/")
    page = response.get_data(as_text=True)
    assert '<label for="uid">Order UID</label>' in page
    config = json.loads(page.split("const CONFIG = ", 1)[1].split(";\n", 1)[0])
    assert config["recent"][0]["order_uid"] == UID and config["apiUrl"] == ""
    assert "https://" not in page and "http://" not in page  # nothing fetched from elsewhere
    assert "'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.function("order_page")
def test_a_stored_value_cannot_break_out_of_the_page_script(viewer: Viewer) -> None:
    from functions.orders.api import render_page
    from functions.orders.domain import OrderSummary
    from tests.unit.orders.fakes import NOW

    page = render_page([OrderSummary("x", NOW, 1, "</script><script>alert(1)</script>", 1)], "")
    assert page.count("</script>") == 1


@pytest.mark.function("order_page")
def test_the_page_renders_without_its_list_when_the_database_is_down(viewer: Viewer) -> None:
    viewer.orders.down = True
    response = app("order_page").get("/")
    assert response.status_code == 200
    assert '"recent": []' in response.get_data(as_text=True)
    assert app("order_page").post("/").status_code == 405
    assert app("order_page").get("/nope").status_code == 404


def test_every_orders_http_route_is_documented_and_nothing_else() -> None:
    documented_ops = {
        (path, method.upper(), op["operationId"])
        for path, item in DOC["paths"].items()
        for method, op in item.items()
    }
    http = {(r.path, r.method, r.function) for r in table.routes_of("orders")}
    assert documented_ops == http
