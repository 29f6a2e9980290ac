"""The `loms.order-events` consumer: parse and validate the binary-mode CloudEvent, then call the service.

Handled, duplicate, out-of-order and poison events return normally (acknowledged); a TransientError
propagates, so functions-framework answers 500 and the source delivers the event again. An event whose
ce-source is not one of NOTIFIER_EVENT_SOURCES is refused first, whatever it holds: logged, counted
(`untrusted_source`) and answered 403, a status the event source does not retry but dead-letters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import flask
import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict

from functions.notifier.domain import (
    EventKey,
    PoisonEventError,
    StatusChange,
    parse_instant,
)
from functions.notifier.service import NotifierService
from shared_lib import events, web
from shared_lib.errors import ForbiddenError, InvalidInputError
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


def parse(headers: Any, body: bytes) -> StatusChange:
    """The status change an HTTP delivery carries, or PoisonEventError saying why it can never be handled."""
    try:
        event = events.from_http(headers, body)
    except events.MalformedEventError as exc:
        raise PoisonEventError(str(exc)) from None
    try:
        event_id = web.parse_id(event.id, "ce-id")
    except InvalidInputError:
        raise PoisonEventError("ce-id is not a positive integer (an outbox row id)") from None
    try:
        payload = json.loads(event.data)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a huge number, deep nesting
        raise PoisonEventError("the event's data is not JSON") from None
    try:
        value = OrderStatusChanged.model_validate(payload)
    except pydantic.ValidationError as exc:
        raise PoisonEventError(web.describe(exc)) from None
    return StatusChange(
        event=EventKey(event.source, event_id),
        order_id=value.order_id,
        user_id=value.user_id,
        status=value.status,
        moment=value.moment,
    )


def refuse_untrusted(
    service: Callable[[], NotifierService], settings: Callable[[], NotifierSettings], headers: Any
) -> None:
    """Raises UntrustedSourceError, logged and counted, unless the event's ce-source is a configured one."""
    source = headers.get("ce-source")
    accepted = settings().accepted_sources
    if source in accepted:
        return
    service().counters.increment("untrusted_source")
    log.warning(
        "event %r refused: untrusted source %r (accepted: %s)",
        headers.get("ce-id"),
        source,
        ", ".join(sorted(accepted)),
    )
    raise UntrustedSourceError()


def refused(error: UntrustedSourceError) -> flask.Response:
    """The 403 answer, in the shop's error shape."""
    return web.to_flask(web.error_reply(error))


def notify_status(
    service: Callable[[], NotifierService],
    settings: Callable[[], NotifierSettings],
    headers: Any,
    body: bytes,
) -> None:
    refuse_untrusted(service, settings, headers)
    notifier = service()
    try:
        change = parse(headers, body)
    except PoisonEventError as exc:
        notifier.reject(headers.get("ce-id"), exc.message)
        return
    notifier.notify(change)


def reject_unreadable(service: Callable[[], NotifierService], headers: Any, error: Exception) -> None:
    """The CloudEvents SDK could not read the request (raised before notify_status ran): poison."""
    service().reject(headers.get("ce-id"), f"the event could not be read ({type(error).__name__})")


def unreadable(
    service: Callable[[], NotifierService],
    settings: Callable[[], NotifierSettings],
    headers: Any,
    error: Exception,
) -> flask.typing.ResponseReturnValue:
    """The answer to a request the CloudEvents SDK could not read: refused when its source is not trusted,
    else poison (acknowledged)."""
    try:
        refuse_untrusted(service, settings, headers)
    except UntrustedSourceError as exc:
        return refused(exc)
    reject_unreadable(service, headers, error)
    return "OK", 200
