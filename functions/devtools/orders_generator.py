"""`python -m functions.devtools.orders_generator --count 10000 --bad 5% --bootstrap 127.0.0.1:19092`:
realistic orders and a share of bad records to the `orders` topic, then how many were ingested and
dead-lettered.

A dev tool (make orders), not a function: it speaks Kafka and reads the orders database itself. Bad records
come in every kind the consumer must refuse (malformed JSON, wrong types, missing fields, dates in the
future, sums that do not add up, …) plus conflicts (another body under a uid sent before, refused) and
duplicates (an exact resend, ingested once and not refused).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

FIRST = ["Anna", "Ivan", "Maria", "Dmitry", "Olga", "Sergey", "Elena", "Alexey", "Noa", "Yosef", "Sara"]
LAST = ["Ivanova", "Petrov", "Smirnova", "Kuznetsov", "Levi", "Cohen", "Popova", "Volkov", "Mizrahi", "Orlov"]
CITIES = [
    ("Moscow", "Moscow", "101000"),
    ("Saint Petersburg", "Leningrad Oblast", "190000"),
    ("Kazan", "Tatarstan", "420000"),
    ("Novosibirsk", "Novosibirsk Oblast", "630000"),
    ("Kiryat Mozkin", "Kraiot", "2639809"),
    ("Haifa", "Haifa District", "3100000"),
    ("Almaty", "Almaty Region", "050000"),
]
STREETS = ["Ploshad Mira", "Lenina", "Tverskaya", "Nevsky prospekt", "Sadovaya", "HaNasi", "Abay avenue"]
PRODUCTS = [
    ("Mascaras", "Vivienne Sabo"),
    ("Lipstick", "Maybelline"),
    ("Running shoes", "Nike"),
    ("Wireless earbuds", "Xiaomi"),
    ("Cotton T-shirt", "Uniqlo"),
    ("Kettle", "Bosch"),
    ("Notebook A5", "Moleskine"),
    ("Yoga mat", "Demix"),
    ("Phone case", "Spigen"),
    ("Backpack", "Herschel"),
]
CURRENCIES = ["RUB", "RUB", "RUB", "USD", "EUR", "KZT", "ILS"]
BANKS = ["alpha", "sber", "tinkoff", "vtb", "leumi"]
SIZES = ["0", "S", "M", "L", "XL", "42", "one size"]
SERVICES = ["meest", "cdek", "boxberry", "russian-post"]

INVALID_KINDS = (
    "malformed_json",
    "not_an_object",
    "wrong_types",
    "missing_fields",
    "unknown_field",
    "future_date",
    "bad_date",
    "sum_mismatch",
    "goods_mismatch",
    "no_items",
    "item_track_mismatch",
    "bad_email",
    "bad_phone",
    "bad_currency",
    "negative_money",
    "no_transaction",
)
# besides the invalid kinds, the bad share holds these: a conflict is refused, a duplicate is not
BAD_KINDS = (*INVALID_KINDS, "conflict", "duplicate")


def make_uid(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}gen"


def make_order(rng: random.Random, uid: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """A valid order, shaped as data/wb-order-sample.json, with sums that add up."""
    now = now or datetime.now(UTC)
    uid = uid or make_uid(rng)
    track = "WB" + "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(10))
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, region, zip_code = rng.choice(CITIES)
    currency = rng.choice(CURRENCIES)
    items: list[dict[str, Any]] = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
        name, brand = rng.choice(PRODUCTS)
        price = rng.randrange(100, 20_000)
        sale = rng.choice([0, 0, 10, 15, 20, 30, 50])
        items.append(
            {
                "chrt_id": rng.randrange(1_000_000, 99_999_999),
                "track_number": track,
                "price": price,
                "rid": f"{rng.getrandbits(80):020x}r",
                "name": name,
                "sale": sale,
                "size": rng.choice(SIZES),
                "total_price": price * (100 - sale) // 100,
                "nm_id": rng.randrange(100_000, 9_999_999),
                "brand": brand,
                "status": rng.choice([200, 202, 202, 300]),
            }
        )
    goods = sum(i["total_price"] for i in items)
    delivery_cost = rng.choice([0, 300, 500, 1500])
    custom_fee = rng.choice([0, 0, 0, 150])
    created = now - timedelta(seconds=rng.randrange(60, 30 * 24 * 3600))
    return {
        "order_uid": uid,
        "track_number": track,
        "entry": "WBIL",
        "delivery": {
            "name": f"{first} {last}",
            "phone": "+7" + "".join(rng.choice("0123456789") for _ in range(10)),
            "zip": zip_code,
            "city": city,
            "address": f"{rng.choice(STREETS)} {rng.randrange(1, 200)}",
            "region": region,
            "email": f"{first.lower()}.{last.lower()}{rng.randrange(100)}@example.com",
        },
        "payment": {
            "transaction": uid,
            "request_id": "",
            "currency": currency,
            "provider": "wbpay",
            "amount": goods + delivery_cost + custom_fee,
            "payment_dt": int(created.timestamp()) + rng.randrange(0, 3600),
            "bank": rng.choice(BANKS),
            "delivery_cost": delivery_cost,
            "goods_total": goods,
            "custom_fee": custom_fee,
        },
        "items": items,
        "locale": rng.choice(["en", "ru"]),
        "internal_signature": "",
        "customer_id": f"{first.lower()}{rng.randrange(10_000)}",
        "delivery_service": rng.choice(SERVICES),
        "shardkey": str(rng.randrange(10)),
        "sm_id": rng.randrange(1, 100),
        "date_created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "oof_shard": str(rng.randrange(1, 3)),
    }


def encode(order: Any) -> bytes:
    return json.dumps(order, ensure_ascii=False, separators=(",", ":")).encode()


def invalid(kind: str, rng: random.Random, now: datetime | None = None) -> tuple[str, bytes]:
    """(key, value) of a record of that invalid kind; the key is the uid it claims, or a made-up one."""
    order = make_order(rng, now=now)
    uid = order["order_uid"]
    p = order["payment"]
    if kind == "malformed_json":
        return uid, encode(order)[: rng.randrange(10, 60)]
    if kind == "not_an_object":
        return uid, encode([order])
    if kind == "wrong_types":
        p["amount"] = str(p["amount"])
    elif kind == "missing_fields":
        del order[rng.choice(["payment", "delivery", "items", "date_created", "order_uid"])]
    elif kind == "unknown_field":
        order["discount_code"] = "SPRING"
    elif kind == "future_date":
        order["date_created"] = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif kind == "bad_date":
        order["date_created"] = "26.11.2021 06:22"
    elif kind == "sum_mismatch":
        p["amount"] += 1
    elif kind == "goods_mismatch":
        order["items"][0]["total_price"] += 7
        p["amount"] += 7  # the amount still adds up: only goods_total is off
    elif kind == "no_items":
        order["items"] = []
    elif kind == "item_track_mismatch":
        order["items"][0]["track_number"] = "WBOTHERTRACK"
    elif kind == "bad_email":
        order["delivery"]["email"] = "not-an-email"
    elif kind == "bad_phone":
        order["delivery"]["phone"] = "call me"
    elif kind == "bad_currency":
        p["currency"] = "ABC"
    elif kind == "negative_money":
        p["delivery_cost"] = -p["delivery_cost"] - 1
    elif kind == "no_transaction":
        p["transaction"] = "  "
    else:
        raise ValueError(f"unknown invalid kind {kind!r}")
    return uid, encode(order)


@dataclass
class Plan:
    """What to send, in order: (key, value, kind); kind: "valid", an invalid kind, "conflict", "duplicate"."""

    records: list[tuple[str, bytes, str]] = field(default_factory=list)

    @property
    def valid_uids(self) -> set[str]:
        return {key for key, _, kind in self.records if kind == "valid"}

    @property
    def refused(self) -> list[bytes]:
        return [value for _, value, kind in self.records if kind not in ("valid", "duplicate")]

    def kinds(self) -> Counter[str]:
        return Counter(kind for _, _, kind in self.records)


def plan(count: int, bad_share: float, rng: random.Random, now: datetime | None = None) -> Plan:
    """`count` records, about `bad_share` of them bad, spread through the stream. A conflict or a duplicate
    always follows the valid order it repeats (same key, so same partition: it arrives after it)."""
    bad = round(count * bad_share)
    slots = set(rng.sample(range(count), bad)) if bad else set()
    result = Plan()
    sent: list[tuple[str, bytes, dict[str, Any]]] = []
    for index in range(count):
        kind = rng.choice(BAD_KINDS) if index in slots else "valid"
        if kind in ("conflict", "duplicate") and not sent:
            kind = rng.choice(INVALID_KINDS)
        if kind == "valid":
            order = make_order(rng, now=now)
            value = encode(order)
            sent.append((order["order_uid"], value, order))
            result.records.append((order["order_uid"], value, "valid"))
        elif kind == "duplicate":
            uid, value, _ = rng.choice(sent)
            result.records.append((uid, value, "duplicate"))
        elif kind == "conflict":
            uid, _, original = rng.choice(sent)
            changed = json.loads(json.dumps(original))
            changed["delivery"]["address"] += " (changed)"
            result.records.append((uid, encode(changed), "conflict"))
        else:
            key, value = invalid(kind, rng, now)
            result.records.append((key, value, kind))
    return result


# --- the command ------------------------------------------------------------------------------------------


def _share(text: str) -> float:
    value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a share from 0 to 1, or a percentage such as 5%")
    return value


def _bar(done: int, total: int, started: float, label: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    rate = done / max(time.monotonic() - started, 1e-6)
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:,.0f}/s ")
    sys.stderr.flush()


def send(bootstrap: str, topic: str, records: Iterable[tuple[str, bytes, str]], total: int) -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="orders-generator",
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    acked = 0
    failed: list[BaseException] = []

    def ok(_: Any) -> None:
        nonlocal acked
        acked += 1

    started = time.monotonic()
    try:
        for index, (key, value, _) in enumerate(records, 1):
            future = producer.send(topic, key=key.encode(), value=value)
            future.add_callback(ok)
            future.add_errback(failed.append)
            if index % 500 == 0 or index == total:
                _bar(index, total, started, "sending ")
        producer.flush(60)
    finally:
        producer.close(10)
    sys.stderr.write("\n")
    if failed:
        print(f"{len(failed)} records could not be sent: {failed[0]!r}", file=sys.stderr)
    return acked


def dead_letter_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of every partition of the dead-letter topic now: this run's letters come after."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        consumer.close()


def read_dead_letters(
    bootstrap: str, topic: str, start: dict[int, int], wanted: Counter[bytes], timeout: float
) -> list[tuple[bytes, str]]:
    """This run's letters: (value, reason) of the records after `start` whose value is wanted, each value at
    most as many times as it was sent (two bad records with the same body are two letters)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    remaining = Counter(wanted)
    letters: list[tuple[bytes, str]] = []
    try:
        partitions = [TopicPartition(topic, p) for p in start]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start[tp.partition])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(letters) < sum(wanted.values()):
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    if remaining[record.value] > 0:
                        remaining[record.value] -= 1
                        reason = dict(record.headers or []).get("reason", b"").decode("utf-8", "replace")
                        letters.append((record.value, reason or "(no reason)"))
    finally:
        consumer.close()
    return letters


