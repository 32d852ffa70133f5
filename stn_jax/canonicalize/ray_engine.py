"""Bulk canonicalisation on Ray Data: the job of ``stn-jax canonicalize``, on a cluster.

Needs the ``ray`` extra (``pip install 'stn_jax[ray]'``). Three entry points:

- :func:`canonicalize_dataset` takes and returns a ``ray.data.Dataset``: a stage for your own
  pipeline. Each input row carries an image (encoded bytes, or a numeric array as
  ``ray.data.read_images`` gives) and its identity (``row``, ``source_id``); each output row has
  :data:`DATASET_SCHEMA` (the columns of ``OUTPUT_SCHEMA`` plus ``reason``, which is null for a
  canonicalised row and says why for a rejected one). :func:`split_rejects` turns it into the
  canonical rows (exactly ``OUTPUT_SCHEMA``, ready for ``write_parquet``) and the rejects
  (exactly ``REJECT_SCHEMA``).
- :func:`read_dataset`: a folder / ``.npz`` / Parquet input (the local engine's readers) as a
  Dataset with that identity: ``row`` (position in the input order) and ``source_id``
  (Parquet: ``<file>#<row in file>``), so the output joins back to the input.
- :func:`run_canonicalize_ray` (``stn-jax canonicalize --engine ray``): the whole job with the
  local engine's guarantees: every input row is written or rejected exactly once, parts are
  atomic, and a re-run after a failure skips the shards already committed. The unit of
  idempotence is a *shard* (:mod:`stn_jax.canonicalize.shards`): at most ``rows_per_shard``
  consecutive input rows, never spanning two Parquet files.

Every stage is ``map_batches`` with a callable class (:class:`CanonicalizeRows`,
:class:`CanonicalizeShards`) that loads the training run once per actor
(:meth:`~stn_jax.canonicalize.Canonicalizer.from_workdir`) and runs the local engine's
:func:`~stn_jax.canonicalize.canonicalize_batches` (decoding and the resize rule, the jitted
model padded to one batch shape, non-finite outputs rejected), then the local writer's
:func:`~stn_jax.canonicalize.writer.output_table` (PNG encoding). With ``gpus_per_worker=G`` each
actor holds G GPUs and shards its batches over them. Output equals the local engine's, row for
row and byte for byte.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray
    import ray.data
except ImportError as e:  # the optional extra is missing
    raise ImportError("stn_jax.canonicalize.ray_engine needs Ray Data: pip install 'stn_jax[ray]'") from e

from stn_jax.canonicalize.readers import Reader, RejectError, RowsReader, open_reader
from stn_jax.canonicalize.runner import Canonicalizer, canonicalize_batches
from stn_jax.canonicalize.shards import Shard, ShardLedger, ShardReader, plan_shards
from stn_jax.canonicalize.writer import OUTPUT_SCHEMA, REJECT_SCHEMA, output_table, write_part_files


def _dataset_schema() -> pa.Schema:
    keep = ("row", "source_id")
    fields = [f if f.name in keep else f.with_nullable(True) for f in OUTPUT_SCHEMA]
    return pa.schema(fields + [pa.field("reason", pa.string(), nullable=True)],
                     metadata=OUTPUT_SCHEMA.metadata)


DATASET_SCHEMA = _dataset_schema()
"""Rows of :func:`canonicalize_dataset`: the columns of ``OUTPUT_SCHEMA`` (all but ``row`` and
``source_id`` null for a rejected row) and ``reason`` string (null for a canonicalised row; the
rejects' reason otherwise)."""

_ENTRY_SCHEMA = pa.schema([
    pa.field("start", pa.int64()), pa.field("stop", pa.int64()), pa.field("name", pa.string()),
    pa.field("rows", pa.int64()), pa.field("rejects", pa.int64()),
    pa.field("rejects_file", pa.string()), pa.field("worker_pid", pa.int64())])


def _canonicalize(canonicalizer: Canonicalizer, reader: Reader, *, batch_size: int,
                  start: int = 0) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """The local engine over ``reader`` from row ``start``: the canonicalised rows as one
    ``OUTPUT_SCHEMA`` table (PNG-encoded batch by batch) and ``(row, source_id, reason)`` rejects."""
    tables, rejects = [], []
    for b in canonicalize_batches(canonicalizer, reader, batch_size=batch_size, start=start):
        tables.append(output_table(rows=b.rows, source_ids=b.source_ids, images=b.images,
                                   transform=b.transform, params=b.params,
                                   predictions=b.predictions, confidences=b.confidences))
        rejects += [(r.row, r.source_id, r.reason) for r in b.rejects]
    return (pa.concat_tables(tables) if tables else OUTPUT_SCHEMA.empty_table()), rejects


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not value > 0:
            raise ValueError(f"{name} must be a positive number; got {value!r}")


def _check_gpus(gpus_per_worker: float) -> None:
    if isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float)) \
            or gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be a non-negative number; got {gpus_per_worker!r}")


