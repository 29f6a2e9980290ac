"""The order viewer's domain: an order as the `orders` topic carries it, the records it arrives in, the
outcome of ingesting one, and the viewer's errors. No I/O, no pydantic, no driver here.

An order is immutable once stored: its fingerprint (SHA-256 of its canonical JSON) tells a redelivery of
the same order (nothing changes) from a different body under a stored uid (a conflict, dead-lettered).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from shared_lib.errors import InvalidInputError, NotFoundError, ShopError

# order_uid is a path segment of GET /order/{order_uid}: letters, digits, `.`, `_`, `-`
ORDER_UID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

# ISO 4217 active alphabetic codes (list one, 2024 edition), including funds and precious-metal codes.
CURRENCIES = frozenset(
    {
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BOV",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHE",
        "CHF",
        "CHW",
        "CLF",
        "CLP",
        "CNY",
        "COP",
        "COU",
        "CRC",
        "CUC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MXV",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SLL",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "USN",
        "UYI",
        "UYU",
        "UYW",
        "UZS",
        "VED",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XAG",
        "XAU",
        "XBA",
        "XBB",
        "XBC",
        "XBD",
        "XCD",
        "XCG",
        "XDR",
        "XOF",
        "XPD",
        "XPF",
        "XPT",
        "XSU",
        "XTS",
        "XUA",
        "XXX",
        "YER",
        "ZAR",
        "ZMW",
        "ZWG",
        "ZWL",
    }
)


# --- the order: one model ------------------------------------------------------------------------------
# Each field is declared once, here: its name, its type and the rule its value obeys (the Annotated marker).
# Declaration order is the order of the JSON keys of data/wb-order-sample.json. The consumer's validation is
# generated from these declarations, the JSON shape (to_json, from_json) is derived from them, and so are the
# PostgreSQL rows (a table's columns are the JSON keys of its part of the order).


class Rule(enum.Enum):
    """What a field's value must be. Enforced by the consumer's validation (strict types: "1" is not 1);
    nothing is checked here."""

    TEXT = "text"  # a string, trimmed, at most 1,000 characters; may be empty
    NAME = "name"  # TEXT that is not empty
    COUNT = "count"  # an integer from 0 to 2**63 - 1: counts, ids and money
    PERCENT = "percent"  # an integer from 0 to 100
    PHONE = "phone"  # 7 to 15 digits, an optional leading +
    EMAIL = "email"
    CURRENCY = "currency"  # one of CURRENCIES
    ORDER_UID = "order_uid"  # ORDER_UID: a path segment of GET /order/{order_uid}
    LOCALE = "locale"
    INSTANT = "instant"  # an RFC 3339 date-time with an offset, not in the future; held in UTC
    ITEMS = "items"  # 1 to MAX_ITEMS items, each of the order's track_number


MAX_ITEMS = 1000

Text = Annotated[str, Rule.TEXT]
Name = Annotated[str, Rule.NAME]
Count = Annotated[int, Rule.COUNT]


@dataclass(frozen=True, slots=True)
class Delivery:
    name: Name
    phone: Annotated[str, Rule.PHONE]
    zip: Text
    city: Name
    address: Name
    region: Text
    email: Annotated[str, Rule.EMAIL]


@dataclass(frozen=True, slots=True)
class Payment:
    transaction: Name
    request_id: Text
    currency: Annotated[str, Rule.CURRENCY]
    provider: Name
    amount: Count
    payment_dt: Count  # unix seconds
    bank: Text
    delivery_cost: Count
    goods_total: Count
    custom_fee: Count


@dataclass(frozen=True, slots=True)
class Item:
    chrt_id: Count
    track_number: Name
    price: Count
    rid: Name
    name: Name
    sale: Annotated[int, Rule.PERCENT]
    size: Text
    total_price: Count
    nm_id: Count
    brand: Text
    status: Count


@dataclass(frozen=True, slots=True)
class Order:
    order_uid: Annotated[str, Rule.ORDER_UID]
    track_number: Name
    entry: Name
    delivery: Delivery
    payment: Payment
    items: Annotated[tuple[Item, ...], Rule.ITEMS]
    locale: Annotated[str, Rule.LOCALE]
    internal_signature: Text
    customer_id: Name
    delivery_service: Name
    shardkey: Text
    sm_id: Count
    date_created: Annotated[datetime, Rule.INSTANT]  # timezone-aware, UTC
    oof_shard: Text

    def to_json(self) -> dict[str, Any]:
        """The order exactly in the shape of data/wb-order-sample.json: same keys, same order, same types."""
        return _ORDER_TO_JSON(self)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Order:
        """The order a document of that shape describes, already validated (date_created: RFC 3339 text or an
        aware datetime). Keys beyond the fields are ignored: a row may carry more columns."""
        order: Order = _ORDER_FROM_JSON(document)
        return order

    @classmethod
    def from_attributes(cls, source: Any) -> Order:
        """The order whose fields `source` holds as attributes, its parts (and each item) likewise, as they
        would be in from_json's document (a validated model of that shape: no dump to a dict in between)."""
        order: Order = _ORDER_FROM_ATTRIBUTES(source)
        return order

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.to_json())


