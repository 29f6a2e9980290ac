"""The catalogue: fixed products from the shipped data files plus deterministic generated ones.

Generated products are computed from their SKU, so a catalogue of a million SKUs costs no memory or start-up.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from pathlib import Path

from functions.product.domain import Product

DATA = Path(__file__).resolve().parent.parent / "data"
GENERATED_BASE_SKU = 5_000_000_000  # above every fixed SKU, so generated ones never collide

_ADJECTIVES = (
    "Классический",
    "Новый",
    "Большой",
    "Малый",
    "Удобный",
    "Яркий",
    "Тихий",
    "Быстрый",
    "Тёплый",
    "Лёгкий",
    "Прочный",
    "Домашний",
)
_NOUNS = (
    "чайник",
    "рюкзак",
    "блокнот",
    "свитер",
    "фонарь",
    "стул",
    "набор карандашей",
    "зонт",
    "плед",
    "термос",
    "коврик",
    "светильник",
    "роман",
    "сборник рассказов",
)


def describe(sku: int) -> Product:
    """A deterministic name and price for a SKU that has no fixed entry."""
    digest = hashlib.blake2b(sku.to_bytes(8, "big"), digest_size=8).digest()
    adjective = _ADJECTIVES[digest[0] % len(_ADJECTIVES)]
    noun = _NOUNS[digest[1] % len(_NOUNS)]
    price = 100 + int.from_bytes(digest[2:6], "big") % 9900
    return Product(sku=sku, name=f"{adjective} {noun} {sku}", price=price)


class GeneratedCatalogue:
    def __init__(self, fixed: dict[int, Product], generated_count: int) -> None:
        self.fixed = fixed
        self.fixed_skus = sorted(fixed)
        self.generated_count = generated_count

    @classmethod
    def from_data(cls, generated_count: int, data_dir: Path = DATA) -> GeneratedCatalogue:
        known = json.loads((data_dir / "known-products.json").read_text(encoding="utf-8"))["products"]
        stock = json.loads((data_dir / "stock-data.json").read_text(encoding="utf-8"))
        fixed = {int(row["sku"]): describe(int(row["sku"])) for row in stock}
        fixed.update({int(p["sku"]): Product(int(p["sku"]), p["name"], int(p["price"])) for p in known})
        return cls(fixed, generated_count)

    def get(self, sku: int) -> Product | None:
        product = self.fixed.get(sku)
        if product is not None:
            return product
        if GENERATED_BASE_SKU < sku <= GENERATED_BASE_SKU + self.generated_count:
            return describe(sku)
        return None

    def page(self, start_after_sku: int, count: int) -> list[Product]:
        result: list[Product] = []
        index = bisect.bisect_right(self.fixed_skus, start_after_sku)
        for sku in self.fixed_skus[index : index + count]:
            result.append(self.fixed[sku])
        first = max(start_after_sku, GENERATED_BASE_SKU) + 1
        last = min(first + count - len(result) - 1, GENERATED_BASE_SKU + self.generated_count)
        result.extend(describe(sku) for sku in range(first, last + 1))
        return result
