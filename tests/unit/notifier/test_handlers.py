"""notify_status and list_notifications through the real functions-framework apps, on in-memory fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient

from functions.notifier import bootstrap
from functions.notifier.settings import NotifierSettings
from tests.unit.notifier.fakes import USER, Notifier, change, cloud_event

MAIN = "functions/notifier/main.py"
YEAR = {"user_id": str(USER), "from": "2026-01-01T00:00:00Z", "to": "2026-12-31T00:00:00Z"}

_apps: dict[str, FlaskClient] = {}


def app(target: str) -> FlaskClient:
    if target not in _apps:
        _apps[target] = functions_framework.create_app(target=target, source=MAIN).test_client()
    return _apps[target]


@pytest.fixture
def notifier() -> Iterator[Notifier]:
    n = Notifier()
    n.bootstrap()
    yield n
    bootstrap.reset()


def post(headers: dict[str, str], body: bytes) -> Any:
    return app("notify_status").post("/", headers=headers, data=body)


def history(**query: str) -> Any:
    return app("list_notifications").get("/notifications", query_string=query)


def assert_error(response: Any, status: int, code: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    assert response.json["code"] == code
    assert response.json["details"] == []


# --- notify_status --------------------------------------------------------------------------------------


@pytest.mark.function("notify_status")
def test_an_event_is_recorded_delivered_and_acknowledged_once(notifier: Notifier) -> None:
    headers, body = cloud_event(change(1, order_id=1, status="awaiting payment"))
    for _ in range(3):
        assert post(headers, body).status_code == 200
    assert notifier.sink.events() == [1]
    assert notifier.sink.delivered[0].message == "Order 1 is reserved and awaiting payment"


@pytest.mark.function("notify_status")
def test_ids_may_come_as_decimal_text_and_unknown_fields_are_ignored(notifier: Notifier) -> None:
    headers, body = cloud_event(change(1), order_id="1", user_id=str(USER), trace="x")
    assert post(headers, body).status_code == 200
    assert notifier.sink.delivered[0].user_id == USER


POISON_VALUES: list[dict[str, Any]] = [
    {"status": "shipped"},
    {"status": None},
    {"order_id": 0},
    {"order_id": -1},
    {"order_id": 2**63},
    {"order_id": True},
    {"order_id": 1.5},
    {"user_id": "abc"},
    {"moment": "yesterday"},
    {"moment": "2026-11-22T08:00:00"},  # no offset
    {"moment": 1700000000},
    {"moment": "9999-12-31T23:59:59-01:00"},
]


@pytest.mark.function("notify_status")
@pytest.mark.parametrize("overrides", POISON_VALUES, ids=repr)
def test_a_payload_with_wrong_fields_is_acknowledged_counted_and_changes_nothing(
    notifier: Notifier, overrides: dict[str, Any]
) -> None:
    headers, body = cloud_event(change(1), **overrides)
    assert post(headers, body).status_code == 200
    assert notifier.counters.value("poison") == 1
    assert notifier.db.claimed == {}
    assert notifier.sink.delivered == []


@pytest.mark.function("notify_status")
@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe", b"", b"[]", b'"a string"', b'{"order_id": 1}'],
    ids=["text", "binary", "empty", "array", "string", "missing-fields"],
)
def test_a_body_that_is_not_the_event_is_acknowledged_and_counted(notifier: Notifier, body: bytes) -> None:
    headers, _ = cloud_event(change(1))
    assert post(headers, body).status_code == 200
    assert notifier.counters.value("poison") == 1
    assert notifier.db.claimed == {}


@pytest.mark.function("notify_status")
@pytest.mark.parametrize("body", [b"1" * 5000, b"[" * 100_000], ids=["huge-number", "deep"])
def test_data_the_sdk_cannot_decode_is_a_400_never_a_200(
    notifier: Notifier, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON Python cannot hold fails in the CloudEvents SDK before the handler runs: answered 400 (permanent:
    the event source dead-letters it with its bytes), logged and counted as poison, nothing recorded."""
    headers, _ = cloud_event(change(1))
    with caplog.at_level("ERROR", logger="functions.notifier.consumer"):
        assert_error(post(headers, body), 400, 3)
    assert notifier.counters.value("poison") == 1
    assert notifier.db.claimed == {}
    assert notifier.sink.delivered == []
    assert any("refused with 400" in r.getMessage() for r in caplog.records)


