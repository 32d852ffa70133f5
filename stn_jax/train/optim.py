"""Optimisers and learning-rate schedules (optax).

The chain is ``clip(global norm) -> base optimiser (SGD+momentum | Adam) -> weight decay
-> scale(-lr(step)) -> localization multiplier``. The localization multiplier scales the
final update of every parameter whose path satisfies ``is_localization`` (by default
:func:`stn_jax.models.is_localization_path`), so with SGD the localization nets effectively
use ``loc_lr_mult * lr``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import optax

from stn_jax.models import is_localization_path

OPTIMIZERS = ("sgd", "adam")
"""Base optimisers of :func:`make_optimizer`: SGD with (optional) momentum, or Adam."""
SCHEDULES = ("step", "cosine", "constant")
"""Learning-rate schedules of :func:`make_schedule`."""

PathPredicate = Callable[[tuple[str, ...]], bool]


class OptimizerOptions(Protocol):
    """The options :func:`make_schedule` and :func:`make_optimizer` read (a
    :class:`stn_jax.train.TrainConfig` has them all)."""

    optimizer: str
    lr: float
    momentum: float
    schedule: str
    steps: int
    decay_steps: int
    decay_factor: float
    warmup_steps: int
    loc_lr_mult: float
    clip_norm: float
    weight_decay: float


def make_schedule(config: OptimizerOptions) -> optax.Schedule:
    """Learning rate as a function of the optimisation step.

    step:     ``lr * decay_factor ** floor(step / decay_steps)`` (the paper's schedule).
    cosine:   optional linear warm-up, then cosine decay to 0 at ``config.steps``.
    constant: ``lr``.
    """
    if config.schedule == "step":
        return optax.exponential_decay(config.lr, transition_steps=config.decay_steps,
                                       decay_rate=config.decay_factor, staircase=True)
    if config.schedule == "cosine":
        if config.warmup_steps:
            return optax.warmup_cosine_decay_schedule(
                0.0, config.lr, warmup_steps=config.warmup_steps,
                decay_steps=max(config.steps, config.warmup_steps + 1))
        return optax.cosine_decay_schedule(config.lr, decay_steps=config.steps)
    if config.schedule == "constant":
        return optax.constant_schedule(config.lr)
    raise ValueError(f"schedule must be {_one_of(SCHEDULES)}; got {config.schedule!r}")


def path_names(path: tuple[Any, ...]) -> tuple[str, ...]:
    """A jax tree path as a tuple of plain strings (dict keys / attribute names / indices)."""
    out = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                out.append(str(getattr(entry, attr)))
                break
        else:
            out.append(str(entry))
    return tuple(out)


def localization_mask(params: Any, is_localization: PathPredicate) -> Any:
    """Pytree of bools like `params`: True where the leaf belongs to a localization net."""
    return jax.tree_util.tree_map_with_path(lambda p, _: bool(is_localization(path_names(p))), params)


def default_is_localization() -> PathPredicate:
    """The zoo's localization-path predicate, :func:`stn_jax.models.is_localization_path`."""
    return is_localization_path


def make_optimizer(config: OptimizerOptions, params: Any, *,
                   is_localization: PathPredicate | None = None) -> optax.GradientTransformation:
    """The optax transformation for `config`, specialised to the structure of `params`.

    Args:
      config: training options (optimizer, lr, schedule, momentum, clip_norm, weight_decay,
        loc_lr_mult).
      params: the parameter pytree (only its structure and paths are used).
      is_localization: predicate on a parameter path (tuple of names); defaults to
        :func:`stn_jax.models.is_localization_path`.
    """
    parts: list[optax.GradientTransformation] = []
    if config.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.clip_norm))
    if config.optimizer == "sgd":
        if config.momentum > 0:
            parts.append(optax.trace(decay=config.momentum, nesterov=False))
    elif config.optimizer == "adam":
        parts.append(optax.scale_by_adam())
    else:
        raise ValueError(f"optimizer must be {_one_of(OPTIMIZERS)}; got {config.optimizer!r}")
    if config.weight_decay > 0:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.scale_by_learning_rate(make_schedule(config)))
    if config.loc_lr_mult != 1.0:
        predicate = is_localization or default_is_localization()
        mask = localization_mask(params, predicate)
        mult = config.loc_lr_mult
        parts.append(optax.masked(optax.scale(mult), mask))
    return optax.chain(*parts)


def _one_of(choices: tuple[str, ...]) -> str:
    """``"a, b or c"``."""
    return f"{', '.join(choices[:-1])} or {choices[-1]}"
