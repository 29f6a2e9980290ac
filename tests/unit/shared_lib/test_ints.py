"""shared_lib.ints.parse_int: ints and decimal text in range, everything else told apart as not an integer or
out of range, huge text refused without converting it."""

from __future__ import annotations

import pytest

from shared_lib.ints import INT64_MAX, INT64_MIN, NotAnInteger, OutOfRange, parse_int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1),
        ("1", 1),
        ("007", 7),
        (INT64_MAX, INT64_MAX),
        (str(INT64_MAX), INT64_MAX),
        ("0" * 5000 + "9", 9),
    ],
)
def test_ints_and_decimal_text_in_range_are_read(value: object, expected: int) -> None:
    assert parse_int(value, 1, INT64_MAX) == expected


@pytest.mark.parametrize("value", [True, 1.0, None, "", "-", " 1", "1e3", "٣", "0x10", [1]])
def test_anything_else_is_not_an_integer(value: object) -> None:
    with pytest.raises(NotAnInteger):
        parse_int(value, 1, INT64_MAX)


@pytest.mark.parametrize("value", [0, "0", -1, INT64_MAX + 1, str(INT64_MAX + 1), "9" * 5000])
def test_integers_outside_the_range_are_out_of_range(value: object) -> None:
    with pytest.raises(OutOfRange):
        parse_int(value, 1, INT64_MAX)


def test_negatives_only_where_the_range_has_them() -> None:
    assert parse_int("-5", INT64_MIN, INT64_MAX) == -5
    assert parse_int(str(INT64_MIN), INT64_MIN, INT64_MAX) == INT64_MIN
    with pytest.raises(NotAnInteger):
        parse_int("-5", 1, INT64_MAX)
    with pytest.raises(NotAnInteger):  # text not allowed: only JSON numbers
        parse_int("5", 1, 10, strings=False)
