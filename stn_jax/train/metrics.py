"""Metrics log: one JSON object per line in ``WORKDIR/metrics.jsonl``.

Records carry ``step`` and ``split`` ("train" | "val" | "test") plus scalar values. On resume
the log is truncated to records with ``step <= restored step`` so a resumed run's log equals
an uninterrupted run's (apart from wall-clock fields: ``time``, ``images_per_s``).
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

WALL_CLOCK_FIELDS = ("time", "images_per_s")


class MetricsLog:
    """Append-only JSONL writer for `path`."""

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(_plain(record)) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def truncate_after(self, step: int) -> None:
        """Drop records with ``step > step`` (lines written after the checkpoint being resumed)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file ([] when missing); a torn last line is skipped."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in record.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        out[key] = value
    return out
