"""The loms functions' targets. Only decorated handlers: no logic, no clients at import time."""

import flask
import functions_framework

from functions import table
from functions.loms import api, bootstrap
from shared_lib import web


@functions_framework.http
def create_order(request: flask.Request) -> flask.Response:
    return web.handle(
        request, table.route("create_order"), api.create_order, bootstrap.loms_service, bootstrap.idempotency
    )


@functions_framework.http
def order_info(request: flask.Request) -> flask.Response:
    return web.handle(request, table.route("order_info"), api.order_info, bootstrap.loms_service)


@functions_framework.http
def pay_order(request: flask.Request) -> flask.Response:
    return web.handle(
        request, table.route("pay_order"), api.pay_order, bootstrap.loms_service, bootstrap.idempotency
    )


@functions_framework.http
def cancel_order(request: flask.Request) -> flask.Response:
    return web.handle(
        request, table.route("cancel_order"), api.cancel_order, bootstrap.loms_service, bootstrap.idempotency
    )


@functions_framework.http
def stock_info(request: flask.Request) -> flask.Response:
    return web.handle(request, table.route("stock_info"), api.stock_info, bootstrap.loms_service)


@functions_framework.http
def relay_outbox(request: flask.Request) -> flask.Response:
    return web.handle(request, table.route("relay_outbox"), api.relay_outbox, bootstrap.relay)


@functions_framework.http
def cancel_stale_orders(request: flask.Request) -> flask.Response:
    return web.handle(request, table.route("cancel_stale_orders"), api.cancel_stale_orders, bootstrap.sweeper)
