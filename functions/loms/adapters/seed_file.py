"""Reads the initial stock (data/stock-data.json: sku, total_count, reserved) shipped with loms."""

from __future__ import annotations

import json
from pathlib import Path

from functions.loms.domain import StockLevel


def read_stock_seed(path: Path) -> list[StockLevel]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [StockLevel(int(row["sku"]), int(row["total_count"]), int(row["reserved"])) for row in rows]