def _map_options(*, num_workers: int, gpus_per_worker: float, cpus_per_worker: float) -> dict[str, Any]:
    """``map_batches`` keywords: a fixed pool of ``num_workers`` actors with their resources."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer; got {num_workers!r}")
    _check_gpus(gpus_per_worker)
    _check_positive(cpus_per_worker=cpus_per_worker)
    options = {"compute": ray.data.ActorPoolStrategy(size=int(num_workers)), "num_cpus": cpus_per_worker}
    if gpus_per_worker:
        options["num_gpus"] = gpus_per_worker
    return options


def _is_null(value: Any) -> bool:
    """None, or the float NaN that Ray Data's row-wise stages may turn a null into."""
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))


def _payload(value: Any) -> Any:
    """A row's image as :func:`~stn_jax.canonicalize.decode_image` takes it (a Hugging Face
    ``{"bytes": ...}`` struct becomes its bytes; a null becomes None)."""
    if isinstance(value, Mapping):
        value = value.get("bytes")
    return None if _is_null(value) else value


class CanonicalizeRows:
    """``map_batches`` callable class: a batch of image rows -> :data:`DATASET_SCHEMA` rows.

    Ray creates one instance per actor: the training run is loaded once (here) and the model is
    compiled once (every batch is padded to ``batch_size`` rows). Rows come out in their batch
    order; a batch is canonicalised in ``batch_size`` chunks with the local engine.

    Args:
      workdir: training run directory (``stn-jax train --workdir``), visible to every node.
      step, transformer_index: as in :meth:`Canonicalizer.from_workdir`.
      batch_size: rows per device batch.
      image_column: encoded image bytes, a Hugging Face image struct, or a numeric array
        (H, W) / (H, W, C) per row (a null is rejected as missing).
      row_column, id_column: the row's identity (int and string), copied to ``row`` and
        ``source_id``.
      error_column: optional column; a non-null value rejects the row with it as the reason
        (:func:`read_dataset` reports unreadable files there).
    """

    def __init__(self, workdir: str | os.PathLike, *, step: int | None = None,
                 transformer_index: int = 0, batch_size: int = 256, image_column: str = "image",
                 row_column: str = "row", id_column: str = "source_id",
                 error_column: str = "read_error"):
        self.canonicalizer = Canonicalizer.from_workdir(workdir, step=step,
                                                        transformer_index=transformer_index)
        self.batch_size = int(batch_size)
        self.image_column, self.row_column, self.id_column = image_column, row_column, id_column
        self.error_column = error_column

    def __call__(self, batch: Mapping[str, np.ndarray]) -> pa.Table:
        missing = [c for c in (self.image_column, self.row_column, self.id_column) if c not in batch]
        if missing:
            raise ValueError(f"the dataset has no column(s) {missing}; expected an image column "
                             f"{self.image_column!r}, an int row column {self.row_column!r} and a "
                             f"string id column {self.id_column!r}; got {sorted(batch)}")
        rows = np.asarray(batch[self.row_column], np.int64)
        ids = [str(v) for v in batch[self.id_column]]
        payloads = [_payload(v) for v in batch[self.image_column]]
        errors = batch.get(self.error_column)
        if errors is not None:
            payloads = [p if _is_null(e) else RejectError(str(e))
                        for p, e in zip(payloads, errors, strict=True)]
        table, rejects = _canonicalize(self.canonicalizer, RowsReader(ids, payloads),
                                       batch_size=self.batch_size)
        good = table.column("row").to_numpy()
        bad = np.asarray([r[0] for r in rejects], np.int64)
        n, k = table.num_rows, len(rejects)
        columns = {name: table.column(name) for name in OUTPUT_SCHEMA.names}
        columns["row"] = pa.array(rows[good], pa.int64())
        out = pa.Table.from_arrays([columns[f.name] for f in OUTPUT_SCHEMA] + [pa.nulls(n, pa.string())],
                                   schema=DATASET_SCHEMA)
        failed = pa.Table.from_arrays(
            [pa.array(rows[bad], pa.int64()), pa.array([r[1] for r in rejects], pa.string())]
            + [pa.nulls(k, f.type) for f in OUTPUT_SCHEMA if f.name not in ("row", "source_id")]
            + [pa.array([r[2] for r in rejects], pa.string())], schema=DATASET_SCHEMA)
        order = np.argsort(np.concatenate([good, bad]), kind="stable")
        return pa.concat_tables([out, failed]).take(pa.array(order))


