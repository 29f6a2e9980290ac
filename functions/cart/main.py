"""The cart functions' targets. Only decorated handlers: no logic, no clients at import time."""

import flask
import functions_framework

from functions import table
from functions.cart import api, bootstrap
from shared_lib import web


@functions_framework.http
def add_item(request: flask.Request) -> flask.Response:
    return web.handle(
        request,
        table.route("add_item"),
        api.add_item,
        bootstrap.cart_service,
        idempotency=bootstrap.idempotency,
    )


@functions_framework.http
def delete_item(request: flask.Request) -> flask.Response:
    return web.handle(request, table.route("delete_item"), api.delete_item, bootstrap.cart_service)


@functions_framework.http
def clear_cart(request: flask.Request) -> flask.Response:
    return web.handle(request, table.route("clear_cart"), api.clear_cart, bootstrap.cart_service)


@functions_framework.http
def list_cart(request: flask.Request) -> flask.Response:
    return web.handle(request, table.route("list_cart"), api.list_cart, bootstrap.cart_service)


@functions_framework.http
def checkout(request: flask.Request) -> flask.Response:
    return web.handle(
        request,
        table.route("checkout"),
        api.checkout,
        bootstrap.cart_service,
        idempotency=bootstrap.idempotency,
    )
