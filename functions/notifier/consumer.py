"""The `loms.order-events` consumer: validate the CloudEvent functions-framework read (with the `cloudevents`
SDK), then call the service.

Handled, duplicate, out-of-order and poison events return normally (acknowledged); a TransientError
propagates, so functions-framework answers 500 and the source delivers the event again. An event whose
source is not one of NOTIFIER_EVENT_SOURCES is refused first, whatever it holds: logged, counted
(`untrusted_source`) and answered 403, a status the event source does not retry but dead-letters. A request
whose data the SDK could not decode (JSON Python cannot hold: a number of thousands of digits, deep nesting)
never reaches the handler: it is answered 400, logged and counted as poison, and the event source
dead-letters it with its bytes (`unreadable`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import flask
import pydantic
from cloudevents.abstract import AnyCloudEvent
from pydantic import BaseModel, BeforeValidator, ConfigDict

from functions.notifier.domain import (
    EventKey,
    PoisonEventError,
    StatusChange,
    parse_instant,
)
from functions.notifier.service import NotifierService
from shared_lib import web
from shared_lib.errors import ForbiddenError, InvalidInputError
from shared_lib.events import SPECVERSION
from shared_lib.ints import INT64_MAX, NotAnInteger, OutOfRange, parse_int

if TYPE_CHECKING:
    from functions.notifier.settings import NotifierSettings

log = logging.getLogger(__name__)


class UntrustedSourceError(ForbiddenError):
    def __init__(self) -> None:
        super().__init__("events are taken only from the configured sources")


def _id(value: Any) -> int:
    """A positive int64 as a JSON number or decimal text (loms writes int64 as text in its HTTP API)."""
    try:
        return parse_int(value, 1, INT64_MAX)
    except OutOfRange:
        raise ValueError("must be a positive integer in int64 range") from None
    except NotAnInteger:
        number = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        raise ValueError(f"must be a positive integer{' in int64 range' if number else ''}") from None


def _instant(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time")
    try:
        return parse_instant(value, "moment")
    except InvalidInputError as exc:
        raise ValueError(exc.message) from None


class OrderStatusChanged(BaseModel):
    # fields it does not know are ignored: a producer may add some without breaking its consumers
    model_config = ConfigDict(extra="ignore", frozen=True)

    order_id: Annotated[int, BeforeValidator(_id)]
    user_id: Annotated[int, BeforeValidator(_id)]
    status: Literal["new", "awaiting payment", "failed", "paid", "cancelled"]
    moment: Annotated[Any, BeforeValidator(_instant)]


def parse(event: AnyCloudEvent) -> StatusChange:
    """The status change a CloudEvent carries, or PoisonEventError saying why it can never be handled. Its
    data is what the SDK made of the body: decoded JSON, or the bytes as they came when they are not JSON."""
    if event["specversion"] != SPECVERSION:  # the SDK reads CloudEvents 0.3 too
        raise PoisonEventError("not a CloudEvents 1.0 event")
    try:
        event_id = web.parse_id(str(event["id"]), "ce-id")
    except InvalidInputError:
        raise PoisonEventError("ce-id is not a positive integer (an outbox row id)") from None
    payload = event.get_data()
    if payload is None or isinstance(payload, bytes):  # empty, or not JSON (not even UTF-8): kept as bytes
        raise PoisonEventError("the event's data is not JSON")
    try:
        value = OrderStatusChanged.model_validate(payload)
    except pydantic.ValidationError as exc:
        raise PoisonEventError(web.describe(exc)) from None
    return StatusChange(
        event=EventKey(event["source"], event_id),
        order_id=value.order_id,
        user_id=value.user_id,
        status=value.status,
        moment=value.moment,
    )


def refuse_untrusted(
    service: Callable[[], NotifierService],
    settings: Callable[[], NotifierSettings],
    event_id: Any,
    source: Any,
) -> None:
    """Raises UntrustedSourceError, logged and counted, unless the event's source is a configured one."""
    accepted = settings().accepted_sources
    if source in accepted:
        return
    service().counters.increment("untrusted_source")
    log.warning(
        "event %r refused: untrusted source %r (accepted: %s)", event_id, source, ", ".join(sorted(accepted))
    )
    raise UntrustedSourceError()


def refused(error: UntrustedSourceError) -> flask.Response:
    """The 403 answer, in the shop's error shape."""
    return web.to_flask(web.error_reply(error))


def notify_status(
    service: Callable[[], NotifierService],
    settings: Callable[[], NotifierSettings],
    event: AnyCloudEvent,
) -> None:
    refuse_untrusted(service, settings, event.get("id"), event.get("source"))
    notifier = service()
    try:
        change = parse(event)
    except PoisonEventError as exc:
        notifier.reject(event.get("id"), exc.message)
        return
    notifier.notify(change)


class UnreadableEventError(InvalidInputError):
    def __init__(self) -> None:
        super().__init__("the event's data could not be decoded")


def unreadable(
    service: Callable[[], NotifierService],
    settings: Callable[[], NotifierSettings],
    headers: Any,
    error: Exception,
) -> flask.Response:
    """The answer to a request whose data the CloudEvents SDK could not decode (raised before notify_status
    ran, so only the request's headers are there to read): 403 when its source is not trusted, else 400,
    logged and counted as poison. Never a 200: the event source dead-letters it, its bytes kept."""
    try:
        refuse_untrusted(service, settings, headers.get("ce-id"), headers.get("ce-source"))
    except UntrustedSourceError as exc:
        return refused(exc)
    service().counters.increment("poison")
    log.error(
        "poison event %s refused with 400 (the event source dead-letters it): data not decodable (%s)",
        headers.get("ce-id") or "without an id",
        type(error).__name__,
    )
    return web.to_flask(web.error_reply(UnreadableEventError()))