def canonicalize_dataset(ds: ray.data.Dataset, workdir: str | os.PathLike, *, step: int | None = None,
                         transformer_index: int = 0, batch_size: int = 256, num_workers: int = 1,
                         gpus_per_worker: float = 0, cpus_per_worker: float = 1,
                         image_column: str = "image", row_column: str = "row",
                         id_column: str = "source_id") -> ray.data.Dataset:
    """Canonicalise every row of a Ray Dataset (lazy, like any Ray Data transform).

    Args:
      ds: rows with an image column and their identity (see :class:`CanonicalizeRows`);
        :func:`read_dataset` makes one from a folder / ``.npz`` / Parquet input.
      workdir: training run directory, visible to every node.
      step, transformer_index: as in :meth:`Canonicalizer.from_workdir`.
      batch_size: rows per ``map_batches`` call and per device batch.
      num_workers: actors (each loads the run once and holds ``gpus_per_worker`` GPUs and
        ``cpus_per_worker`` CPUs).
      image_column, row_column, id_column: the input's columns.

    Returns:
      a Dataset with :data:`DATASET_SCHEMA`, one row per input row (the row order within a
      batch is kept; across batches it is Ray's). Write it with :func:`split_rejects`.

    Example::

        ds = read_dataset("digits.parquet")                  # or your own Dataset
        out = canonicalize_dataset(ds, "runs/rts", num_workers=4).materialize()
        rows, rejects = split_rejects(out)
        rows.write_parquet("canonical/")                     # exactly OUTPUT_SCHEMA
        rejects.write_parquet("canonical_rejects/")          # exactly REJECT_SCHEMA
    """
    _check_positive(batch_size=batch_size)
    schema = ds.schema(fetch_if_missing=False)
    if schema is not None:
        missing = [c for c in (image_column, row_column, id_column) if c not in schema.names]
        if missing:
            raise ValueError(f"the dataset has no column(s) {missing}; expected an image column "
                             f"{image_column!r}, an int row column {row_column!r} and a string id "
                             f"column {id_column!r}; got {list(schema.names)}")
    return ds.map_batches(
        CanonicalizeRows, batch_size=int(batch_size), batch_format="numpy",
        fn_constructor_args=(os.path.abspath(workdir),),
        fn_constructor_kwargs={"step": step, "transformer_index": transformer_index,
                               "batch_size": int(batch_size), "image_column": image_column,
                               "row_column": row_column, "id_column": id_column},
        **_map_options(num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                       cpus_per_worker=cpus_per_worker))


def _canonical_rows(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_null(table.column("reason"))).select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA)


def _rejected_rows(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_valid(table.column("reason"))).select(REJECT_SCHEMA.names).cast(REJECT_SCHEMA)


