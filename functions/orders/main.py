"""The order viewer's targets. Only decorated handlers: no logic, no clients at import time.

Its orders come in through the ingest worker (functions/orders/ingest_worker.py), not a function."""

import flask
import functions_framework

from functions import table
from functions.orders import api, bootstrap
from shared_lib import web

# Each function's route, a value from the table, bound once rather than built on every request
GET_ORDER = table.route("get_order")
ORDER_PAGE = table.route("order_page")


@functions_framework.http
def get_order(request: flask.Request) -> flask.Response:
    return web.handle(request, GET_ORDER, api.get_order, bootstrap.orders_service)


@functions_framework.http
def order_page(request: flask.Request) -> flask.Response:
    return api.order_page(request, ORDER_PAGE, bootstrap.orders_service, bootstrap.api_url)
