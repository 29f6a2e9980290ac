"""The `orders` consumer: validate each record against the strict model of data/wb-order-sample.json
(generated from the domain's Order, each field validated by its rule), then let the service store or
dead-letter the batch. Both delivery paths end here: the CloudEvent function (one record per HTTP request,
from KafkaSource) and the batch worker (many records per poll, straight from Kafka).

Where the record came from (partition, offset) is read from the CloudEvent attributes that KafkaSource and
shared_lib.eventsource give a record without CloudEvent headers of its own: id `partition:<p>/offset:<o>`,
subject `partition:<p>#<o>`, source `/kafka/<topic>` (local) or `…/kafkasources/<name>#<topic>` (Knative).
"""

from __future__ import annotations

import json
import logging
import re
import typing
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

import flask
import pydantic
from cloudevents.abstract import AnyCloudEvent
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

from functions.orders.domain import (
    CURRENCIES,
    MAX_ITEMS,
    ORDER_UID,
    Order,
    Rule,
    SourceRecord,
    Submission,
    Verdict,
    instant,
    sum_problems,
)
from functions.orders.service import OrdersService
from shared_lib import web
from shared_lib.errors import InvalidInputError

log = logging.getLogger(__name__)

INT64_MAX = 2**63 - 1
MAX_RECORD_BYTES = 1024 * 1024

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)*\.[A-Za-z]{2,63}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]*[0-9]$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")


def _phone(value: str) -> str:
    digits = sum(c.isdigit() for c in value)
    if not _PHONE.match(value) or not 7 <= digits <= 15:
        raise ValueError("not a plausible phone number (7 to 15 digits, an optional leading +)")
    return value


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("not a plausible email address")
    return value


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        raise ValueError("not an ISO 4217 currency code")
    return value


def _date(value: str, info: ValidationInfo) -> str:
    if not _RFC3339.match(value):
        raise ValueError("not an RFC 3339 date-time such as 2021-11-26T06:22:19Z")
    try:
        moment = instant(value)
    except (ValueError, OverflowError):
        raise ValueError("not a valid date-time") from None
    context = info.context or {}
    latest = context.get("latest")
    if latest is not None and moment > latest:
        raise ValueError("in the future")
    return value


_Trimmed = StringConstraints(strip_whitespace=True)
_Text = StringConstraints(strip_whitespace=True, max_length=1000)

# how each rule of the domain's order model is validated (pydantic types with the same constraints)
_VALIDATED: dict[Rule, Any] = {
    Rule.TEXT: Annotated[str, _Text],
    Rule.NAME: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)],
    Rule.COUNT: Annotated[int, Field(ge=0, le=INT64_MAX)],
    Rule.PERCENT: Annotated[int, Field(ge=0, le=100)],
    Rule.PHONE: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000), AfterValidator(_phone)
    ],
    Rule.EMAIL: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254), AfterValidator(_email)
    ],
    Rule.CURRENCY: Annotated[str, _Trimmed, AfterValidator(_currency)],
    Rule.ORDER_UID: Annotated[str, StringConstraints(strip_whitespace=True, pattern=ORDER_UID.pattern)],
    Rule.LOCALE: Annotated[str, StringConstraints(strip_whitespace=True, pattern=_LOCALE.pattern)],
    Rule.INSTANT: Annotated[str, _Trimmed, AfterValidator(_date)],  # kept as text: the domain converts it
}


class _Strict(BaseModel):
    # strict: "1" is not 1, 1.0 is not 1, true is not 1; a field nobody knows is a producer bug worth a look
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _items_belong(model: Any) -> Any:
    if any(item.track_number != model.track_number for item in model.items):
        raise ValueError("every item's track_number must be the order's track_number")
    return model


def _model_of(cls: type[Any], validators: dict[str, Any] | None = None) -> type[BaseModel]:
    """The strict pydantic model of one of the domain's dataclasses: the same fields in the same order, each
    validated by its rule; a nested dataclass by its own model."""
    fields: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        rule = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Rule)), None)
        if rule is Rule.ITEMS:
            item = typing.get_args(typing.get_args(hint)[0])[0]  # Annotated[tuple[Item, ...], …]
            items: Any = list[_model_of(item)]  # type: ignore[misc]  # a model made at import time
            validated: Any = Annotated[items, Field(min_length=1, max_length=MAX_ITEMS)]
        elif rule is not None:
            validated = _VALIDATED[rule]
        else:
            validated = _model_of(hint)
        fields[name] = (validated, ...)
    return pydantic.create_model(
        f"{cls.__name__}Model", __base__=_Strict, __validators__=validators or {}, **fields
    )


