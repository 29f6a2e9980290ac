"""Route binding, body limits and the error table, through a real Flask app."""

from __future__ import annotations

import flask
import pydantic
import pytest

from shared_lib import web
from shared_lib.errors import NotFoundError, PreconditionError, TransientError

ROUTE = web.Route("f", "svc", "POST", "/user/{user_id:id}/cart/{sku:id}", precondition_status=412)


class Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True, extra="forbid")
    count: int


def endpoint(service: object, call: web.Call) -> web.Reply:
    body = call.json(Body)
    if body.count == 9:
        raise PreconditionError("nope")
    if body.count == 5:
        raise NotFoundError("gone")
    if body.count == 14:
        raise TransientError("db down")
    if body.count == 13:
        raise RuntimeError("SELECT secret FROM t")
    return web.ok({"user": call.id("user_id"), "sku": call.id("sku"), "count": body.count})


@pytest.fixture
def app() -> flask.Flask:
    app = flask.Flask("t")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "DELETE", "PUT"])
    @app.route("/<path:path>", methods=["GET", "POST", "DELETE", "PUT"])
    def any_path(path: str) -> flask.Response:
        return web.handle(flask.request, ROUTE, endpoint, lambda: object())

    return app


def test_binds_typed_params(app: flask.Flask) -> None:
    response = app.test_client().post("/user/7/cart/9", json={"count": 2})
    assert response.status_code == 200
    assert response.json == {"user": 7, "sku": 9, "count": 2}
    assert response.content_type == "application/json"


@pytest.mark.parametrize("user", ["0", "-1", "abc", "9223372036854775808", "1e3", "٣"])
def test_bad_ids_are_400(app: flask.Flask, user: str) -> None:
    response = app.test_client().post(f"/user/{user}/cart/9", json={"count": 2})
    assert response.status_code == 400
    assert response.json["code"] == 3
    assert set(response.json) == {"code", "message", "details"}


def test_unknown_path_and_wrong_method(app: flask.Flask) -> None:
    client = app.test_client()
    assert client.post("/user/1/basket/2", json={"count": 1}).status_code == 404
    response = client.get("/user/1/cart/2")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"", 400), (b"{", 400), (b'{"count": "2"}', 400), (b'{"count": 2, "x": 1}', 400), (b"\xff", 400)],
)
def test_malformed_bodies(app: flask.Flask, body: bytes, status: int) -> None:
    response = app.test_client().post("/user/1/cart/2", data=body, content_type="application/json")
    assert response.status_code == status
    assert response.json["code"] == 3


def test_body_over_a_mebibyte_is_413(app: flask.Flask) -> None:
    big = b'{"count": 1, "pad": "' + b"x" * (1024 * 1024) + b'"}'
    response = app.test_client().post("/user/1/cart/2", data=big, content_type="application/json")
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("count", "status", "code"), [(9, 412, 9), (5, 404, 5), (14, 503, 14), (13, 500, 13)]
)
def test_error_table(app: flask.Flask, count: int, status: int, code: int) -> None:
    response = app.test_client().post("/user/1/cart/2", json={"count": count})
    assert response.status_code == status
    assert response.json["code"] == code
    assert "SELECT" not in response.json["message"]


def test_precondition_status_follows_the_service() -> None:
    assert web.error_reply(PreconditionError("x"), precondition_status=400).status == 400
    assert web.error_reply(PreconditionError("x")).status == 412


def test_a_path_with_a_control_character_reaches_the_handler() -> None:
    import functions_framework
    from werkzeug.test import Client

    app = web.EscapedControlCharacters(
        functions_framework.create_app(target="get_product", source="functions/product/main.py")
    )
    response = Client(app).get("/product/%0A12", headers={"X-API-KEY": "testToken"})
    assert response.status_code == 400  # a malformed id, in the shop's JSON (not Flask's HTML 404)
    assert response.json["code"] == 3
    assert Client(app).get("/nowhere/%0A").json["code"] == 5
    assert Client(app).get("/product/1076963", headers={"X-API-KEY": "testToken"}).status_code == 200


def test_a_query_parameter_given_twice_is_refused() -> None:
    import functions_framework

    app = functions_framework.create_app(target="list_products", source="functions/product/main.py")
    response = app.test_client().get("/product?count=1&count=2", headers={"X-API-KEY": "testToken"})
    assert response.status_code == 400
    assert "count" in response.json["message"]
