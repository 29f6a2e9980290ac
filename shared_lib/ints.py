"""The one integer parser for ids and counts read at the edges (paths, JSON bodies, events, replies).

An integer is an int (never a bool) or, where text is allowed, decimal digits (with a leading `-` only when
negatives are in range). Each caller words its own error; here the two reasons are told apart.
"""

from __future__ import annotations

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class NotAnInteger(ValueError):
    """Neither an int nor decimal text."""


class OutOfRange(ValueError):
    """An integer, outside the range asked for."""


def parse_int(value: object, low: int, high: int, *, strings: bool = True) -> int:
    """`value` as an integer from `low` to `high`, or NotAnInteger / OutOfRange.

    Text with more digits than the range's bounds is out of range without being converted (int() refuses
    over 4300 digits, leading zeros included)."""
    if isinstance(value, str) and strings:
        negative = value.startswith("-") and low < 0
        digits = value[1:] if negative else value
        if not digits.isascii() or not digits.isdigit():
            raise NotAnInteger(f"{value[:40]!r} is not an integer")
        digits = digits.lstrip("0")
        if len(digits) > len(str(max(abs(low), abs(high)))):
            raise OutOfRange(f"{value[:40]}… is out of range")
        value = int(digits or "0") * (-1 if negative else 1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise NotAnInteger(f"a {type(value).__name__} is not an integer")
    if not low <= value <= high:
        raise OutOfRange(f"{value} is outside {low}..{high}")
    return value
