"""The order viewer's targets. Only decorated handlers: no logic, no clients at import time."""

import flask
import functions_framework
from cloudevents.exceptions import GenericException
from cloudevents.http.event import CloudEvent

from functions import table
from functions.orders import api, bootstrap, consumer
from shared_lib import web


@functions_framework.cloud_event
def ingest_order(event: CloudEvent) -> None:
    # the raw request, not the SDK's event: the dead-letter topic gets the record's original bytes
    consumer.ingest_order(bootstrap.orders_service, flask.request.headers, flask.request.get_data())


@functions_framework.errorhandler(GenericException)  # type: ignore[untyped-decorator]
def unreadable_order(error: GenericException) -> tuple[str, int]:
    # the SDK decodes a JSON body before ingest_order runs and raises when it is not JSON: an invalid
    # record like any other, dead-lettered and acknowledged instead of retried forever
    consumer.ingest_unreadable(bootstrap.orders_service, flask.request.headers, flask.request.get_data())
    return "OK", 200


@functions_framework.http
def get_order(request: flask.Request) -> flask.Response:
    return web.handle(request, table.route("get_order"), api.get_order, bootstrap.orders_service)


@functions_framework.http
def order_page(request: flask.Request) -> flask.Response:
    return api.order_page(request, table.route("order_page"), bootstrap.orders_service, bootstrap.api_url)
