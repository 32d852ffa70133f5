"""Atomic, resumable Parquet output for bulk canonicalisation.

Output directory layout::

    DST/
      _manifest.json             the ledger: input fingerprint + committed parts (JSON)
      part-00000.parquet         canonicalised rows of input rows [start, stop)   (OUTPUT_SCHEMA)
      part-00001.parquet
      ...
      _rejects/part-00000.parquet rejected rows of the same input range          (REJECT_SCHEMA)
      ...

A part is written to a hidden temporary file and moved into place with ``os.replace`` (atomic on
POSIX), then its rejects part likewise, and only then is the manifest rewritten (again temp file +
``os.replace``) to record that input rows ``[start, stop)`` are committed. A crash at any point
leaves the manifest describing only complete parts; a part file or rejects file that the manifest
does not list is an orphan from an interrupted commit and is overwritten when that range is
processed again, so a resumed run never duplicates a row. Names starting with ``_`` or ``.`` are
ignored by pyarrow's dataset discovery, so ``pyarrow.parquet.read_table(DST)`` reads exactly the
canonicalised rows of a completed run (``"complete": true`` in the manifest); :func:`read_output`
reads only the parts the manifest commits, at any time.

Row accounting is recorded per part: ``stop - start == rows + rejects``. The Ray engine writes
the same layout with parts named by their input row range, committed in any order
(:mod:`stn_jax.canonicalize.shards`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MANIFEST = "_manifest.json"
REJECTS_DIR = "_rejects"
FORMAT_VERSION = 1


def _schemas():
    import pyarrow as pa

    output = pa.schema([
        pa.field("row", pa.int64(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("image_png", pa.binary(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("channels", pa.int32(), nullable=False),
        pa.field("transform", pa.string(), nullable=False),
        pa.field("params", pa.list_(pa.float32()), nullable=False),
        pa.field("prediction", pa.int32(), nullable=True),
        pa.field("confidence", pa.float32(), nullable=True),
    ], metadata={"stn_jax.format": f"canonicalize/{FORMAT_VERSION}"})
    rejects = pa.schema([
        pa.field("row", pa.int64(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ], metadata={"stn_jax.format": f"canonicalize-rejects/{FORMAT_VERSION}"})
    return output, rejects


OUTPUT_SCHEMA, REJECT_SCHEMA = _schemas()
"""``OUTPUT_SCHEMA``: one row per canonicalised input row:

- ``row`` int64: 0-based index of the row in the input's order (folder: sorted relative paths;
  npz: array index; Parquet: files sorted by path, then row order).
- ``source_id`` string: relative path (folder), ``"images[i]"`` (npz), the id column or
  ``"<file>#<row in file>"`` (Parquet).
- ``image_png`` binary: the canonicalised image (the spatial transformer's output), PNG encoded,
  8 bits per channel (values in [0, 1] clipped and rounded to 0..255). 1 channel: greyscale (L);
  3: RGB; any other count: the channels side by side as one greyscale image of width W * C.
- ``height``, ``width``, ``channels`` int32: shape of the canonicalised image (before the PNG
  side-by-side layout).
- ``transform`` string: the transformer's kind (``affine``, ``tps``, ...).
- ``params`` list<float32>: the transformer's P parameters (e.g. affine: the 2x3 theta row-major,
  mapping output to input normalised coordinates).
- ``prediction`` int32 / ``confidence`` float32: the classifier's argmax class and its softmax
  probability; null if the model has no classifier.

