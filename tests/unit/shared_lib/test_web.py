"""Route binding, body limits and the error table, through a real Flask app."""

from __future__ import annotations

from typing import Any

import flask
import pydantic
import pytest
from werkzeug.test import TestResponse

from shared_lib import web
from shared_lib.errors import NotFoundError, PreconditionError, TransientError

ROUTE = web.Route("f", "svc", "POST", "/user/{user_id:id}/cart/{sku:id}", precondition_status=412)


def json_of(response: TestResponse) -> Any:
    """The answer's JSON body (werkzeug types it `Any | None`: None when the answer is not JSON)."""
    return response.json


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
    assert json_of(response)["code"] == 3
    assert set(json_of(response)) == {"code", "message", "details"}


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
    assert json_of(response)["code"] == 3


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
    assert json_of(response)["code"] == code
    assert "SELECT" not in json_of(response)["message"]


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
    assert json_of(response)["code"] == 3
    assert json_of(Client(app).get("/nowhere/%0A"))["code"] == 5
    assert Client(app).get("/product/1076963", headers={"X-API-KEY": "testToken"}).status_code == 200


def test_a_query_parameter_given_twice_is_refused() -> None:
    import functions_framework

    app = functions_framework.create_app(target="list_products", source="functions/product/main.py")
    response = app.test_client().get("/product?count=1&count=2", headers={"X-API-KEY": "testToken"})
    assert response.status_code == 400
    assert "count" in response.json["message"]


# --- HTTP edges: HEAD, media types, auth order, framework errors, body limits -------------------------

GET_ROUTE = web.Route("g", "svc", "GET", "/user/{user_id:id}")


def get_endpoint(service: object, call: web.Call) -> web.Reply:
    return web.Reply(200, {"user": call.id("user_id")}, {"X-Cache": "miss"})


def any_path_app(route: web.Route, endpoint: object, **options: object) -> flask.Flask:
    app = flask.Flask("t")

    @app.route("/", defaults={"path": ""}, methods=["GET", "HEAD", "POST", "DELETE", "PUT"])
    @app.route("/<path:path>", methods=["GET", "HEAD", "POST", "DELETE", "PUT"])
    def any_path(path: str) -> flask.Response:
        return web.handle(flask.request, route, endpoint, lambda: object(), **options)  # type: ignore[arg-type]

    return app


def test_head_on_a_get_route_answers_as_get_without_a_body() -> None:
    client = any_path_app(GET_ROUTE, get_endpoint).test_client()
    got = client.get("/user/7")
    head = client.head("/user/7")
    assert (head.status_code, head.get_data()) == (200, b"")
    assert head.headers["Content-Type"] == "application/json"
    assert head.headers["Content-Length"] == got.headers["Content-Length"] != "0"
    assert head.headers["X-Cache"] == "miss"
    assert client.head("/user/0").status_code == 400  # the GET's answer, without its body