@pytest.mark.function("notify_status")
def test_a_structured_mode_event_is_read_as_well(notifier: Notifier) -> None:
    headers, body = cloud_event(change(1, order_id=1, status="paid"))
    envelope = {name[len("ce-") :]: value for name, value in headers.items() if name.startswith("ce-")} | {
        "datacontenttype": "application/json",
        "data": json.loads(body),
    }
    structured = {"Content-Type": "application/cloudevents+json"}
    assert post(structured, json.dumps(envelope).encode()).status_code == 200
    assert notifier.sink.events() == [1]


@pytest.mark.function("notify_status")
@pytest.mark.parametrize("ce_id", ["abc", "0", "-3", "9223372036854775808", "1.5"])
def test_an_event_id_that_is_not_an_outbox_row_id_is_poison(notifier: Notifier, ce_id: str) -> None:
    headers, body = cloud_event(change(1))
    headers["ce-id"] = ce_id
    assert post(headers, body).status_code == 200
    assert notifier.counters.value("poison") == 1


@pytest.mark.function("notify_status")
def test_a_wrong_specversion_is_poison(notifier: Notifier) -> None:
    headers, body = cloud_event(change(1))
    headers["ce-specversion"] = "0.3"
    assert post(headers, body).status_code == 200
    assert notifier.counters.value("poison") == 1


@pytest.mark.function("notify_status")
@pytest.mark.parametrize("down", ["db", "sink"], ids=["the-database", "the-sink"])
def test_an_outage_is_a_500_so_the_source_retries_and_the_redelivery_delivers(
    notifier: Notifier, down: str
) -> None:
    part = notifier.db if down == "db" else notifier.sink
    part.down = True
    headers, body = cloud_event(change(1))
    assert post(headers, body).status_code == 500
    part.down = False
    assert post(headers, body).status_code == 200
    assert notifier.sink.events() == [1]


# --- list_notifications ---------------------------------------------------------------------------------


@pytest.mark.function("list_notifications")
def test_the_history_as_the_contract_shows_it_with_x_cache(notifier: Notifier) -> None:
    notifier.service.notify(change(1, order_id=1, status="paid"))
    response = history(**YEAR)
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.headers["X-Cache"] == "miss"
    assert response.json == {
        "user_id": str(USER),
        "items": [
            {
                "order_id": "1",
                "status": "paid",
                "message": "Order 1 is paid",
                "created_at": "2026-11-22T08:00:01Z",
            }
        ],
    }
    again = history(**YEAR)
    assert again.headers["X-Cache"] == "hit"
    assert again.json == response.json


@pytest.mark.function("list_notifications")
def test_extreme_but_valid_bounds_are_accepted(notifier: Notifier) -> None:
    notifier.service.notify(change(1))
    query = {"from": "0001-01-01T00:00:00.123456789123Z", "to": "9999-12-31T23:59:59+00:00"}
    response = history(user_id=str(USER), **query)
    assert (response.status_code, len(response.json["items"])) == (200, 1)


@pytest.mark.function("list_notifications")
def test_a_user_without_notifications_has_an_empty_history(notifier: Notifier) -> None:
    response = history(**YEAR)
    assert response.status_code == 200
    assert response.json == {"user_id": str(USER), "items": []}


@pytest.mark.function("list_notifications")
def test_bounds_in_other_offsets_name_the_same_instants(notifier: Notifier) -> None:
    notifier.service.notify(change(1))
    response = history(
        user_id=str(USER), **{"from": "2026-11-22T11:00:01+03:00", "to": "2026-11-22t08:00:01z"}
    )
    assert len(response.json["items"]) == 1


BAD_QUERIES: list[dict[str, str]] = [
    {},
    {"from": YEAR["from"], "to": YEAR["to"]},
    {"user_id": "0", "from": YEAR["from"], "to": YEAR["to"]},
    {"user_id": "abc", "from": YEAR["from"], "to": YEAR["to"]},
    {"user_id": "9223372036854775808", "from": YEAR["from"], "to": YEAR["to"]},
    {"user_id": "1", "to": YEAR["to"]},
    {"user_id": "1", "from": YEAR["from"]},
    {"user_id": "1", "from": "2026-01-01", "to": YEAR["to"]},
    {"user_id": "1", "from": "2026-01-01T00:00:00", "to": YEAR["to"]},
    {"user_id": "1", "from": "2026-13-01T00:00:00Z", "to": YEAR["to"]},
    {"user_id": "1", "from": "1700000000", "to": YEAR["to"]},
    {"user_id": "1", "from": "0001-01-01T00:00:00+01:00", "to": YEAR["to"]},  # before year 1 in UTC
    {"user_id": "1", "from": YEAR["from"], "to": "9999-12-31T23:59:59-01:00"},  # after year 9999 in UTC
    {"user_id": "1", "from": "2026-01-01T00:00:60Z", "to": YEAR["to"]},  # a leap second Python cannot hold
    {"user_id": "1", "from": YEAR["to"], "to": YEAR["from"]},  # from after to
    {**YEAR, "limit": "10"},  # an unknown parameter
]