OrderModel = _model_of(Order, {"_items_belong": model_validator(mode="after")(_items_belong)})


def parse(record: SourceRecord, now: datetime, future_skew: timedelta) -> Submission:
    """The order a record holds, or the reason it is not one (never raises)."""
    if len(record.value) > MAX_RECORD_BYTES:
        return Submission(record, None, f"invalid: the record is over {MAX_RECORD_BYTES} bytes")
    try:
        data = json.loads(record.value)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a huge number, deep nesting
        return Submission(record, None, "invalid: not JSON")
    try:
        model = OrderModel.model_validate(data, context={"latest": now + future_skew})
    except pydantic.ValidationError as exc:
        return Submission(record, None, "invalid: " + web.describe(exc))
    order = Order.from_json(model.model_dump())
    problems = sum_problems(order)
    if problems:
        return Submission(record, None, "invalid: " + "; ".join(problems))
    return Submission(record, order)


def ingest(service: OrdersService, records: Sequence[SourceRecord]) -> list[Verdict]:
    """Parse and ingest one batch (the batch worker's entry). Raises TransientError: retry the batch."""
    now = service.clock()
    return service.ingest([parse(r, now, service.future_skew) for r in records])


# --- the CloudEvent function: one record per request ----------------------------------------------------

_ID = re.compile(r"^partition:(\d+)/offset:(\d+)$")
_SUBJECT = re.compile(r"^partition:(\d+)#(\d+)$")
_KAFKA_HEADER = "kafkaheader"  # Knative's KafkaSource: a record's own headers as extension attributes


def record_of(event: AnyCloudEvent, body: bytes, default_topic: str = "orders") -> SourceRecord:
    """The Kafka record a delivery stands for: its bytes (the body of a binary-mode request, as KafkaSource
    sends a record), and where it came from when the event says so (KafkaSource's id or subject for records
    without CloudEvent headers, its `key` and `kafkaheader…` attributes)."""
    where = _ID.match(_text(event.get("id"))) or _SUBJECT.match(_text(event.get("subject")))
    partition, offset = (int(where.group(1)), int(where.group(2))) if where else (None, None)
    source = _text(event.get("source"))
    if "#" in source:
        topic = source.rsplit("#", 1)[1]
    elif source.startswith("/kafka/"):
        topic = source[len("/kafka/") :]
    else:
        topic = default_topic
    key = _text(event.get("key"))
    original = tuple(
        (name[len(_KAFKA_HEADER) :], _text(event[name]).encode())
        for name in event
        if name.startswith(_KAFKA_HEADER)
    )
    return SourceRecord(
        value=body,
        key=key.encode() if key else None,
        topic=topic or default_topic,
        partition=partition,
        offset=offset,
        headers=original,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def ingest_order(service: Callable[[], OrdersService], event: AnyCloudEvent, body: bytes) -> None:
    """One delivery: stored, duplicate, dead-lettered (acknowledged) or TransientError (retried)."""
    ingest(service(), [record_of(event, body)])


class UnreadableRecordError(InvalidInputError):
    def __init__(self) -> None:
        super().__init__("the record could not be decoded")


def unreadable(service: Callable[[], OrdersService], headers: Any, error: Exception) -> flask.Response:
    """The answer to a delivery whose data the CloudEvents SDK could not decode (it decodes JSON before the
    function runs, and fails on a number of thousands of digits or deep nesting): 400, logged and counted
    (`unreadable`). Never a 200: the event source dead-letters the record, its bytes kept, to the same
    dead-letter topic."""
    service().counters.increment("unreadable")
    log.warning(
        "record %s of %s refused with 400 (the event source dead-letters it): data not decodable (%s)",
        headers.get("ce-id") or "without an id",
        headers.get("ce-source") or "an unknown source",
        type(error).__name__,
    )
    return web.to_flask(web.error_reply(UnreadableRecordError()))


def describe(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for verdict in verdicts:
        counts[verdict.outcome.value] = counts.get(verdict.outcome.value, 0) + 1
    return counts
