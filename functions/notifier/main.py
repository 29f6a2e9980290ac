"""The notifier functions' targets. Only decorated handlers: no logic, no clients at import time."""

import flask
import functions_framework
from cloudevents.exceptions import GenericException
from cloudevents.http.event import CloudEvent

from functions import table
from functions.notifier import api, bootstrap, consumer
from shared_lib import web


@functions_framework.cloud_event
def notify_status(event: CloudEvent) -> None:
    # the raw request, not the SDK's event: shared_lib.events reads binary-mode CloudEvents the same way
    # everywhere, and a body that is not JSON must reach the consumer as it came (poison, acknowledged)
    consumer.notify_status(
        bootstrap.notifier_service, bootstrap.settings, flask.request.headers, flask.request.get_data()
    )


@functions_framework.errorhandler(GenericException)  # type: ignore[untyped-decorator]
def unreadable_event(error: GenericException) -> flask.typing.ResponseReturnValue:
    # the SDK reads the request before notify_status runs and raises on data it cannot decode (a number of
    # thousands of digits, deep nesting): poison like any other, acknowledged instead of retried forever
    return consumer.unreadable(bootstrap.notifier_service, bootstrap.settings, flask.request.headers, error)


@functions_framework.errorhandler(consumer.UntrustedSourceError)  # type: ignore[untyped-decorator]
def untrusted_source(error: consumer.UntrustedSourceError) -> flask.Response:
    return consumer.refused(error)  # 403: the event source dead-letters it, never retries it


@functions_framework.http
def list_notifications(request: flask.Request) -> flask.Response:
    return web.handle(
        request, table.route("list_notifications"), api.list_notifications, bootstrap.notifier_service
    )