_UID = re.compile(r"\b[0-9a-f]{16}gen\b")


def reason_text(reason: str) -> str:
    """A dead letter's reason in full, the generated order uid it names replaced, so reasons group."""
    return _UID.sub("<order_uid>", reason)


@dataclass(frozen=True)
class Outcome:
    """What became of one run's records, and whether it adds up: every record sent is an ingested order, a
    dead letter or an exact resend (which changes nothing and is not refused)."""

    sent: int
    valid: int
    resends: int
    refused: int
    ingested: int  # -1: the database could not be read
    by_kind: dict[str, Counter[str]]  # generator kind -> the consumer's reasons for its dead letters

    @property
    def dead_lettered(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.by_kind.values())

    @property
    def reconciled(self) -> bool:
        return (
            self.ingested == self.valid
            and self.dead_lettered == self.refused
            and self.sent == self.ingested + self.dead_lettered + self.resends
        )

    def report(self) -> list[str]:
        ingested = str(self.ingested) if self.ingested >= 0 else "unknown"
        mark = "adds up" if self.reconciled else "DOES NOT ADD UP"
        lines = [
            f"sent {self.sent} = ingested {ingested} + dead-lettered {self.dead_lettered}"
            f" + exact resends {self.resends}   ({mark})",
            f"    ingested:       {ingested} of {self.valid} valid orders",
            f"    dead-lettered:  {self.dead_lettered} of {self.refused} refused records",
            f"    exact resends:  {self.resends} (stored once, not refused)",
            "dead letters by kind (the generator's kind: the consumer's reason):",
        ]
        for kind, reasons in sorted(self.by_kind.items()):
            for reason, n in reasons.most_common():
                lines.append(f"    {n:>6}  {kind}: {reason}")
        return lines