def canonical(document: Mapping[str, Any]) -> bytes:
    """An order's canonical JSON (of its to_json): compact, keys in declaration order, UTF-8 as is. The same
    bytes as shared_lib.cache.encode of the same document, so they are also what the caches hold."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def fingerprint(document: Mapping[str, Any]) -> str:
    """SHA-256 of an order's canonical JSON (its to_json)."""
    return hashlib.sha256(canonical(document)).hexdigest()


@dataclass(frozen=True, slots=True)
class EncodedOrder:
    """An order with its canonical JSON, encoded once: its fingerprint, its rows in the database and its
    cached bytes all come from `data`."""

    order: Order
    data: bytes
    fingerprint: str

    @classmethod
    def of(cls, order: Order) -> EncodedOrder:
        data = canonical(order.to_json())
        return cls(order, data, hashlib.sha256(data).hexdigest())

    @property
    def order_uid(self) -> str:
        return self.order.order_uid


# The two mappings below are generated once, as source, from the fields (as dataclasses generates __init__):
# one dict display and one constructor call per dataclass, as fast as the hand-written mapping they replace.


def _dumper(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """A dataclass's to_json: nested dataclasses become objects, tuples of them arrays, datetimes RFC 3339
    text; the keys in declaration order."""
    scope: dict[str, Any] = {"rfc3339": rfc3339}
    entries = []
    for name, kind, part in _fields_of(cls):
        value = f"value.{name}"
        if kind == "part":
            scope[f"dump_{name}"] = _dumper(part)
            value = f"dump_{name}({value})"
        elif kind == "parts":
            scope[f"dump_{name}"] = _dumper(part)
            value = f"[dump_{name}(v) for v in {value}]"
        elif kind == "instant":
            value = f"rfc3339({value})"
        entries.append(f"{name!r}: {value}")
    dump: Callable[[Any], dict[str, Any]] = _compiled(
        "def dump(value):\n    return {" + ", ".join(entries) + "}\n", scope, "dump"
    )
    return dump


def _loader(cls: type[Any], attributes: bool = False) -> Callable[[Any], Any]:
    """The inverse of _dumper: a dataclass from a document of its JSON shape (date-times as RFC 3339 text or
    aware datetimes); keys beyond its fields are ignored. With `attributes`, from an object holding the same
    values as attributes (and its parts as such objects) instead of a mapping."""
    scope: dict[str, Any] = {"cls": cls, "utc": _utc}
    arguments = []
    for name, kind, part in _fields_of(cls):
        value = f"document.{name}" if attributes else f"document[{name!r}]"
        if kind == "part":
            scope[f"load_{name}"] = _loader(part, attributes)
            value = f"load_{name}({value})"
        elif kind == "parts":
            scope[f"load_{name}"] = _loader(part, attributes)
            value = f"tuple([load_{name}(v) for v in {value}])"
        elif kind == "instant":
            value = f"utc({value})"
        arguments.append(value)
    load: Callable[[Mapping[str, Any]], Any] = _compiled(
        "def load(document):\n    return cls(" + ", ".join(arguments) + ")\n", scope, "load"
    )
    return load


def _fields_of(cls: type[Any]) -> list[tuple[str, str, Any]]:
    """(name, kind, part) per field in declaration order: kind "part" (a nested dataclass), "parts" (a tuple
    of them), "instant" (a datetime) or "value"."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, str, Any]] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.append((f.name, "part", hint))
        elif typing.get_origin(hint) is tuple:
            out.append((f.name, "parts", typing.get_args(hint)[0]))
        elif hint is datetime:
            out.append((f.name, "instant", None))
        else:
            out.append((f.name, "value", None))
    return out


def _compiled(source: str, scope: dict[str, Any], name: str) -> Any:
    exec(compile(source, f"<order mapping {name}>", "exec"), scope)  # the source is built from field names
    function: Any = scope[name]
    return function


def _utc(moment: str | datetime) -> datetime:
    return instant(moment) if isinstance(moment, str) else moment.astimezone(UTC)


def sum_problems(order: Order) -> list[str]:
    """Why the order's money does not add up (empty: it does).

    Rejected, not merely logged: amount = goods_total + delivery_cost + custom_fee, and goods_total is the sum
    of the items' total_price. Each item's own total_price against price and sale is not checked: the
    producer's rounding of the sale is not part of the contract (the sample: 453 at 30% off is 317).
    """
    p = order.payment
    problems = []
    if p.amount != p.goods_total + p.delivery_cost + p.custom_fee:
        problems.append("payment.amount is not goods_total + delivery_cost + custom_fee")
    if p.goods_total != sum(i.total_price for i in order.items):
        problems.append("payment.goods_total is not the sum of the items' total_price")
    return problems


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def instant(text: str) -> datetime:
    """An RFC 3339 date-time (already checked to be one) as an aware datetime in UTC."""
    return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)


def parse_uid(text: str) -> str:
    """An order_uid from a path, or InvalidInputError."""
    if not ORDER_UID.match(text):
        raise InvalidInputError("order_uid must be 1 to 128 letters, digits, '.', '_' or '-'")
    return text


# --- records and outcomes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record of the `orders` topic as it reached us: the original bytes and where they came from.

    partition and offset are None when the delivery did not say (a CloudEvent with its own id).
    """

    value: bytes
    key: bytes | None = None
    topic: str = "orders"
    partition: int | None = None
    offset: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    def where(self) -> str:
        if self.partition is None or self.offset is None:
            return f"{self.topic} (offset unknown)"
        return f"{self.topic}/{self.partition}@{self.offset}"


@dataclass(frozen=True, slots=True)
class Submission:
    """A record and what parsing made of it: an order, or the reason it is not one."""

    record: SourceRecord
    order: Order | None
    problem: str = ""


class Outcome(enum.Enum):
    STORED = "stored"  # new: stored now
    DUPLICATE = "duplicate"  # the same order was stored before: nothing changed
    CONFLICT = "conflict"  # another body under a stored order_uid: dead-lettered, the stored one kept
    INVALID = "invalid"  # not an order (not JSON, wrong types, rules): dead-lettered


@dataclass(frozen=True, slots=True)
class Verdict:
    record: SourceRecord
    outcome: Outcome
    order_uid: str = ""
    reason: str = ""  # why it was dead-lettered

    @property
    def dead_lettered(self) -> bool:
        return self.outcome in (Outcome.CONFLICT, Outcome.INVALID)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: SourceRecord
    reason: str


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What the repository made of a batch: per order_uid, the fingerprint it holds now."""

    inserted: frozenset[str]
    fingerprints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OrderSummary:
    """A line of the page's recent-orders list."""

    order_uid: str
    date_created: datetime
    amount: int
    currency: str
    items: int


class OrderNotFoundError(NotFoundError):
    def __init__(self, order_uid: str) -> None:
        super().__init__(f"order {order_uid} not found")


class OrderRejectedError(ShopError):
    """The database refused an order the validation let through (a constraint): dead-lettered, not retried."""


_ORDER_TO_JSON = _dumper(Order)  # after rfc3339 and instant, which they call
_ORDER_FROM_JSON = _loader(Order)
_ORDER_FROM_ATTRIBUTES = _loader(Order, attributes=True)
