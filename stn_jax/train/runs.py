"""Loading a finished (or interrupted) training run: its config, model and parameters.

A run directory written by :func:`stn_jax.train.train` holds ``config.json`` and
``checkpoints/<step>/``; :func:`load_run` rebuilds the model from the config (or takes the
caller's) and restores the parameters of one checkpoint onto one local device, without
initialising the model.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from stn_jax.models import DATASET_SPECS
from stn_jax.train import parallel
from stn_jax.train.checkpoint import Checkpointer, checkpoint_tree
from stn_jax.train.config import TrainConfig
from stn_jax.train.inputs import build_model
from stn_jax.train.optim import default_is_localization, make_optimizer
from stn_jax.train.steps import create_state, init_accumulators


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A trained model restored from a workdir (see :func:`load_run`)."""

    model: Any
    """The Linen module."""
    variables: dict[str, Any]
    """``{"params": ...}`` ready for ``model.apply``."""
    config: TrainConfig
    input_shape: tuple[int, int, int]
    """(H, W, C) of the model's input."""
    num_classes: int
    step: int
    """Optimisation step of the restored checkpoint."""


def read_config(workdir: str | pathlib.Path) -> TrainConfig:
    """The :class:`TrainConfig` a run saved as ``WORKDIR/config.json``.

    A config saved before the ``architecture`` option existed describes the earlier zoo, so it
    reads as ``architecture="padded"`` (its checkpoints hold that model's parameters); one saved
    before the ``conv`` option ran XLA's convolutions, so it reads as ``conv="xla"``.

    Raises:
      ValueError: `workdir` has no config.json.
    """
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{workdir} is not a training workdir (no config.json)")
    values = json.loads(path.read_text())
    values.setdefault("architecture", "padded")
    values.setdefault("conv", "xla")
    return TrainConfig.from_dict(values)


def load_run(workdir: str | pathlib.Path, *, step: int | None = None, model: Any = None,
             input_shape: Sequence[int] | None = None, num_classes: int | None = None) -> LoadedRun:
    """Restore the model and parameters of a training run from `workdir`.

    Args:
      workdir: a directory written by :func:`stn_jax.train.train` (config.json + checkpoints/).
      step: checkpoint step (default: the latest).
      model, input_shape, num_classes: for runs that did not use the zoo (default: rebuilt
        from config.json with :func:`stn_jax.models.create_model` and ``DATASET_SPECS``).

    Raises:
      ValueError: `workdir` has no config.json. CheckpointError: no/corrupt checkpoint.
    """
    workdir = pathlib.Path(workdir)
    config = read_config(workdir)
    if model is None:
        model = build_model(config)
    if input_shape is None or num_classes is None:
        spec = DATASET_SPECS[config.dataset]
        input_shape = input_shape or tuple(int(s) for s in spec.input_shape)
        num_classes = num_classes or int(spec.num_classes)
    input_shape = tuple(int(s) for s in input_shape)
    checkpointer = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    tree, _ = checkpointer.restore(_restore_target(config, model, input_shape), step=step)
    checkpointer.close()
    return LoadedRun(model=model, variables={"params": tree["params"]}, config=config,
                     input_shape=input_shape, num_classes=int(num_classes), step=int(tree["step"]))


def _restore_target(config: TrainConfig, model: Any, input_shape: tuple[int, ...]) -> Any:
    """The abstract checkpoint tree (shapes, dtypes, sharding on one local device): the
    structure to restore into, found without compiling or running the model's initialiser."""
    mesh = parallel.make_mesh(devices=jax.local_devices()[:1])
    dummy = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    params = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), dummy)["params"]
    tx = make_optimizer(config, params, is_localization=default_is_localization())
    rep = parallel.replicated(mesh)
    target = jax.eval_shape(lambda p: checkpoint_tree(create_state(model, p, tx), init_accumulators()), params)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), target)
