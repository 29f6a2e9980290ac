"""HTTP plumbing every function shares: route binding, body and query parsing, the one error table.

Handlers call `handle`; services never see Flask. The request's key ids (user, order, sku) go to its span and
log lines from here (the request itself is timed and traced around the function: shared_lib.observability).
What never reaches a handler answers in the same JSON error shape: Flask's and functions-framework's own HTTP
errors (`answer_http_errors_in_json`), a body over the limit (`BodyLimit`). Nothing here knows about a
particular service.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import flask
import pydantic
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import parse_options_header

from shared_lib.errors import (
    GRPC_FAILED_PRECONDITION,
    DomainError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    InvalidInputError,
    NotFoundError,
    PreconditionError,
    RateLimitedError,
    ShopError,
    TransientError,
    UnauthenticatedError,
)
from shared_lib.ints import INT64_MAX as INT64_MAX
from shared_lib.ints import NotAnInteger, OutOfRange, parse_int
from shared_lib.observability import server as observed

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")

S = TypeVar("S")
M = TypeVar("M", bound=pydantic.BaseModel)


class MethodNotAllowedError(ShopError):
    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = sorted(set(allowed))
        super().__init__("method not allowed; allowed: " + ", ".join(self.allowed))


class PayloadTooLargeError(ShopError):
    pass


class UnsupportedMediaTypeError(ShopError):
    pass


class RouteNotFoundError(NotFoundError):
    pass


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP function's route: `{name:id}` segments are positive int64, `{name}` any segment."""

    function: str
    service: str
    method: str
    path: str
    precondition_status: int = 412
    idempotent: bool = False

    def allows(self, method: str) -> bool:
        """The route's method, and HEAD on a GET route (answered as the GET, without its body)."""
        return method == self.method or (method == "HEAD" and self.method == "GET")

    @property
    def takes_body(self) -> bool:
        """Whether a request body is the route's input, so its media type must be JSON (GET reads none)."""
        return self.method not in ("GET", "HEAD")

    def segments(self) -> list[str]:
        return list(_template(self.path))

    def match(self, path: str) -> list[str] | None:
        """The path's segments when the path has the route's shape, else None."""
        pattern = _template(self.path)
        given = [s for s in path.split("/") if s]
        if len(pattern) != len(given):
            return None
        for p, g in zip(pattern, given, strict=True):
            if p != g and not p.startswith("{"):
                return None
        return given

    def matches(self, path: str) -> bool:
        return self.match(path) is not None

    def params_of(self, given: list[str]) -> dict[str, int | str]:
        """Typed path parameters of a path already split into its segments (`match`'s answer); a malformed id
        is an InvalidInputError (the path's shape is known)."""
        values: dict[str, int | str] = {}
        for (name, kind), value in zip(_parameters(self.path), given, strict=True):
            if name:
                values[name] = parse_id(value, name) if kind == "id" else value
        return values


@functools.lru_cache(maxsize=256)
def _template(path: str) -> tuple[str, ...]:
    """A route template's segments: split once per template, not per request."""
    return tuple(s for s in path.split("/") if s)


@functools.lru_cache(maxsize=256)
def _parameters(path: str) -> tuple[tuple[str, str], ...]:
    """Per segment of a route template, (name, kind) of a `{name:kind}` parameter; ("", "") for a literal."""
    parsed: list[tuple[str, str]] = []
    for segment in _template(path):
        if segment.startswith("{"):
            name, _, kind = segment[1:-1].partition(":")
            parsed.append((name, kind))
        else:
            parsed.append(("", ""))
    return tuple(parsed)


def parse_id(value: str, name: str) -> int:
    """A positive int64 written in decimal, or InvalidInputError naming the field."""
    try:
        return parse_int(value, 1, INT64_MAX)
    except OutOfRange:
        raise InvalidInputError(f"{name} must be a positive integer in int64 range") from None
    except NotAnInteger:
        raise InvalidInputError(f"{name} must be a positive integer") from None


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any = None  # JSON-serialisable; or bytes of JSON already encoded (sent as they are); None: empty
    headers: Mapping[str, str] = field(default_factory=dict)


