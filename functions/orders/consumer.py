"""The `orders` consumer: validate each record against the strict model of data/wb-order-sample.json
(generated from the domain's Order, each field validated by its rule), then let the service store or
dead-letter the batch. The ingest worker hands it each batch it polls from Kafka (records with their topic,
partition, offset, key and headers).
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

import pydantic
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
    context = {"latest": now + future_skew}
    try:
        # pydantic's own JSON parser validates the bytes as they are read: no Python objects in between
        model = OrderModel.model_validate_json(record.value, context=context)
    except pydantic.ValidationError:
        # Not an order, or JSON that json.loads reads and pydantic's parser does not (a BOM, UTF-16, a lone
        # surrogate escape): the reason is told, or the order taken, exactly as json.loads and the model
        # always did. Whatever pydantic's parser accepts, json.loads reads as the same values.
        try:
            data = json.loads(record.value)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, a huge number, deep nesting
            return Submission(record, None, "invalid: not JSON")
        try:
            model = OrderModel.model_validate(data, context=context)
        except pydantic.ValidationError as exc:
            return Submission(record, None, "invalid: " + web.describe(exc))
    order = Order.from_attributes(model)
    problems = sum_problems(order)
    if problems:
        return Submission(record, None, "invalid: " + "; ".join(problems))
    return Submission(record, order)


def ingest(service: OrdersService, records: Sequence[SourceRecord]) -> list[Verdict]:
    """Parse and ingest one batch (the batch worker's entry). Raises TransientError: retry the batch."""
    now = service.clock()
    return service.ingest([parse(r, now, service.future_skew) for r in records])


def describe(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for verdict in verdicts:
        counts[verdict.outcome.value] = counts.get(verdict.outcome.value, 0) + 1
    return counts