``REJECT_SCHEMA``: ``row``, ``source_id``, ``reason`` (why the row could not be canonicalised).
"""


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a float (H, W, C) image in [0, 1] (see ``image_png`` in OUTPUT_SCHEMA)."""
    import io

    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W, C); got {image.shape}")
    u8 = np.round(np.clip(np.nan_to_num(image, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    c = u8.shape[2]
    if c == 1:
        pil = Image.fromarray(u8[:, :, 0], mode="L")
    elif c == 3:
        pil = Image.fromarray(u8, mode="RGB")
    else:
        pil = Image.fromarray(np.concatenate([u8[:, :, k] for k in range(c)], axis=1), mode="L")
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_png` for 1- and 3-channel images: float32 (H, W, C) in [0, 1]."""
    import io

    from PIL import Image

    arr = np.asarray(Image.open(io.BytesIO(data)), np.float32) / 255.0
    return arr[:, :, None] if arr.ndim == 2 else arr


def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it to
    ``path``: readers see the old file or the whole new one, never a part."""
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write_bytes(path: str, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    _atomic_write(path, write)


def _atomic_write_table(path: str, table) -> None:
    import pyarrow.parquet as pq

    _atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def output_table(*, rows: Sequence[int], source_ids: Sequence[str], images: np.ndarray,
                 transform: str, params: np.ndarray, predictions: np.ndarray | None,
                 confidences: np.ndarray | None):
    """Canonicalised rows as a ``pyarrow.Table`` with exactly :data:`OUTPUT_SCHEMA`.

    Args:
      rows, source_ids: (n,) input row index and source id per row.
      images: float (n, H, W, C) canonicalised images in [0, 1] (PNG-encoded by
        :func:`encode_png`).
      transform: the transformer kind.
      params: (n, P) transform parameters.
      predictions, confidences: (n,) or None (written as nulls).
    """
    import pyarrow as pa

    n = len(rows)
    images = np.asarray(images)
    params = np.asarray(params, np.float32).reshape(n, -1) if n else np.zeros((0, 0), np.float32)
    pngs = [encode_png(im) for im in images]
    h, w, c = (images.shape[1:] if n else (0, 0, 0))
    return pa.Table.from_arrays([
        pa.array(np.asarray(rows, np.int64), pa.int64()),
        pa.array(list(source_ids), pa.string()),
        pa.array(pngs, pa.binary()),
        pa.array(np.full(n, h, np.int32)), pa.array(np.full(n, w, np.int32)),
        pa.array(np.full(n, c, np.int32)),
        pa.array([transform] * n, pa.string()),
        pa.array(list(params), pa.list_(pa.float32())),
        pa.nulls(n, pa.int32()) if predictions is None
        else pa.array(np.asarray(predictions, np.int32)),
        pa.nulls(n, pa.float32()) if confidences is None
        else pa.array(np.asarray(confidences, np.float32)),
    ], schema=OUTPUT_SCHEMA)


def rejects_table(rejects: Sequence[tuple[int, str, str]]):
    """``(row, source_id, reason)`` tuples as a ``pyarrow.Table`` with exactly :data:`REJECT_SCHEMA`."""
    import pyarrow as pa

    return pa.Table.from_arrays([
        pa.array([int(r[0]) for r in rejects], pa.int64()),
        pa.array([r[1] for r in rejects], pa.string()),
        pa.array([r[2] for r in rejects], pa.string())], schema=REJECT_SCHEMA)


def write_part_files(output_dir: str | os.PathLike, name: str, table,
                     rejects: Sequence[tuple[int, str, str]], *,
                     png_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Atomically write one part: ``output_dir/name`` (``table``, canonicalised rows with
    :data:`OUTPUT_SCHEMA`, see :func:`output_table`), ``output_dir/_rejects/name`` if there are
    rejects (:func:`rejects_table`) and, with ``png_dir``, every image as ``png_dir/<row:08d>.png``.

    The files only become part of the output once a manifest lists them (the caller's commit);
    a file of the same name left by an interrupted commit is replaced.

    Returns:
      the part's manifest fields: ``name``, ``rows``, ``rejects``, ``rejects_file`` (or None).
    """
    if not table.schema.equals(OUTPUT_SCHEMA):
        raise ValueError(f"table must have OUTPUT_SCHEMA; got {table.schema}")
    output_dir = os.fspath(output_dir)
    _atomic_write_table(os.path.join(output_dir, name), table)
    rejects_name = None
    if rejects:
        rejects_name = f"{REJECTS_DIR}/{name}"
        os.makedirs(os.path.join(output_dir, REJECTS_DIR), exist_ok=True)
        _atomic_write_table(os.path.join(output_dir, rejects_name), rejects_table(rejects))
    if png_dir:
        rows = table.column("row").to_pylist()
        for r, png in zip(rows, table.column("image_png").to_pylist(), strict=True):
            _atomic_write_bytes(os.path.join(os.fspath(png_dir), f"{int(r):08d}.png"), png)
    return {"name": name, "rows": table.num_rows, "rejects": len(rejects), "rejects_file": rejects_name}


def remove_uncommitted(output_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Delete temporary files and ``part-*.parquet`` files (rows and rejects) of ``output_dir``
    that ``manifest["parts"]`` does not list: the leftovers of an interrupted commit."""
    output_dir = os.fspath(output_dir)
    listed = {p["name"] for p in manifest["parts"]}
    listed |= {p["rejects_file"] for p in manifest["parts"] if p["rejects_file"]}
    for sub in ("", REJECTS_DIR):
        d = os.path.join(output_dir, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            rel = f"{sub}/{name}" if sub else name
            if (name.startswith(".") and name.endswith(".tmp")) or (
                    name.startswith("part-") and name.endswith(".parquet") and rel not in listed):
                os.unlink(os.path.join(d, name))


def save_manifest(output_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Atomically (temporary file + ``os.replace``) write ``output_dir/_manifest.json``."""
    _atomic_write_bytes(os.path.join(os.fspath(output_dir), MANIFEST),
                        json.dumps(manifest, indent=1, sort_keys=True).encode())


class PartWriter:
    """Writes committed parts and the manifest into an output directory.

    Args:
      output_dir: the output directory (created if missing).
      input_info: JSON-able description of the input (``Reader.describe()``) and run settings;
        a resume refuses to continue if it differs from the recorded one.
      resume: continue the run recorded in ``output_dir``; without it the directory must not
        already hold a manifest.
      png_dir: optional folder that also receives every canonicalised image as
        ``<row:08d>.png`` (rewritten idempotently on resume).
    """

    def __init__(self, output_dir: str | os.PathLike, *, input_info: dict[str, Any],
                 resume: bool = False, png_dir: str | os.PathLike | None = None):
        self.output_dir = os.fspath(output_dir)
        self.png_dir = None if png_dir is None else os.fspath(png_dir)
        os.makedirs(os.path.join(self.output_dir, REJECTS_DIR), exist_ok=True)
        if self.png_dir:
            os.makedirs(self.png_dir, exist_ok=True)
        self.manifest_path = os.path.join(self.output_dir, MANIFEST)
        info = json.loads(json.dumps(input_info))
        if os.path.exists(self.manifest_path):
            if not resume:
                raise FileExistsError(f"{self.output_dir!r} already holds a canonicalisation run "
                                      f"({MANIFEST}); pass --resume to continue it or choose a new "
                                      f"output directory")
            with open(self.manifest_path) as f:
                self.manifest = json.load(f)
            if self.manifest.get("input") != info:
                raise ValueError(f"cannot resume: the input or settings differ from the recorded run.\n"
                                 f"recorded: {self.manifest.get('input')}\nnow:      {info}")
        else:
            self.manifest = {"format": FORMAT_VERSION, "input": info, "parts": [],
                             "complete": False}
        self._remove_orphan_temporaries()

    def _remove_orphan_temporaries(self) -> None:
        remove_uncommitted(self.output_dir, self.manifest)

    @property
    def committed_rows(self) -> int:
        """Input rows ``[0, committed_rows)`` are committed (written or rejected)."""
        return self.manifest["parts"][-1]["stop"] if self.manifest["parts"] else 0

    @property
    def totals(self) -> dict[str, int]:
        parts = self.manifest["parts"]
        return {"rows_in": self.committed_rows, "rows_written": sum(p["rows"] for p in parts),
                "rows_rejected": sum(p["rejects"] for p in parts), "parts": len(parts)}

    def write_part(self, *, start: int, stop: int, rows: Sequence[int], source_ids: Sequence[str],
                   images: np.ndarray, transform: str, params: np.ndarray,
                   predictions: np.ndarray | None, confidences: np.ndarray | None,
                   rejects: Sequence[tuple[int, str, str]]) -> dict[str, Any]:
        """Commit input rows ``[start, stop)``: ``len(rows)`` canonicalised + ``len(rejects)``.

        Args:
          start, stop: the input row range; ``start`` must equal :attr:`committed_rows`.
          rows, source_ids: per written row.
          images: float (n, H, W, C) canonicalised images in [0, 1].
          transform: the transformer kind.
          params: (n, P) transform parameters.
          predictions, confidences: (n,) or None.
          rejects: (row, source_id, reason) per rejected row.

        Returns:
          the manifest entry of the part.
        """
        if start != self.committed_rows:
            raise ValueError(f"part must start at row {self.committed_rows}; got {start}")
        if len(rows) + len(rejects) != stop - start:
            raise ValueError(f"rows ({len(rows)}) + rejects ({len(rejects)}) != stop - start ({stop - start})")
        name = f"part-{len(self.manifest['parts']):05d}.parquet"
        entry = {"start": int(start), "stop": int(stop),
                 **write_part_files(self.output_dir, name,
                                    output_table(rows=rows, source_ids=source_ids, images=images,
                                                 transform=transform, params=params,
                                                 predictions=predictions, confidences=confidences),
                                    rejects, png_dir=self.png_dir),
                 "time": time.time()}
        self.manifest["parts"].append(entry)
        self._write_manifest()
        return entry

    def finish(self, *, total_rows: int) -> None:
        """Mark the run complete once ``total_rows`` input rows are committed."""
        if self.committed_rows != total_rows:
            raise ValueError(f"only {self.committed_rows} of {total_rows} rows are committed")
        self.manifest["complete"] = True
        self.manifest["totals"] = self.totals
        self._write_manifest()

    def _write_manifest(self) -> None:
        save_manifest(self.output_dir, self.manifest)


def read_output(output_dir: str | os.PathLike, *, rejects: bool = False):
    """Read a canonicalisation output (only the parts its manifest commits) as one pyarrow Table.

    Args:
      output_dir: the ``--output`` directory.
      rejects: read the rejects instead of the canonicalised rows.

    Returns:
      a ``pyarrow.Table`` with :data:`OUTPUT_SCHEMA` (or :data:`REJECT_SCHEMA`), ordered by row.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    output_dir = os.fspath(output_dir)
    with open(os.path.join(output_dir, MANIFEST)) as f:
        manifest = json.load(f)
    schema = REJECT_SCHEMA if rejects else OUTPUT_SCHEMA
    tables = []
    for p in manifest["parts"]:
        name = p["rejects_file"] if rejects else p["name"]
        if name:
            tables.append(pq.read_table(os.path.join(output_dir, name), schema=schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()