def split_rejects(ds: ray.data.Dataset) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """Split :func:`canonicalize_dataset`'s output into (canonical rows, rejects).

    Returns:
      two lazy Datasets with exactly ``OUTPUT_SCHEMA`` and ``REJECT_SCHEMA``. Both read ``ds``:
      ``materialize()`` it first, or it is computed twice.
    """
    options = {"batch_format": "pyarrow", "batch_size": None, "zero_copy_batch": True}
    return ds.map_batches(_canonical_rows, **options), ds.map_batches(_rejected_rows, **options)


@functools.lru_cache(maxsize=4)
def _cached_reader(source: str, options: tuple[tuple[str, Any], ...]) -> Reader:
    """One reader per worker process and input (a folder is listed once, not per shard)."""
    return open_reader(source, **dict(options))


def _read_shards(batch: Mapping[str, np.ndarray], *, source: str,
                 options: tuple[tuple[str, Any], ...]) -> pa.Table:
    reader = _cached_reader(source, options)
    rows, ids, payloads, errors = [], [], [], []
    for start, stop in zip(batch["start"], batch["stop"], strict=True):
        if stop <= start:
            continue
        for raw in ShardReader(reader, Shard(int(start), int(stop))).iter_batches(
                int(stop) - int(start), start=int(start)):
            rows += range(raw.start, raw.start + len(raw.ids))
            ids += raw.ids
            for p in raw.payloads:
                errors.append(str(p) if isinstance(p, RejectError) else None)
                payloads.append(None if isinstance(p, RejectError) else p)
    arrays = [p for p in payloads if isinstance(p, np.ndarray)]
    if arrays:                       # an .npz: one fixed-shape tensor per row
        from ray.data.extensions import ArrowTensorArray

        blank = np.zeros_like(arrays[0])
        image = ArrowTensorArray.from_numpy(np.stack([blank if p is None else p for p in payloads]))
    else:
        image = pa.array(payloads, pa.binary())
    return pa.Table.from_arrays(
        [pa.array(rows, pa.int64()), pa.array(ids, pa.string()), image, pa.array(errors, pa.string())],
        names=["row", "source_id", "image", "read_error"])


def read_dataset(source: str | os.PathLike, *, rows_per_shard: int = 4096,
                 **reader_options: Any) -> ray.data.Dataset:
    """A folder / ``.npz`` / Parquet input (the local engine's readers) as a Ray Dataset.

    Args:
      source: as for :func:`~stn_jax.canonicalize.open_reader`; a path every node can read.
      rows_per_shard: rows per read task (see :func:`~stn_jax.canonicalize.shards.plan_shards`).
      **reader_options: ``format``, ``image_column``, ``id_column``, ``npz_key``.

    Returns:
      a Dataset with ``row`` int64 (the row's position in the input order, as in the local
      engine's output), ``source_id`` string, ``image`` (encoded bytes; an ``.npz``: a tensor
      per row) and ``read_error`` string (null unless the row could not be read).
    """
    source = os.path.abspath(source)
    reader = open_reader(source, **reader_options)
    shards = plan_shards(reader, rows_per_shard=rows_per_shard)
    items = ray.data.from_items([{"start": s.start, "stop": s.stop} for s in shards] or
                                [{"start": 0, "stop": 0}], override_num_blocks=max(1, len(shards)))
    return items.map_batches(_read_shards, batch_size=1, batch_format="numpy",
                             fn_kwargs={"source": source, "options": tuple(sorted(reader_options.items()))})


