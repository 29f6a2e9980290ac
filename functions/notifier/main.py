"""The notifier functions' targets. Only decorated handlers: no logic, no clients at import time."""

import flask
import functions_framework
from cloudevents.exceptions import DataUnmarshallerError
from cloudevents.http import CloudEvent

from functions import table
from functions.notifier import api, bootstrap, consumer
from shared_lib import web


@functions_framework.cloud_event
def notify_status(event: CloudEvent) -> None:
    consumer.notify_status(bootstrap.notifier_service, bootstrap.settings, event)


@functions_framework.errorhandler(DataUnmarshallerError)  # type: ignore[untyped-decorator]
def unreadable_event(error: DataUnmarshallerError) -> flask.Response:
    # the SDK decodes the data before notify_status runs and raises on JSON it cannot hold (a number of
    # thousands of digits, deep nesting): no event to take, so the request's headers say who sent it
    return consumer.unreadable(bootstrap.notifier_service, bootstrap.settings, flask.request.headers, error)


@functions_framework.errorhandler(consumer.UntrustedSourceError)  # type: ignore[untyped-decorator]
def untrusted_source(error: consumer.UntrustedSourceError) -> flask.Response:
    return consumer.refused(error)  # 403: the event source dead-letters it, never retries it


@functions_framework.http
def list_notifications(request: flask.Request) -> flask.Response:
    return web.handle(
        request, table.route("list_notifications"), api.list_notifications, bootstrap.notifier_service
    )
