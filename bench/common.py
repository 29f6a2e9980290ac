"""Small pieces the benchmarks share: free ports, scratch directories, percentiles and printing figures.

CPU time from /proc and the alternation of what is compared are bench/cpu.py's."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from shared_lib.devtools.kafka_server import topic_size
from shared_lib.devtools.ports import free_port

__all__ = ["free_port", "topic_size"]

RESULTS = Path(__file__).resolve().parent / "results"


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory (a server's data, logs), removed when the benchmark's process exits: a
    PostgreSQL data directory alone is ~300 MB, and benchmarks run again and again."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def report(title: str, figures: Mapping[str, float | int | str]) -> None:
    """Print the figures and keep them in bench/results/<title>.json for the README."""
    print(f"\n== {title}")
    for name, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"  {name:<40} {shown}")
    RESULTS.mkdir(exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")[:60]
    (RESULTS / f"{slug}.json").write_text(
        json.dumps({"title": title, **figures}, indent=2, ensure_ascii=False)
    )
