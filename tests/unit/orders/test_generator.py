"""`make orders`' own reconciliation: sent = ingested + dead-lettered + exact resends, each letter counted as
often as its body was sent, reasons in full and grouped under the generator's kind."""

from __future__ import annotations

import random

from functions.devtools import orders_generator as generator


def _plan() -> generator.Plan:
    rng = random.Random(7)
    plan = generator.Plan()
    orders = [generator.make_order(rng) for _ in range(3)]
    for order in orders:
        plan.records.append((order["order_uid"], generator.encode(order), "valid"))
    plan.records.append((orders[0]["order_uid"], generator.encode(orders[0]), "duplicate"))
    bad = b'{"order_uid": "x"'
    plan.records += [("k1", bad, "malformed_json"), ("k2", bad, "malformed_json")]  # identical bodies
    plan.records.append(("k3", b'["an array"]', "not_an_object"))
    return plan


def test_two_bad_records_with_the_same_body_are_two_dead_letters_and_it_adds_up() -> None:
    plan = _plan()
    bad = b'{"order_uid": "x"'
    letters = [
        (bad, "invalid: not JSON"),
        (bad, "invalid: not JSON"),
        (b'["an array"]', "invalid: not an object"),
    ]
    result = generator.outcome(plan, sent=7, ingested=3, letters=letters)
    assert (result.valid, result.resends, result.refused, result.dead_lettered) == (3, 1, 3, 3)
    assert result.reconciled
    report = "\n".join(result.report())
    assert "sent 7 = ingested 3 + dead-lettered 3 + exact resends 1   (adds up)" in report
    assert "2  malformed_json: invalid: not JSON" in report
    assert "1  not_an_object: invalid: not an object" in report


def test_a_missing_letter_or_order_does_not_add_up() -> None:
    plan = _plan()
    bad = b'{"order_uid": "x"'
    assert not generator.outcome(plan, 7, 3, [(bad, "invalid: not JSON")]).reconciled
    letters = [(bad, "r"), (bad, "r"), (b'["an array"]', "r")]
    assert not generator.outcome(plan, 7, 2, letters).reconciled


def test_reasons_are_kept_whole_and_name_no_generated_uid() -> None:
    long = "invalid: payment.amount: Input should be a valid integer, unable to parse string as an integer"
    assert generator.reason_text(long) == long  # not cut at 40 characters
    conflict = "conflict: order_uid 0123456789abcdefgen is stored with a different body"
    assert (
        generator.reason_text(conflict) == "conflict: order_uid <order_uid> is stored with a different body"
    )