class CanonicalizeShards:
    """``map_batches`` callable class of :func:`run_canonicalize_ray`: shard ranges in, one
    ledger entry per shard out.

    Each actor loads the run and opens the input once; per shard it reads the rows, runs the
    local engine and writes the shard's part atomically (:func:`write_part_files`). The driver
    commits a shard when it records the returned entry in the manifest.

    Args:
      workdir, step, transformer_index, batch_size: as in :class:`CanonicalizeRows`.
      source, reader_options: the input, as for :func:`~stn_jax.canonicalize.open_reader`.
      output_dir: the output directory; png_dir: optional PNG folder (both shared by all nodes).
    """

    def __init__(self, workdir: str | os.PathLike, *, source: str | os.PathLike,
                 output_dir: str | os.PathLike, step: int | None = None, transformer_index: int = 0,
                 batch_size: int = 256, png_dir: str | os.PathLike | None = None,
                 reader_options: Mapping[str, Any] | None = None):
        self.canonicalizer = Canonicalizer.from_workdir(workdir, step=step,
                                                        transformer_index=transformer_index)
        self.reader = open_reader(source, **dict(reader_options or {}))
        self.output_dir, self.png_dir, self.batch_size = os.fspath(output_dir), png_dir, int(batch_size)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> pa.Table:
        entries = [self.commit(Shard(int(a), int(b))) for a, b in zip(batch["start"], batch["stop"], strict=True)]
        return pa.Table.from_pylist(entries, schema=_ENTRY_SCHEMA)

    def commit(self, shard: Shard) -> dict[str, Any]:
        """Canonicalise and write one shard; returns its manifest entry."""
        table, rejects = _canonicalize(self.canonicalizer, ShardReader(self.reader, shard),
                                       batch_size=self.batch_size, start=shard.start)
        entry = write_part_files(self.output_dir, shard.part_name, table, rejects, png_dir=self.png_dir)
        return {"start": shard.start, "stop": shard.stop, **entry, "worker_pid": os.getpid()}


def connect(address: str | None = None, **init_options: Any) -> None:
    """Connect to a Ray cluster unless this process already is: ``address="auto"`` (a running
    cluster), ``"ray://host:10001"`` (Ray Client) or None (``RAY_ADDRESS``, else a new local
    cluster with every CPU of this machine). ``init_options`` go to ``ray.init``."""
    if not ray.is_initialized():
        ray.init(address=address, **init_options)


