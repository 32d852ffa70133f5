"""Scoring parameters on a fixed set: data-parallel, in padded and masked batches.

:func:`evaluate_arrays` scores host arrays (the loop's validation and test sets);
:func:`evaluate` re-scores a checkpoint of a finished run on its dataset's test set.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from stn_jax.train import parallel
from stn_jax.train.inputs import load_dataset
from stn_jax.train.reporting import environment_info, scores, write_json
from stn_jax.train.runs import load_run
from stn_jax.train.steps import eval_step


def make_eval_fn(apply_fn: Callable[..., Any], mesh: jax.sharding.Mesh) -> Callable[..., Any]:
    """Jitted data-parallel ``(params, images, labels, mask) -> masked sums`` (see
    :func:`stn_jax.train.eval_step`); params replicated, the batch split over `mesh`."""
    return parallel.data_parallel(lambda p, x, y, m: eval_step(apply_fn, p, x, y, m), mesh,
                                  batch_argnums=(1, 2, 3), num_args=4)


def evaluate_arrays(eval_fn: Callable[..., Any], params: Any, images: np.ndarray, labels: np.ndarray,
                    mesh: jax.sharding.Mesh, *, batch_size: int) -> dict[str, float]:
    """Loss and error of `params` on host arrays, in sharded batches (last one padded + masked).

    Args:
      eval_fn: from :func:`make_eval_fn`.
      params: the model's parameters, replicated on `mesh`.
      images: (N, H, W, C) float32; labels: (N,) int.
      mesh: the device mesh; batch_size: rows per batch, rounded up to a multiple of the
        device count.

    Returns ``{"loss", "error", "count"}``; ``error`` is a fraction in [0, 1].
    """
    n_dev = mesh.devices.size
    batch = -(-batch_size // n_dev) * n_dev
    batch = min(batch, -(-len(images) // n_dev) * n_dev)
    rows = parallel.process_rows(batch, mesh)     # this host feeds only its rows of each batch
    totals = np.zeros(3, np.float64)
    pending = []
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        y = labels[start:start + batch]
        valid = len(x)
        mask = np.arange(batch) < valid
        if valid < batch:
            x = np.concatenate([x, np.zeros((batch - valid,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros((batch - valid,), y.dtype)])
        x, y, mask = x[rows], y[rows], mask[rows]
        xs, ys, ms = parallel.put_global_batch((x.astype(np.float32), y.astype(np.int32), mask), mesh)
        pending.append(eval_fn(params, xs, ys, ms))
    for out in pending:
        totals += np.array([float(out["loss_sum"]), float(out["correct"]), float(out["count"])])
    count = max(totals[2], 1.0)
    return {"loss": totals[0] / count, "error": 1.0 - totals[1] / count, "count": int(totals[2])}


def evaluate(workdir: str | pathlib.Path, *, step: int | None = None, data_dir: str | None = None,
             dataset: Any = None, model: Any = None) -> dict[str, Any]:
    """Re-score a checkpoint of `workdir` on the fixed test set; writes WORKDIR/evaluation.json.

    Args:
      workdir: a directory written by :func:`stn_jax.train.train`.
      step: checkpoint step (default: the latest).
      data_dir: MNIST IDX directory (default: the one recorded in the run's config).
      dataset, model: for runs that did not use the zoo or the distorted-MNIST datasets.

    Returns ``{"test_error", "test_error_pct", "test_loss", "test_count", "step", ...}``.
    """
    shape = tuple(dataset.input_shape) if dataset is not None else None
    classes = int(dataset.num_classes) if dataset is not None else None
    run = load_run(workdir, step=step, model=model, input_shape=shape, num_classes=classes)
    config = run.config
    if dataset is None:
        dataset, mnist = load_dataset(config, data_dir=data_dir)
        info = {"source": mnist.source, "is_sample": bool(mnist.is_sample)}
    else:
        info = {"source": "custom", "is_sample": False}
    mesh = parallel.make_mesh()
    params = parallel.replicate(run.variables["params"], mesh)
    images, labels = dataset.test_set()
    t0 = time.perf_counter()
    test = evaluate_arrays(make_eval_fn(run.model.apply, mesh), params, images, labels, mesh,
                           batch_size=config.eval_batch_size)
    out = {**scores(test), "step": run.step, "eval_time_s": time.perf_counter() - t0,
           "data": info, **environment_info(mesh)}
    if jax.process_index() == 0:
        write_json(pathlib.Path(workdir) / "evaluation.json", out)
    return out
