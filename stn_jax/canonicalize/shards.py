"""Shards: the unit of work and of idempotence of distributed canonicalisation.

A *shard* is a contiguous range ``[start, stop)`` of input rows (row indices as defined by the
readers: :mod:`stn_jax.canonicalize.readers`). :func:`plan_shards` cuts an input into shards of at
most ``rows_per_shard`` rows, starting a new shard at every Parquet file (a shard never spans two
input files) and otherwise at multiples of ``rows_per_shard`` counted from the file's first row.
The plan is a pure function of the input and ``rows_per_shard``, so a re-run sees the same shards.

Each shard is canonicalised as a whole by one worker and written as one part,
``part-<start:012d>-<stop:012d>.parquet`` (plus ``_rejects/`` of the same name when it has
rejects), each file written atomically. A shard is *committed* once the driver records it in
``_manifest.json`` (:class:`ShardLedger`); the files of a shard that is not recorded are leftovers
of an interrupted job and are deleted when the job is re-run, which then canonicalises that shard
again. So a re-run skips exactly the committed shards and never duplicates a row. The manifest has
the local engine's format (parts listed by ascending ``start``), so
:func:`~stn_jax.canonicalize.writer.read_output` reads either engine's output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from stn_jax.canonicalize.readers import RawBatch, Reader
from stn_jax.canonicalize.writer import FORMAT_VERSION, MANIFEST, REJECTS_DIR, remove_uncommitted, save_manifest


@dataclasses.dataclass(frozen=True, order=True)
class Shard:
    """Input rows ``[start, stop)``."""
    start: int
    stop: int

    @property
    def part_name(self) -> str:
        """The shard's output file name, ``part-<start:012d>-<stop:012d>.parquet``."""
        return f"part-{self.start:012d}-{self.stop:012d}.parquet"


def plan_shards(reader: Reader, *, rows_per_shard: int) -> list[Shard]:
    """Cut ``reader``'s rows into shards of at most ``rows_per_shard`` rows.

    Args:
      reader: the input (its length and :meth:`~stn_jax.canonicalize.readers.Reader.file_starts`).
      rows_per_shard: positive; choose a multiple of the batch size so every device batch but a
        file's last is full.

    Returns:
      the shards in row order; they cover ``[0, len(reader))`` exactly once.
    """
    if not isinstance(rows_per_shard, int) or isinstance(rows_per_shard, bool) or rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be a positive integer; got {rows_per_shard!r}")
    total = len(reader)
    starts = sorted({s for s in reader.file_starts() if 0 <= s < total})
    shards = []
    for lo, hi in zip(starts, starts[1:] + [total], strict=True):
        shards += [Shard(s, min(s + rows_per_shard, hi)) for s in range(lo, hi, rows_per_shard)]
    return shards


class ShardReader(Reader):
    """The rows ``[shard.start, shard.stop)`` of ``reader``, keeping their row indices.

    ``iter_batches(batch_size, start=shard.start)`` yields the shard's rows in batches of
    ``batch_size`` and stops at ``shard.stop``; ``len()`` is ``shard.stop`` (rows are indexed as
    in the whole input).
    """

    def __init__(self, reader: Reader, shard: Shard):
        self.reader, self.shard = reader, shard
        self.kind = reader.kind

    def __len__(self) -> int:
        return self.shard.stop

    def describe(self) -> dict[str, Any]:
        return {**self.reader.describe(), "shard": [self.shard.start, self.shard.stop]}

    def iter_batches(self, batch_size: int, *, start: int = 0) -> Iterator[RawBatch]:
        if not self.shard.start <= start <= self.shard.stop:
            raise ValueError(f"start must lie in the shard [{self.shard.start}, {self.shard.stop}]; "
                             f"got {start}")
        for raw in self.reader.iter_batches(batch_size, start=start):
            keep = min(len(raw.ids), self.shard.stop - raw.start)
            if keep <= 0:
                return
            yield RawBatch(raw.start, raw.ids[:keep], raw.payloads[:keep])
            if raw.start + keep >= self.shard.stop:
                return


class ShardLedger:
    """``_manifest.json`` of a sharded run: which shards are committed, recorded in any order.

    Args:
      output_dir: the output directory (created if missing).
      input_info: JSON-able input fingerprint and settings (the shard size included); a resume
        refuses to continue if they differ from the recorded ones.
      resume: continue the run recorded in ``output_dir``; without it the directory must not
        already hold a manifest.

    Opening the ledger deletes every part file the manifest does not list (an interrupted
    commit); only one driver may use an output directory at a time.
    """

    def __init__(self, output_dir: str | os.PathLike, *, input_info: dict[str, Any],
                 resume: bool = False):
        self.output_dir = os.fspath(output_dir)
        os.makedirs(os.path.join(self.output_dir, REJECTS_DIR), exist_ok=True)
        path = os.path.join(self.output_dir, MANIFEST)
        info = json.loads(json.dumps(input_info))
        if os.path.exists(path):
            if not resume:
                raise FileExistsError(f"{self.output_dir!r} already holds a canonicalisation run "
                                      f"({MANIFEST}); pass --resume to continue it or choose a new "
                                      f"output directory")
            with open(path) as f:
                self.manifest = json.load(f)
            if self.manifest.get("input") != info:
                raise ValueError(f"cannot resume: the input or settings differ from the recorded run.\n"
                                 f"recorded: {self.manifest.get('input')}\nnow:      {info}")
        else:
            self.manifest = {"format": FORMAT_VERSION, "input": info, "parts": [], "complete": False}
        remove_uncommitted(self.output_dir, self.manifest)
        self.save()

    @property
    def committed(self) -> set[Shard]:
        """The shards recorded as committed."""
        return {Shard(p["start"], p["stop"]) for p in self.manifest["parts"]}

    @property
    def totals(self) -> dict[str, int]:
        parts = self.manifest["parts"]
        return {"rows_in": sum(p["stop"] - p["start"] for p in parts),
                "rows_written": sum(p["rows"] for p in parts),
                "rows_rejected": sum(p["rejects"] for p in parts), "parts": len(parts)}

    def record(self, entry: dict[str, Any]) -> None:
        """Record a written shard (its manifest entry: ``name``, ``start``, ``stop``, ``rows``,
        ``rejects``, ``rejects_file``); call :meth:`save` to commit it."""
        shard = Shard(int(entry["start"]), int(entry["stop"]))
        if entry["rows"] + entry["rejects"] != shard.stop - shard.start:
            raise ValueError(f"shard {shard}: rows ({entry['rows']}) + rejects ({entry['rejects']}) "
                             f"!= stop - start ({shard.stop - shard.start})")
        if shard in self.committed:
            raise ValueError(f"shard {shard} is already committed")
        self.manifest["parts"].append({**entry, "time": entry.get("time", time.time())})
        self.manifest["parts"].sort(key=lambda p: p["start"])

    def save(self) -> None:
        """Commit the recorded shards: rewrite the manifest atomically."""
        save_manifest(self.output_dir, self.manifest)

    def finish(self, *, total_rows: int) -> None:
        """Mark the run complete once the committed shards cover ``[0, total_rows)`` exactly."""
        covered, parts = 0, self.manifest["parts"]
        for p in parts:
            if p["start"] != covered:
                break
            covered = p["stop"]
        if covered != total_rows:
            raise ValueError(f"the committed shards cover rows [0, {covered}) of {total_rows}")
        self.manifest["complete"] = True
        self.manifest["totals"] = self.totals
        self.save()
        remove_uncommitted(self.output_dir, self.manifest)   # temporaries of killed workers