def test_head_is_not_a_way_into_other_methods(app: flask.Flask) -> None:
    response = app.test_client().head("/user/1/cart/2")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonp",
        "json",
    ],
)
def test_a_body_of_another_media_type_is_415_and_nothing_runs(content_type: str) -> None:
    ran: list[web.Call] = []

    def endpoint(service: object, call: web.Call) -> web.Reply:
        ran.append(call)
        return web.ok({})

    client = any_path_app(ROUTE, endpoint).test_client()
    response = client.post("/user/1/cart/2", data=b'{"count": 1}', headers={"Content-Type": content_type})
    assert response.status_code == 415, content_type
    assert json_of(response) == {"code": 3, "message": json_of(response)["message"], "details": []}
    assert "application/json" in json_of(response)["message"]
    assert ran == []


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ],
)
def test_json_media_types_and_no_content_type_are_accepted(
    app: flask.Flask, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = app.test_client().post("/user/1/cart/2", data=b'{"count": 2}', headers=headers)
    assert response.status_code == 200, content_type
    assert response.json == {"user": 1, "sku": 2, "count": 2}


def test_a_get_route_does_not_judge_a_content_type() -> None:
    client = any_path_app(GET_ROUTE, get_endpoint).test_client()
    assert client.get("/user/7", headers={"Content-Type": "text/plain"}).status_code == 200


def test_a_get_route_reads_no_body_and_its_endpoint_sees_none() -> None:
    seen: list[web.Call] = []

    def endpoint(service: object, call: web.Call) -> web.Reply:
        seen.append(call)
        return get_endpoint(service, call)

    client = any_path_app(GET_ROUTE, endpoint).test_client()
    big = b"x" * (web.MAX_BODY_BYTES + 10)  # a POST's body of this size is a 413 (above)
    response = client.get("/user/7", data=big, headers={"Content-Type": "text/plain"})
    assert (response.status_code, json_of(response)) == (200, {"user": 7})
    assert [call.body for call in seen] == [b""]


def test_authentication_comes_before_parsing_the_request() -> None:
    from shared_lib.errors import UnauthenticatedError

    def authenticate(service: object, headers: object) -> None:
        if flask.request.headers.get("X-API-KEY") != "k":
            raise UnauthenticatedError("no key")

    client = any_path_app(ROUTE, endpoint, authenticate=authenticate).test_client()
    for path, body in (
        ("/user/0/cart/2", b'{"count": 1}'),
        ("/user/1/cart/2?x=1&x=2", b"{"),
        ("/user/1/cart/2", b"{"),
    ):
        response = client.post(path, data=body, content_type="application/json")
        assert response.status_code == 401, path
        assert json_of(response)["code"] == 16
    keyed = client.post("/user/0/cart/2", json={"count": 1}, headers={"X-API-KEY": "k"})
    assert keyed.status_code == 400
    assert (
        client.post("/user/1/basket/2", json={"count": 1}).status_code == 404
    )  # no such route: no key asked


def test_framework_http_errors_answer_the_shops_json() -> None:
    from werkzeug.exceptions import UnsupportedMediaType

    app = flask.Flask("t")
    web.answer_http_errors_in_json(app)

    @app.route("/only-post", methods=["POST"])
    def only_post() -> str:
        raise UnsupportedMediaType("Did not attempt to load JSON data <b>html</b>")

    @app.route("/echo", methods=["POST"])
    def echo() -> str:
        flask.abort(400, description=f"Got data: {flask.request.get_data()!r}")

    client = app.test_client()
    cases = [
        (client.post("/only-post"), 415, 3),
        (client.get("/only-post"), 405, 3),
        (client.get("/nowhere"), 404, 5),
        (client.post("/echo", data=b"<secret>"), 400, 3),
    ]
    for response, status, code in cases:
        assert response.status_code == status
        assert response.content_type == "application/json"
        assert set(json_of(response)) == {"code", "message", "details"}
        assert json_of(response)["code"] == code
        assert "<" not in json_of(response)["message"]  # neither HTML nor the caller's input
    assert "POST" in client.get("/only-post").headers["Allow"].split(", ")


def echo_app(environ: dict[str, object], start_response: object) -> list[bytes]:
    stream = environ["wsgi.input"]
    body = stream.read()  # type: ignore[attr-defined]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])  # type: ignore[operator]
    return [body]


def test_a_declared_body_over_the_limit_is_413_before_the_app_reads_it() -> None:
    from werkzeug.test import Client

    called: list[bool] = []

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        called.append(True)
        return echo_app(environ, start_response)

    client = Client(web.BodyLimit(app, max_bytes=100))
    response = client.post("/events/x", data=b"x" * 101)
    assert response.status_code == 413
    assert response.json == {"code": 3, "message": "request body is over 100 bytes", "details": []}
    assert called == []
    assert client.post("/events/x", data=b"y" * 100).get_data() == b"y" * 100


def test_a_chunked_body_over_the_limit_is_413() -> None:
    import io

    from werkzeug.test import Client, EnvironBuilder

    client = Client(web.BodyLimit(echo_app, max_bytes=100))
    for size, status in ((101, 413), (10_000_000, 413), (100, 200), (0, 200)):
        builder = EnvironBuilder(
            path="/events/x",
            method="POST",
            input_stream=io.BytesIO(b"z" * size),
            headers=[("Transfer-Encoding", "chunked")],
        )
        environ = builder.get_environ()
        environ["wsgi.input_terminated"] = True  # as gunicorn says of a chunked body it de-chunks
        response = client.open(environ)
        assert response.status_code == status, size
        if status == 200:
            assert response.get_data() == b"z" * size


def test_a_request_without_a_body_is_passed_on_as_it_came() -> None:
    """No Content-Length and no Transfer-Encoding: no body (RFC 9112 6.3), even where the server marks every
    input as terminated (gunicorn, gevent's pywsgi): the app gets the very environ, its input unread."""
    import io

    stream = io.BytesIO(b"")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/order/x",
        "wsgi.input": stream,
        "wsgi.input_terminated": True,
    }
    seen: list[dict[str, Any]] = []

    def app(given: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(given)
        start_response("200 OK", [])
        return [b""]

    web.BodyLimit(app, max_bytes=100)(environ, lambda *_args: None)
    assert seen[0] is environ and environ["wsgi.input"] is stream and stream.tell() == 0


def test_an_observed_request_body_is_parsed_once_for_its_log_context_and_its_endpoint() -> None:
    from shared_lib.observability import logs

    seen: list[Any] = []

    def remember(service: object, call: web.Call) -> web.Reply:
        seen.append(call.parsed)
        return web.ok({"count": call.json(Body).count})

    app = flask.Flask("t")

    @app.route("/<path:path>", methods=["POST"])
    def any_path(path: str) -> flask.Response:
        with logs.request_context("svc", "f") as context:
            response = web.handle(flask.request, ROUTE, remember, lambda: object())
            seen.append(dict(context))
        return response

    client = app.test_client()
    assert client.post("/user/7/cart/9", json={"count": 2}).json == {"count": 2}
    parsed, context = seen
    assert parsed == {"count": 2}  # the log context's parse, handed to call.json
    assert context["user_id"] == 7 and context["sku"] == 9
    seen.clear()
    invalid = client.post("/user/7/cart/9", data=b"{", content_type="application/json")
    assert invalid.status_code == 400 and json_of(invalid)["code"] == 3
    seen.clear()
    # a body that is no JSON object is not parsed on the way in: call.json parses it and refuses it
    refused = client.post("/user/7/cart/9", data=b"[1]", content_type="application/json")
    assert refused.status_code == 400
    assert seen[0] is not None and not isinstance(seen[0], (dict, list))
