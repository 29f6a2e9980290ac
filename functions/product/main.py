"""The product functions' targets. Only decorated handlers: no logic, no clients at import time."""

import flask
import functions_framework

from functions import table
from functions.product import api, bootstrap
from shared_lib import web


@functions_framework.http
def get_product(request: flask.Request) -> flask.Response:
    return web.handle(
        request,
        table.route("get_product"),
        api.get_product,
        bootstrap.product_service,
        authenticate=api.authenticate,
    )


@functions_framework.http
def list_products(request: flask.Request) -> flask.Response:
    return web.handle(
        request,
        table.route("list_products"),
        api.list_products,
        bootstrap.product_service,
        authenticate=api.authenticate,
    )