def outcome(work: Plan, sent: int, ingested: int, letters: list[tuple[bytes, str]]) -> Outcome:
    kinds_of: dict[bytes, list[str]] = {}
    for _, value, kind in work.records:
        if kind not in ("valid", "duplicate"):
            kinds_of.setdefault(value, []).append(kind)
    by_kind: dict[str, Counter[str]] = {}
    for value, reason in letters:
        kinds = kinds_of.get(value) or ["unexpected"]
        kind = kinds.pop(0) if len(kinds) > 1 else kinds[0]
        by_kind.setdefault(kind, Counter())[reason_text(reason)] += 1
    counts = work.kinds()
    return Outcome(
        sent=sent,
        valid=counts["valid"],
        resends=counts["duplicate"],
        refused=len(work.refused),
        ingested=ingested,
        by_kind=by_kind,
    )


def wait_for(check: Callable[[], int], expected: int, timeout: float, label: str) -> int:
    started = time.monotonic()
    value = check()
    while value < expected and time.monotonic() - started < timeout:
        _bar(value, expected, started, label)
        time.sleep(0.5)
        value = check()
    _bar(value, expected, started, label)
    sys.stderr.write("\n")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="records to send")
    parser.add_argument("--bad", type=_share, default=0.05, help="share of bad records: 5%% or 0.05")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092", help="HOST:PORT of a broker")
    parser.add_argument("--topic", default="orders")
    parser.add_argument("--dlq", default="orders.dlq")
    parser.add_argument("--database-url", default=None, help="default: ORDERS_DATABASE_URL")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the outcome")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    work = plan(args.count, args.bad, rng)
    kinds = work.kinds()
    print(f"{args.count} records: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())), flush=True)
    start = dead_letter_offsets(args.bootstrap, args.dlq)
    sent = send(args.bootstrap, args.topic, work.records, len(work.records))

    valid = sorted(work.valid_uids)
    ingested = -1
    try:
        from functions.orders.adapters.postgres import PgOrderRepository
        from functions.orders.settings import OrdersSettings
        from shared_lib.postgres import ConnectionPool

        pool = ConnectionPool(args.database_url or OrdersSettings().database_url, size=1, name="generator")
        repository = PgOrderRepository(pool)

        def stored() -> int:
            return sum(repository.count(valid[i : i + 5000]) for i in range(0, len(valid), 5000))

        ingested = wait_for(stored, len(valid), args.wait, "ingesting")
        pool.close()
    except Exception as exc:
        print(f"the orders database could not be read: {exc!r}", file=sys.stderr)
    letters = read_dead_letters(args.bootstrap, args.dlq, start, Counter(work.refused), min(args.wait, 30.0))
    result = outcome(work, sent, ingested, letters)
    print()
    for line in result.report():
        print(line)
    return 0 if result.reconciled else 1


if __name__ == "__main__":
    sys.exit(main())
