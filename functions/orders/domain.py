"""The order viewer's domain: an order as the `orders` topic carries it, the records it arrives in, the
outcome of ingesting one, and the viewer's errors. No I/O, no pydantic, no driver here.

An order is immutable once stored: its fingerprint (SHA-256 of its canonical JSON) tells a redelivery of
the same order (nothing changes) from a different body under a stored uid (a conflict, dead-lettered).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Delivery:
    name: str
    phone: str
    zip: str
    city: str
    address: str
    region: str
    email: str


@dataclass(frozen=True, slots=True)
class Payment:
    transaction: str
    request_id: str
    currency: str
    provider: str
    amount: int
    payment_dt: int  # unix seconds
    bank: str
    delivery_cost: int
    goods_total: int
    custom_fee: int


@dataclass(frozen=True, slots=True)
class Item:
    chrt_id: int
    track_number: str
    price: int
    rid: str
    name: str
    sale: int  # percent
    size: str
    total_price: int
    nm_id: int
    brand: str
    status: int


@dataclass(frozen=True, slots=True)
class Order:
    order_uid: str
    track_number: str
    entry: str
    delivery: Delivery
    payment: Payment
    items: tuple[Item, ...]
    locale: str
    internal_signature: str
    customer_id: str
    delivery_service: str
    shardkey: str
    sm_id: int
    date_created: datetime  # timezone-aware, UTC
    oof_shard: str

    def to_json(self) -> dict[str, Any]:
        """The order exactly in the shape of data/wb-order-sample.json: same keys, same order, same types."""
        d, p = self.delivery, self.payment
        return {
            "order_uid": self.order_uid,
            "track_number": self.track_number,
            "entry": self.entry,
            "delivery": {
                "name": d.name,
                "phone": d.phone,
                "zip": d.zip,
                "city": d.city,
                "address": d.address,
                "region": d.region,
                "email": d.email,
            },
            "payment": {
                "transaction": p.transaction,
                "request_id": p.request_id,
                "currency": p.currency,
                "provider": p.provider,
                "amount": p.amount,
                "payment_dt": p.payment_dt,
                "bank": p.bank,
                "delivery_cost": p.delivery_cost,
                "goods_total": p.goods_total,
                "custom_fee": p.custom_fee,
            },
            "items": [
                {
                    "chrt_id": i.chrt_id,
                    "track_number": i.track_number,
                    "price": i.price,
                    "rid": i.rid,
                    "name": i.name,
                    "sale": i.sale,
                    "size": i.size,
                    "total_price": i.total_price,
                    "nm_id": i.nm_id,
                    "brand": i.brand,
                    "status": i.status,
                }
                for i in self.items
            ],
            "locale": self.locale,
            "internal_signature": self.internal_signature,
            "customer_id": self.customer_id,
            "delivery_service": self.delivery_service,
            "shardkey": self.shardkey,
            "sm_id": self.sm_id,
            "date_created": rfc3339(self.date_created),
            "oof_shard": self.oof_shard,
        }

    @property
    def fingerprint(self) -> str:
        canonical = json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


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