def run_canonicalize_ray(workdir: str | os.PathLike, source: str | os.PathLike,
                         output_dir: str | os.PathLike, *, step: int | None = None,
                         transformer_index: int = 0, batch_size: int = 256,
                         rows_per_shard: int | None = None, resume: bool = False,
                         png_dir: str | os.PathLike | None = None, progress: bool = True,
                         num_workers: int = 1, gpus_per_worker: float = 0, cpus_per_worker: float = 1,
                         ray_address: str | None = None, run_info: Mapping[str, Any] | None = None,
                         **reader_options: Any) -> dict[str, Any]:
    """Canonicalise ``source`` into ``output_dir`` on Ray (``stn-jax canonicalize --engine ray``).

    The output has the local engine's layout and schemas (parts named by shard, see
    :mod:`stn_jax.canonicalize.shards`; ``read_output`` reads it). Paths must be visible to
    every node (a shared filesystem); they are made absolute here.

    Args:
      workdir, step, transformer_index: the training run (as in ``Canonicalizer.from_workdir``).
      source, reader_options: the input (as for :func:`~stn_jax.canonicalize.open_reader`).
      output_dir: output directory.
      batch_size: rows per device batch.
      rows_per_shard: rows per shard, the unit of work and of idempotence (default
        ``8 * batch_size``); a resume needs the same value.
      resume: continue the run in ``output_dir``: committed shards are skipped, the files of
        uncommitted ones deleted and those shards done again.
      png_dir: also write every canonical image as ``png_dir/<row:08d>.png``.
      progress: a tqdm bar (rows, images/s) on stderr.
      num_workers, gpus_per_worker, cpus_per_worker: the actor pool.
      ray_address: passed to :func:`connect` if this process is not connected yet.
      run_info: extra JSON-able settings recorded in the manifest (the input, the run and
        ``rows_per_shard`` always are); a resume requires them to match.

    Returns:
      summary dict: ``engine``, ``rows_in``, ``rows_written``, ``rows_rejected``, ``parts``,
      ``shards``, ``shards_skipped`` (committed before this call), ``seconds``,
      ``images_per_second`` (rows done by this call), ``workers``, ``gpus_per_worker``,
      ``output_dir``.

    Raises:
      ValueError: bad options, a missing training run, or a resume with other settings.
      FileExistsError: ``output_dir`` holds a run and ``resume`` is False.
      Exception: what the job raised (Ray restarts a worker that dies and retries its shard;
        a job fails if the driver dies or the same shard keeps failing); the shards committed
        until then stay committed.
    """
    from stn_jax.train.runs import read_config

    _check_positive(batch_size=batch_size)
    rows_per_shard = 8 * int(batch_size) if rows_per_shard is None else rows_per_shard
    options = _map_options(num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                           cpus_per_worker=cpus_per_worker)
    workdir, source = os.path.abspath(workdir), os.path.abspath(source)
    output_dir = os.path.abspath(output_dir)
    png_dir = None if png_dir is None else os.path.abspath(png_dir)
    read_config(workdir)                     # fails here, not in every actor
    reader = open_reader(source, **reader_options)
    shards = plan_shards(reader, rows_per_shard=rows_per_shard)
    info = {"input": reader.describe(), "engine": "ray", "rows_per_shard": rows_per_shard,
            "workdir": workdir, "step": step, "transformer_index": transformer_index,
            **dict(run_info or {})}
    ledger = ShardLedger(output_dir, input_info=info, resume=resume)
    if png_dir:
        os.makedirs(png_dir, exist_ok=True)
    done = ledger.committed
    todo = [s for s in shards if s not in done]
    t0 = time.perf_counter()
    rows_done = 0
    if todo:
        connect(ray_address)
        context = ray.data.DataContext.get_current()
        bars = context.enable_progress_bars
        context.enable_progress_bars = False        # ours below counts rows
        try:
            ds = ray.data.from_items([{"start": s.start, "stop": s.stop} for s in todo],
                                     override_num_blocks=len(todo))
            ds = ds.map_batches(
                CanonicalizeShards, batch_size=1, batch_format="numpy",
                fn_constructor_args=(workdir,),
                fn_constructor_kwargs={"source": source, "output_dir": output_dir, "step": step,
                                       "transformer_index": transformer_index,
                                       "batch_size": int(batch_size), "png_dir": png_dir,
                                       "reader_options": dict(reader_options)},
                **options)
            rows_done = _collect(ds, ledger, total=len(reader), progress=progress)
        finally:
            context.enable_progress_bars = bars
            ledger.save()
    ledger.finish(total_rows=len(reader))
    seconds = time.perf_counter() - t0
    return {"engine": "ray", **ledger.totals, "shards": len(shards),
            "shards_skipped": len(shards) - len(todo), "seconds": seconds,
            "images_per_second": rows_done / seconds if rows_done and seconds > 0 else float("nan"),
            "workers": int(num_workers), "gpus_per_worker": gpus_per_worker, "output_dir": output_dir}


def _collect(ds: ray.data.Dataset, ledger: ShardLedger, *, total: int, progress: bool,
             save_every_s: float = 1.0) -> int:
    """Record the shards as the workers finish them, saving the manifest at most every
    ``save_every_s`` seconds (and when the caller's ``finally`` runs). Returns the rows done."""
    from tqdm.auto import tqdm

    rows_done = 0
    last_save = time.perf_counter()
    with tqdm(total=total, initial=ledger.totals["rows_in"], unit="img", disable=not progress,
              dynamic_ncols=True, desc="canonicalize (ray)", smoothing=0.1) as bar:
        for e in ds.iter_rows():
            entry = {"name": str(e["name"]), "start": int(e["start"]), "stop": int(e["stop"]),
                     "rows": int(e["rows"]), "rejects": int(e["rejects"]),
                     "rejects_file": None if e["rejects_file"] is None else str(e["rejects_file"])}
            ledger.record(entry)
            rows_done += entry["stop"] - entry["start"]
            bar.update(entry["stop"] - entry["start"])
            if time.perf_counter() - last_save >= save_every_s:
                ledger.save()
                last_save = time.perf_counter()
    return rows_done


__all__ = ["DATASET_SCHEMA", "CanonicalizeRows", "CanonicalizeShards", "canonicalize_dataset",
           "connect", "read_dataset", "run_canonicalize_ray", "split_rejects"]
