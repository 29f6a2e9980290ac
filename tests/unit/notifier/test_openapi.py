"""notifier's openapi.yaml against the function table and the real list_notifications handler (on fakes).

The document must accept exactly the queries the handler accepts, and describe every reply it gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import jsonschema_rs
import pytest
import yaml

from functions import table
from functions.notifier import bootstrap
from tests.unit.notifier.fakes import USER, Notifier, change

ROOT = Path(__file__).resolve().parents[3]
DOC: dict[str, Any] = yaml.safe_load((ROOT / "functions" / "notifier" / "openapi.yaml").read_text("utf-8"))
OPERATION: dict[str, Any] = DOC["paths"]["/notifications"]["get"]
INT64_MAX = 2**63 - 1
YEAR = {"user_id": str(USER), "from": "2026-01-01T00:00:00Z", "to": "2026-12-31T00:00:00Z"}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = DOC["components"][section][name]
    return node


def validator(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.Draft4Validator({**schema, "components": DOC["components"]})


@pytest.fixture
def call() -> Iterator[Any]:
    """call(query, method="GET", path="/notifications") through the real handler; the reply is checked to be
    documented (status listed, body valid against its schema, required headers present)."""
    notifier = Notifier()
    notifier.service.notify(change(1, order_id=1, status="paid"))
    notifier.bootstrap()
    client = functions_framework.create_app(
        target="list_notifications", source=str(ROOT / "functions/notifier/main.py")
    ).test_client()

    def run(query: dict[str, str], method: str = "GET", path: str = "/notifications") -> Any:
        response = client.open(path, method=method, query_string=query)
        responses = OPERATION["responses"]
        assert str(response.status_code) in responses, (response.status_code, response.json)
        documented = resolve(responses[str(response.status_code)])
        assert response.content_type == "application/json"
        schema = documented["content"]["application/json"]["schema"]
        assert [e.message for e in validator(schema).iter_errors(response.json)] == []
        for name, header in documented.get("headers", {}).items():
            assert not header.get("required") or name in response.headers
        return response

    run.notifier = notifier  # type: ignore[attr-defined]
    yield run
    bootstrap.reset()


def test_every_notifier_http_route_is_documented_and_nothing_else() -> None:
    documented = {
        (path, method.upper(), op["operationId"])
        for path, item in DOC["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    }
    http = {
        (r.path, r.method, r.function) for r in table.routes_of("notifier") if r.function != "notify_status"
    }
    assert documented == http


def test_the_parameters_are_the_ones_the_handler_reads() -> None:
    names = {p["name"]: p for p in (resolve(p) for p in OPERATION["parameters"])}
    assert set(names) == {"user_id", "from", "to"}
    assert all(p["required"] and p["in"] == "query" for p in names.values())
    assert names["user_id"]["schema"] == {
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": INT64_MAX,
    }


@pytest.mark.parametrize("user_id", [1, INT64_MAX, 0, -1, INT64_MAX + 1], ids=repr)
def test_the_document_accepts_exactly_the_user_ids_the_handler_accepts(call: Any, user_id: int) -> None:
    schema = resolve(OPERATION["parameters"][0])["schema"]
    response = call({**YEAR, "user_id": str(user_id)})
    assert validator(schema).is_valid(user_id) == (response.status_code == 200)


def test_every_reply_is_documented(call: Any) -> None:
    assert call(YEAR).headers["X-Cache"] == "miss"
    assert call(YEAR).headers["X-Cache"] == "hit"
    call({**YEAR, "user_id": "x"})
    call({**YEAR, "from": YEAR["to"], "to": YEAR["from"]})
    call({**YEAR, "extra": "1"})
    call(YEAR, method="POST")  # 405
    call(YEAR, path="/notifications/1")  # 404
    call.notifier.db.down = True
    call({**YEAR, "user_id": "2"})  # 503
