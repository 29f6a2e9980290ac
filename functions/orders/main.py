"""The order viewer's targets. Only decorated handlers: no logic, no clients at import time.

Its orders come in through the ingest worker (functions/orders/ingest_worker.py), not a function."""

import flask
import functions_framework

from functions import table
from functions.orders import api, bootstrap
from shared_lib import web


@functions_framework.http
def get_order(request: flask.Request) -> flask.Response:
    return web.handle(request, table.route("get_order"), api.get_order, bootstrap.orders_service)


@functions_framework.http
def order_page(request: flask.Request) -> flask.Response:
    return api.order_page(request, table.route("order_page"), bootstrap.orders_service, bootstrap.api_url)
