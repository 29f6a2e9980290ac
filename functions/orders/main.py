"""The order viewer's targets. Only decorated handlers: no logic, no clients at import time."""

import flask
import functions_framework
from cloudevents.exceptions import DataUnmarshallerError
from cloudevents.http import CloudEvent

from functions import table
from functions.orders import api, bootstrap, consumer
from shared_lib import web


@functions_framework.cloud_event
def ingest_order(event: CloudEvent) -> None:
    # the event's data is the SDK's JSON decoding of the record, and functions-framework keeps no bytes of it:
    # a dead letter must hold the record's own bytes, the body functions-framework read (flask keeps it)
    consumer.ingest_order(bootstrap.orders_service, event, flask.request.get_data())


@functions_framework.errorhandler(DataUnmarshallerError)  # type: ignore[untyped-decorator]
def unreadable_order(error: DataUnmarshallerError) -> flask.Response:
    # the SDK decodes the data before ingest_order runs and raises on JSON it cannot hold (a number of
    # thousands of digits, deep nesting): a 400, which the event source dead-letters (never a silent 200)
    return consumer.unreadable(bootstrap.orders_service, flask.request.headers, error)


@functions_framework.http
def get_order(request: flask.Request) -> flask.Response:
    return web.handle(request, table.route("get_order"), api.get_order, bootstrap.orders_service)


@functions_framework.http
def order_page(request: flask.Request) -> flask.Response:
    return api.order_page(request, table.route("order_page"), bootstrap.orders_service, bootstrap.api_url)