def ok(body: Any) -> Reply:
    return Reply(200, body)


def no_content() -> Reply:
    return Reply(204)


_UNPARSED: Any = object()  # Call.parsed when the body was not parsed on the way in


@dataclass(frozen=True, slots=True)
class Call:
    """What an api function sees of a request: typed path params, query, headers and raw body. `parsed`: the
    body as JSON when it was parsed on the way in (for the request's log context): `json` parses it once."""

    method: str
    path: str
    params: Mapping[str, int | str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    parsed: Any = _UNPARSED

    def id(self, name: str) -> int:
        value = self.params[name]
        assert isinstance(value, int)
        return value

    def text(self, name: str) -> str:
        return str(self.params[name])

    def json(self, model: type[M]) -> M:
        if not self.body.strip():
            raise InvalidInputError("a JSON request body is required")
        data = self.parsed
        if data is _UNPARSED:
            try:
                data = json.loads(self.body)
            except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, a huge number, deep nesting
                raise InvalidInputError("the request body is not valid JSON") from None
        return validate(model, data)

    def query_model(self, model: type[M]) -> M:
        return validate(model, dict(self.query))


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidInputError(describe(exc)) from None


def describe(exc: pydantic.ValidationError) -> str:
    """A readable summary of a validation error that never echoes the input."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts[:5])


class IdempotencyStore(Protocol):
    def run(self, scope: str, key: str, fingerprint: str, action: Callable[[], Reply]) -> Reply:
        """Run `action` once per (scope, key); a repeat returns the stored reply."""
        ...


# --- the one error table ------------------------------------------------------------------------------

GRPC_INVALID_ARGUMENT = 3
GRPC_NOT_FOUND = 5
GRPC_PERMISSION_DENIED = 7
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_INTERNAL = 13
GRPC_UNAVAILABLE = 14
GRPC_UNAUTHENTICATED = 16


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "details": []}


def error_reply(exc: BaseException, precondition_status: int = 412) -> Reply:
    """Map an exception to status and body. Unknown exceptions are bugs: logged with traceback, 500."""
    table: list[tuple[type[BaseException], int, int]] = [
        (MethodNotAllowedError, 405, GRPC_INVALID_ARGUMENT),
        (PayloadTooLargeError, 413, GRPC_INVALID_ARGUMENT),
        (UnsupportedMediaTypeError, 415, GRPC_INVALID_ARGUMENT),
        (IdempotencyKeyReusedError, 422, GRPC_INVALID_ARGUMENT),
        (InvalidInputError, 400, GRPC_INVALID_ARGUMENT),
        (NotFoundError, 404, GRPC_NOT_FOUND),
        (PreconditionError, precondition_status, GRPC_FAILED_PRECONDITION),
        (UnauthenticatedError, 401, GRPC_UNAUTHENTICATED),
        (ForbiddenError, 403, GRPC_PERMISSION_DENIED),
        (RateLimitedError, 429, GRPC_RESOURCE_EXHAUSTED),
        (TransientError, 503, GRPC_UNAVAILABLE),
    ]
    for kind, status, code in table:
        if isinstance(exc, kind):
            assert isinstance(exc, ShopError)
            headers = {"Allow": ", ".join(exc.allowed)} if isinstance(exc, MethodNotAllowedError) else {}
            if isinstance(exc, TransientError):
                log.warning("transient failure: %s", exc.message, exc_info=exc.__cause__ is not None)
            return Reply(status, error_body(code, exc.message), headers)
    if isinstance(exc, DomainError):  # a domain error without its own row is still not a crash
        return Reply(400, error_body(GRPC_INVALID_ARGUMENT, exc.message))
    log.error("unhandled error", exc_info=exc)
    return Reply(500, error_body(GRPC_INTERNAL, "internal error"))


# --- request handling --------------------------------------------------------------------------------


def read_body(request: flask.Request) -> bytes:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"request body is over {MAX_BODY_BYTES} bytes")
    try:
        data = request.stream.read(MAX_BODY_BYTES + 1)
    except RequestEntityTooLarge:  # an app configured with Flask's MAX_CONTENT_LENGTH below ours
        raise PayloadTooLargeError("request body is over the limit") from None
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"request body is over {MAX_BODY_BYTES} bytes")
    return data


def is_json_media_type(content_type: str) -> bool:
    """application/json or any application/*+json, parameters (charset, …) aside."""
    mimetype, _ = parse_options_header(content_type)
    kind, _, subtype = mimetype.lower().partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def require_json_body(route: Route, headers: Headers) -> None:
    """A route that takes a body takes JSON: any other declared media type is a 415, so that a browser's
    cross-site "simple" POST (text/plain, a form) is refused before it runs. No Content-Type is accepted."""
    if not route.takes_body:
        return
    content_type = headers.get("Content-Type")
    if content_type is not None and not is_json_media_type(content_type):
        raise UnsupportedMediaTypeError("the request body must be application/json")


def single_valued(args: Any) -> dict[str, str]:
    """Query parameters, each given once: `?user_id=1&user_id=2` is ambiguous, so a 400, not the first."""
    repeated = sorted(k for k in args if len(args.getlist(k)) > 1)
    if repeated:
        raise InvalidInputError("query parameter given more than once: " + ", ".join(repeated))
    return {k: v for k, v in args.items()}


def fingerprint(call: Call) -> str:
    digest = hashlib.sha256()
    for part in (call.method.encode(), call.path.encode(), call.body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def handle(
    request: flask.Request,
    route: Route,
    endpoint: Callable[[S, Call], Reply],
    service: Callable[[], S],
    idempotency: Callable[[], IdempotencyStore] | None = None,
    authenticate: Callable[[S, Mapping[str, str]], None] | None = None,
) -> flask.Response:
    """Bind the route, run the endpoint against the lazily built service, and shape the JSON response.

    `authenticate(service, headers)` (raising UnauthenticatedError) runs once the route and method matched and
    before anything of the request is parsed: a caller without credentials learns nothing about its input.
    """
    try:
        path, method, headers = request.path, request.method, request.headers
        given = route.match(path)
        if given is None:
            raise RouteNotFoundError(f"no route for {path}")
        if not route.allows(method):
            raise MethodNotAllowedError([route.method])
        if authenticate is not None:
            authenticate(service(), cast(Mapping[str, str], headers))
        require_json_body(route, headers)
        params = route.params_of(given)
        query = single_valued(request.args) if request.query_string else {}  # parsed only when given
        body = read_body(request) if route.takes_body else b""  # a GET's body means nothing: not read
        call = Call(
            method=method,
            path=path,
            params=params,
            query=query,
            headers=cast(Mapping[str, str], headers),  # werkzeug Headers: a case-insensitive mapping
            body=body,
            # the body parsed once: for the request's log context here, and for the endpoint's call.json
            parsed=observed.annotate_request(params, query, body, _UNPARSED),
        )
        key = headers.get("Idempotency-Key") if route.idempotent and idempotency is not None else None
        if key is not None and idempotency is not None:
            if not _KEY_PATTERN.match(key):
                raise InvalidInputError("Idempotency-Key must be 1 to 200 visible ASCII characters")
            instance = service()

            def action() -> Reply:  # outcomes, errors included, are what a repeat must see again
                try:
                    return endpoint(instance, call)
                except Exception as exc:
                    return error_reply(exc, route.precondition_status)

            reply = idempotency().run(route.function, key, fingerprint(call), action)
        else:
            reply = endpoint(service(), call)
    except Exception as exc:
        reply = error_reply(exc, route.precondition_status)
    observed.annotate_reply(reply.body)
    return to_flask(reply)


# json.dumps(body, ensure_ascii=False, separators=(",", ":")) builds a new encoder per call; one does
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def to_flask(reply: Reply) -> flask.Response:
    if reply.body is None:
        response = flask.Response(status=reply.status)
    elif isinstance(reply.body, bytes):
        response = flask.Response(reply.body, status=reply.status, content_type="application/json")
    else:
        payload = _ENCODER.encode(reply.body).encode()
        response = flask.Response(payload, status=reply.status, content_type="application/json")
    for name, value in reply.headers.items():
        response.headers[name] = value
    return response


# --- what never reaches a function ---------------------------------------------------------------------

_HTTP_ERROR_CODES = {
    401: GRPC_UNAUTHENTICATED,
    403: GRPC_PERMISSION_DENIED,
    404: GRPC_NOT_FOUND,
    429: GRPC_RESOURCE_EXHAUSTED,
}


def http_error_reply(exc: HTTPException) -> Reply:
    """One of Werkzeug's HTTP errors (raised by Flask or functions-framework before or around a function, e.g.
    a CloudEvent endpoint's 400 or 415) as the shop's error: same status, JSON body. Its description is not
    used: functions-framework's echoes the request's headers and data."""
    status = exc.code or 500
    code = _HTTP_ERROR_CODES.get(status, GRPC_INTERNAL if status >= 500 else GRPC_INVALID_ARGUMENT)
    headers = {
        name: value
        for name, value in exc.get_headers()
        if name.lower() not in ("content-type", "content-length")
    }
    return Reply(status, error_body(code, (exc.name or "error").lower()), headers)


def answer_http_errors_in_json(app: flask.Flask) -> None:
    """Answer every Werkzeug HTTP error of `app` in the shop's JSON error shape instead of an HTML page.

    Registered for the HTTPException class, so a handler registered for a status code (functions-framework's
    500 crash handler) still decides that status."""

    def handler(exc: HTTPException) -> flask.Response:
        return to_flask(http_error_reply(exc))

    app.register_error_handler(HTTPException, handler)


def json_error(start_response: Callable[..., Any], status: str, code: int, message: str) -> list[bytes]:
    """A WSGI JSON error answer, for middleware that answers before any app."""
    payload = json.dumps(error_body(code, message), separators=(",", ":")).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


class BodyLimit:
    """At most `max_bytes` of request body reach the app (every function's, CloudEvent ones included, which
    functions-framework reads whole before the function runs): more is a 413 in the shop's JSON.

    A declared Content-Length over the limit is refused unread. A body without one (chunked) is read here, at
    most one byte over the limit, and handed on as a body of known length."""

    def __init__(self, app: Callable[..., Iterable[bytes]], max_bytes: int = MAX_BODY_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared.strip().isdigit():
            if int(declared) > self.max_bytes:
                return self._too_large(start_response)
            return self.app(environ, start_response)
        # A body of unknown length (chunked): the server ends it. Without Content-Length or Transfer-Encoding
        # a request has no body (RFC 9112 6.3): a GET is passed on as it came, unread, its environ not copied
        if environ.get("wsgi.input_terminated") and "HTTP_TRANSFER_ENCODING" in environ:
            body = environ["wsgi.input"].read(self.max_bytes + 1)
            if len(body) > self.max_bytes:
                return self._too_large(start_response)
            environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)

    def _too_large(self, start_response: Callable[..., Any]) -> list[bytes]:
        message = f"request body is over {self.max_bytes} bytes"
        return json_error(start_response, "413 Request Entity Too Large", GRPC_INVALID_ARGUMENT, message)


# --- WSGI: paths Flask's router would refuse ------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_character(path: str) -> bool:
    """Whether EscapedControlCharacters would write part of `path` back as %XX text."""
    return _CONTROL.search(path) is not None


class EscapedControlCharacters:
    """Flask's router, which functions-framework mounts, matches no route for a path holding a control
    character (a %0A newline, …) and answers with its own HTML 404 before any handler runs. Write such
    characters back as %XX text instead, so the path reaches the function and its route decides as for any
    other odd path: a bad id is a 400, an unknown order uid a 404, both in the shop's JSON."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if has_control_character(path):
            environ = {**environ, "PATH_INFO": _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", path)}
        return self.app(environ, start_response)
