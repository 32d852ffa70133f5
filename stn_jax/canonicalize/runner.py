"""Bulk canonicalisation: run a trained spatial transformer over a whole image collection.

Two layers:

- :class:`Canonicalizer` wraps a model as one jitted, data-parallel function
  ``apply(images) -> {"warped", "params", "probs"}`` sharded along the batch over every local
  device (the mesh and shardings of :mod:`stn_jax.sharding`; the variables are replicated).
- :func:`canonicalize_batches` (the Python API: an iterator of :class:`CanonicalBatch`) and
  :func:`run_canonicalize` (what ``stn-jax canonicalize`` runs: the iterator plus atomic,
  resumable Parquet parts, a rejects ledger and a progress bar).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from stn_jax import sharding
from stn_jax.canonicalize.readers import RawBatch, Reader, RejectError, decode_image, open_reader
from stn_jax.canonicalize.writer import PartWriter


class Canonicalizer:
    """A model's spatial transformer (and classifier) as a jitted, mesh-sharded batch function.

    Args:
      apply_fn: pure function ``(variables, images) -> dict`` with ``"warped"`` (B, Ho, Wo, C),
        ``"params"`` (B, P) and optionally ``"logits"`` (B, K); images float32 (B, H, W, C) in
        [0, 1]. It is jitted once per padded batch size.
      variables: the model's variables (a pytree of arrays), replicated on every device.
      input_shape: the model's (H, W, C).
      transform: the transformer's kind, recorded with every row.
      devices: devices to shard the batch over (default: ``jax.local_devices()``).

    Use :meth:`from_model` for a zoo model and :meth:`from_workdir` for a training run.
    """

    def __init__(self, apply_fn: Callable[[Any, Any], Mapping[str, Any]], variables: Any, *,
                 input_shape: Sequence[int], transform: str, devices: Sequence[Any] | None = None):
        if len(input_shape) != 3 or not all(int(v) > 0 for v in input_shape):
            raise ValueError(f"input_shape must be (H, W, C) of positive sizes; got {input_shape}")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.transform = str(transform)
        self.devices = list(jax.local_devices() if devices is None else devices)
        self.mesh = sharding.make_mesh(devices=self.devices)
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        self.variables = sharding.replicate(variables, self.mesh)

        def run(v, images):
            out = dict(apply_fn(v, images))
            missing = {"warped", "params"} - set(out)
            if missing:
                raise ValueError(f"apply_fn must return 'warped' and 'params'; missing {sorted(missing)}")
            result = {"warped": out["warped"],
                      "params": out["params"].reshape(out["params"].shape[0], -1)}
            if out.get("logits") is not None:
                result["probs"] = jax.nn.softmax(out["logits"].astype("float32"), axis=-1)
            return result

        self._jitted = jax.jit(run, in_shardings=(sharding.replicated(self.mesh), self.batch_sharding),
                               out_shardings=self.batch_sharding)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def padded_size(self, n: int) -> int:
        """Smallest multiple of the device count that holds ``n`` rows (at least one per device)."""
        d = self.num_devices
        return max(d, -(-n // d) * d)

    def apply(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Canonicalise a batch.

        Args:
          images: float32 (B, H, W, C) in [0, 1] with the model's input shape. B is padded with
            zeros to a multiple of the device count (use a constant B to compile once).

        Returns:
          numpy ``warped`` (B, Ho, Wo, C), ``params`` (B, P) and, if the model has a
          classifier, ``probs`` (B, K) softmax probabilities.
        """
        n = np.shape(images)[0]
        return {k: np.asarray(v)[:n] for k, v in self.dispatch(images).items()}

    def dispatch(self, images: np.ndarray) -> dict[str, Any]:
        """Like :meth:`apply` but returns the (padded, sharded) device arrays without waiting
        for them, so the caller can overlap host work with the computation."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            raise ValueError(f"images must be (B, {', '.join(map(str, self.input_shape))}); "
                             f"got {images.shape}")
        n = images.shape[0]
        size = self.padded_size(n)
        if size != n:
            images = np.concatenate([images, np.zeros((size - n,) + self.input_shape, np.float32)])
        return self._jitted(self.variables, jax.device_put(images, self.batch_sharding))

    @classmethod
    def from_model(cls, model: Any, variables: Any, *, input_shape: Sequence[int],
                   transformer_index: int = 0, devices: Sequence[Any] | None = None) -> Canonicalizer:
        """Wrap a Linen zoo model (``stn_jax.models``) with at least one spatial transformer.

        Args:
          model: a ``flax.linen.Module`` from ``stn_jax.models.create_model``.
          variables: its variables (with ``"params"``).
          input_shape: the model's (H, W, C).
          transformer_index: which transformer's output to use when there are several (the
            order of ``stn_jax.models.inspect_transformers``; default the first).

        Raises:
          ValueError: the model has no spatial transformer (fcn / cnn) or no such index.
        """
        import jax.numpy as jnp

        from stn_jax.models import apply_and_inspect

        kinds: list[str] = []

        def apply_fn(v, images):
            logits, ts = apply_and_inspect(model, v, images)
            kinds[:] = [str(t["kind"]) for t in ts]
            if not -len(ts) <= transformer_index < len(ts):
                raise ValueError(f"the model has {len(ts)} spatial transformer(s); "
                                 f"transformer_index {transformer_index} does not exist")
            t = ts[transformer_index]
            return {"warped": t["warped"], "params": t["params"], "logits": logits}

        probe = jnp.zeros((1,) + tuple(int(v) for v in input_shape), jnp.float32)
        jax.eval_shape(apply_fn, variables, probe)       # trace once: checks and records the kind
        return cls(apply_fn, variables, input_shape=input_shape,
                   transform=kinds[transformer_index], devices=devices)

    @classmethod
    def from_workdir(cls, workdir: str | os.PathLike, *, step: int | None = None,
                     transformer_index: int = 0, devices: Sequence[Any] | None = None) -> Canonicalizer:
        """Load a training run (``stn_jax.train.load_run``) and wrap its model."""
        from stn_jax.train import load_run

        run = load_run(os.fspath(workdir), step=step)
        return cls.from_model(run.model, run.variables, input_shape=run.input_shape,
                              transformer_index=transformer_index, devices=devices)


@dataclasses.dataclass(frozen=True)
class Reject:
    """A row that was not canonicalised: its input row index, source id and the reason."""
    row: int
    source_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class CanonicalBatch:
    """Result for input rows ``[start, stop)``: ``len(rows) + len(rejects) == stop - start``.

    Attributes:
      start, stop: the input row range covered.
      rows: int64 (n,) input row indices of the canonicalised rows (ascending).
      source_ids: their source ids.
      images: float32 (n, Ho, Wo, C) canonicalised images in [0, 1] (the transformer's output).
      params: float32 (n, P) transform parameters.
      transform: the transformer's kind.
      probs: float32 (n, K) class probabilities, or None without a classifier.
      rejects: the rows that could not be canonicalised.
    """
    start: int
    stop: int
    rows: np.ndarray
    source_ids: list[str]
    images: np.ndarray
    params: np.ndarray
    transform: str
    probs: np.ndarray | None
    rejects: list[Reject]

    @property
    def predictions(self) -> np.ndarray | None:
        """int32 (n,) argmax class, or None."""
        return None if self.probs is None else self.probs.argmax(-1).astype(np.int32)

    @property
    def confidences(self) -> np.ndarray | None:
        """float32 (n,) probability of the predicted class, or None."""
        return None if self.probs is None else self.probs.max(-1).astype(np.float32)


_DONE = object()


def _decoded_batches(reader: Reader, batch_size: int, start: int, input_shape: Sequence[int],
                     prefetch: int) -> Iterator[tuple[RawBatch, list[np.ndarray | Reject]]]:
    """Read and decode batches on a background thread, ``prefetch`` batches ahead."""

    def decode(raw: RawBatch):
        out: list[np.ndarray | Reject] = []
        for i, (sid, payload) in enumerate(zip(raw.ids, raw.payloads, strict=False)):
            try:
                out.append(decode_image(payload, input_shape))
            except RejectError as e:
                out.append(Reject(raw.start + i, sid, str(e)))
        return raw, out

    if prefetch <= 0:
        for raw in reader.iter_batches(batch_size, start=start):
            yield decode(raw)
        return
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def work():
        try:
            for raw in reader.iter_batches(batch_size, start=start):
                item = decode(raw)
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # handed to the consumer
            q.put(e)

    thread = threading.Thread(target=work, name="canonicalize-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def canonicalize_batches(canonicalizer: Canonicalizer, source: Reader | str | os.PathLike, *,
                         batch_size: int = 256, start: int = 0, prefetch: int = 2,
                         **reader_options: Any) -> Iterator[CanonicalBatch]:
    """Canonicalise an image collection, one :class:`CanonicalBatch` per ``batch_size`` input rows.

    The Python API for pipelines: nothing is loaded whole; batches are decoded on a background
    thread ahead of time, and batch k+1 is dispatched to the devices before batch k is handed to
    the caller, so decoding, the model and the caller's work (e.g. writing) overlap. Every input
    row ends up either in ``rows`` or in ``rejects`` of exactly one batch.

    Args:
      canonicalizer: the model (see :class:`Canonicalizer`).
      source: a :class:`~stn_jax.canonicalize.readers.Reader` or a path for
        :func:`~stn_jax.canonicalize.readers.open_reader`.
      batch_size: input rows per batch (the device batch is padded to this size rounded up to
        a multiple of the device count, so the function compiles once).
      start: first input row (to continue an earlier run).
      prefetch: batches decoded ahead (0: decode inline).
      **reader_options: ``format``, ``image_column``, ``id_column``, ``npz_key`` for a path.

    Example::

        canon = Canonicalizer.from_workdir("runs/rts")
        for b in canonicalize_batches(canon, "digits/", batch_size=512):
            store(b.source_ids, b.images, b.params, b.predictions)
    """
    reader = source if isinstance(source, Reader) else open_reader(source, **reader_options)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    device_batch = canonicalizer.padded_size(batch_size)
    shape = canonicalizer.input_shape
    pending = None
    stream = _decoded_batches(reader, batch_size, start, shape, prefetch)
    while True:
        try:
            raw, decoded = next(stream)
        except StopIteration:
            break
        except BaseException:
            if pending is not None:      # the input failed: hand out what was computed first
                yield _finish(canonicalizer, *pending)
            raise
        good = [i for i, d in enumerate(decoded) if not isinstance(d, Reject)]
        rejects = [d for d in decoded if isinstance(d, Reject)]
        out = None
        if good:      # dispatched asynchronously: runs while the previous batch is consumed
            images = np.zeros((device_batch,) + shape, np.float32)
            images[:len(good)] = np.stack([decoded[i] for i in good])
            out = canonicalizer.dispatch(images)
        if pending is not None:
            yield _finish(canonicalizer, *pending)
        pending = (raw, good, rejects, out)
    if pending is not None:
        yield _finish(canonicalizer, *pending)


def _finish(canonicalizer: Canonicalizer, raw: RawBatch, good: list[int], rejects: list[Reject],
            out: Mapping[str, Any] | None) -> CanonicalBatch:
    """Fetch a dispatched batch, reject non-finite outputs, build the :class:`CanonicalBatch`."""
    n = len(good)
    if out is not None:
        warped, params = np.asarray(out["warped"])[:n], np.asarray(out["params"])[:n]
        probs = np.asarray(out["probs"])[:n] if "probs" in out else None
    else:
        warped = np.zeros((0,) + canonicalizer.input_shape, np.float32)
        params = np.zeros((0, 0), np.float32)
        probs = None
    finite = np.ones(n, bool)
    if n:
        finite &= np.isfinite(warped.reshape(n, -1)).all(1) & np.isfinite(params).all(1)
    if probs is not None:
        finite &= np.isfinite(probs).all(1)
    if not finite.all():
        rejects = rejects + [Reject(raw.start + good[j], raw.ids[good[j]],
                                    "model output is not finite (NaN/inf parameters or image)")
                             for j in np.flatnonzero(~finite)]
        rejects.sort(key=lambda r: r.row)
        keep = np.flatnonzero(finite)
        good = [good[j] for j in keep]
        warped, params = warped[keep], params[keep]
        probs = None if probs is None else probs[keep]
    return CanonicalBatch(
        start=raw.start, stop=raw.start + len(raw.ids),
        rows=np.asarray([raw.start + i for i in good], np.int64),
        source_ids=[raw.ids[i] for i in good],
        images=np.asarray(warped, np.float32), params=np.asarray(params, np.float32),
        transform=canonicalizer.transform,
        probs=None if probs is None else np.asarray(probs, np.float32), rejects=rejects)


def run_canonicalize(canonicalizer: Canonicalizer, source: Reader | str | os.PathLike,
                     output_dir: str | os.PathLike, *, batch_size: int = 256, resume: bool = False,
                     png_dir: str | os.PathLike | None = None, progress: bool = True,
                     run_info: Mapping[str, Any] | None = None,
                     **reader_options: Any) -> dict[str, Any]:
    """Canonicalise ``source`` into atomic Parquet parts under ``output_dir``.

    Args:
      canonicalizer, source, batch_size, reader_options: as in :func:`canonicalize_batches`.
      output_dir: output directory (layout and schema: :mod:`stn_jax.canonicalize.writer`).
      resume: continue an interrupted run from its last committed part.
      png_dir: also write each canonicalised image to ``png_dir/<row:08d>.png``.
      progress: show a tqdm progress bar (images/s and ETA) on stderr.
      run_info: extra JSON-able settings recorded in the manifest (e.g. the model workdir); a
        resume requires them to match.

    Returns:
      summary dict: rows_in, rows_written, rows_rejected, parts, resumed_from, seconds,
      images_per_second (of this invocation), devices, output_dir.
    """
    from tqdm.auto import tqdm

    reader = source if isinstance(source, Reader) else open_reader(source, **reader_options)
    info = {"input": reader.describe(), "transform": canonicalizer.transform,
            "input_shape": list(canonicalizer.input_shape), **dict(run_info or {})}
    writer = PartWriter(output_dir, input_info=info, resume=resume, png_dir=png_dir)
    start = writer.committed_rows
    total = len(reader)
    t0 = time.perf_counter()
    done = 0
    with tqdm(total=total, initial=start, unit="img", disable=not progress, dynamic_ncols=True,
              desc="canonicalize", smoothing=0.1) as bar:
        for batch in canonicalize_batches(canonicalizer, reader, batch_size=batch_size, start=start):
            writer.write_part(start=batch.start, stop=batch.stop, rows=batch.rows,
                              source_ids=batch.source_ids, images=batch.images,
                              transform=batch.transform, params=batch.params,
                              predictions=batch.predictions, confidences=batch.confidences,
                              rejects=[(r.row, r.source_id, r.reason) for r in batch.rejects])
            done += batch.stop - batch.start
            bar.update(batch.stop - batch.start)
            bar.set_postfix(rejected=writer.totals["rows_rejected"], refresh=False)
    writer.finish(total_rows=total)
    seconds = time.perf_counter() - t0
    return {**writer.totals, "resumed_from": start, "seconds": seconds,
            "images_per_second": done / seconds if seconds > 0 else float("nan"),
            "devices": canonicalizer.num_devices, "output_dir": os.fspath(output_dir)}