@pytest.mark.function("list_notifications")
@pytest.mark.parametrize("query", BAD_QUERIES, ids=repr)
def test_a_bad_query_is_400(notifier: Notifier, query: dict[str, str]) -> None:
    assert_error(history(**query), 400, 3)
    assert notifier.db.queries == 0


@pytest.mark.function("list_notifications")
def test_the_wrong_method_is_405_with_allow(notifier: Notifier) -> None:
    response = app("list_notifications").post("/notifications", query_string=YEAR)
    assert_error(response, 405, 3)
    assert response.headers["Allow"] == "GET"


@pytest.mark.function("list_notifications")
def test_an_unknown_path_is_404(notifier: Notifier) -> None:
    assert_error(app("list_notifications").get("/notification", query_string=YEAR), 404, 5)


@pytest.mark.function("list_notifications")
def test_a_database_outage_is_503(notifier: Notifier) -> None:
    notifier.db.down = True
    assert_error(history(**YEAR), 503, 14)


def test_responses_never_echo_the_input(notifier: Notifier) -> None:
    secret = "2026-01-01T00:00:00Z<script>"
    response = history(user_id="1", **{"from": secret, "to": YEAR["to"]})
    assert "<script>" not in json.dumps(response.json)


# --- only configured sources ----------------------------------------------------------------------------


@pytest.fixture
def sources(notifier: Notifier, monkeypatch: pytest.MonkeyPatch) -> Any:
    """set(value): NOTIFIER_EVENT_SOURCES as the deployment sets it (None: unset, the default); the notifier's
    root is built again on the same fakes with settings read from that environment."""

    def configure(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv("NOTIFIER_EVENT_SOURCES", raising=False)
        else:
            monkeypatch.setenv("NOTIFIER_EVENT_SOURCES", value)
        notifier.bootstrap(NotifierSettings())

    configure(None)
    return configure


def test_the_default_source_is_the_one_loms_emits() -> None:
    from functions.loms.service import EVENT_SOURCE
    from functions.notifier.settings import NotifierSettings

    assert NotifierSettings().accepted_sources == frozenset({EVENT_SOURCE})


@pytest.mark.function("notify_status")
@pytest.mark.parametrize("source", ["/evil", "/loms/", "/LOMS", " /loms"])
def test_an_event_from_another_source_is_refused_logged_and_counted(
    notifier: Notifier, sources: Any, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    headers, body = cloud_event(change(1, user_id=42))
    headers["ce-source"] = source  # (without a ce-source it is no CloudEvent: the SDK's 400 answers)
    with caplog.at_level("WARNING", logger="functions.notifier.consumer"):
        response = post(headers, body)
    assert_error(response, 403, 7)
    assert notifier.db.claimed == {}
    assert notifier.sink.delivered == []
    assert notifier.counters.value("untrusted_source") == 1
    assert notifier.counters.value("poison") == 0
    assert any("untrusted source" in r.getMessage() for r in caplog.records)


@pytest.mark.function("notify_status")
def test_an_unreadable_event_from_another_source_is_refused_too(notifier: Notifier, sources: Any) -> None:
    headers, _ = cloud_event(change(1))
    headers["ce-source"] = "/evil"
    assert_error(post(headers, b"1" * 5000), 403, 7)  # the SDK cannot decode it: refused all the same
    assert notifier.counters.value("untrusted_source") == 1
    assert notifier.counters.value("poison") == 0


@pytest.mark.function("notify_status")
def test_the_accepted_sources_are_configured(notifier: Notifier, sources: Any) -> None:
    sources(" /loms , /loms-eu ")
    for event_id, source in ((1, "/loms"), (2, "/loms-eu")):
        headers, body = cloud_event(change(event_id, order_id=event_id, source=source))
        assert post(headers, body).status_code == 200
    assert notifier.sink.events() == [1, 2]
    sources("/loms-eu")
    headers, body = cloud_event(change(3, order_id=3))
    assert_error(post(headers, body), 403, 7)
    assert notifier.sink.events() == [1, 2]
