"""Pure training and evaluation steps on a Flax :class:`~flax.training.train_state.TrainState`.

Both steps are plain functions of arrays (no devices, no sharding): :mod:`stn_jax.train.parallel`
jits them over a device mesh. Labels are int32 class indices; images float32 (N, H, W, C).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

TrainState = train_state.TrainState
PenaltyFn = Callable[[Any], jax.Array]
Accumulators = dict[str, jax.Array]

ACCUMULATOR_SUMS = ("loss", "ce", "correct", "count", "grad_norm", "steps", "bad")
"""Running sums kept between two log lines (see :func:`accumulate`); with ``first_bad`` they
form the ``accum`` entry of a checkpoint."""


def create_state(model: Any, params: Any, tx: optax.GradientTransformation) -> TrainState:
    """A fresh :class:`TrainState` (step 0) for a Linen `model` with parameters `params`."""
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy (N,) of logits (N, K) against int labels (N,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def train_step(state: TrainState, images: jax.Array, labels: jax.Array, dropout_key: jax.Array, *,
               penalty_weight: float = 0.0, penalty_fn: PenaltyFn | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on a batch; returns the new state and scalar metrics.

    Args:
      state: current TrainState.
      images: (B, H, W, C) float32 in [0, 1]; labels: (B,) int32.
      dropout_key: PRNG key for dropout (derive it from the step for exact resumption).
      penalty_weight: weight of the identity penalty (0 disables it and skips the
        ``intermediates`` collection).
      penalty_fn: maps the ``intermediates`` collection to a scalar penalty
        (:func:`stn_jax.models.transform_penalty`).

    Returns:
      ``(state, metrics)``; metrics holds ``loss`` (objective), ``ce`` (mean cross-entropy),
      ``correct`` (count), ``count``, ``grad_norm`` and ``finite`` (bool). When the loss or a
      gradient is not finite the returned state is the input state unchanged (so a diverged
      step can never be checkpointed) and ``finite`` is False.
    """
    use_penalty = penalty_weight > 0 and penalty_fn is not None

    def loss_fn(params):
        variables = {"params": params}
        if use_penalty:
            logits, aux = state.apply_fn(variables, images, train=True, rngs={"dropout": dropout_key},
                                         mutable=["intermediates"])
            penalty = penalty_fn(aux.get("intermediates", {}))  # empty: no transformer
        else:
            logits = state.apply_fn(variables, images, train=True, rngs={"dropout": dropout_key})
            penalty = jnp.zeros((), jnp.float32)
        ce = cross_entropy(logits, labels).mean()
        return ce + penalty_weight * penalty, (ce, logits)

    (loss, (ce, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state.apply_gradients(grads=grads)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {
        "loss": loss,
        "ce": ce,
        "correct": jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.float32),
        "count": jnp.asarray(labels.shape[0], jnp.float32),
        "grad_norm": grad_norm,
        "finite": finite,
    }
    return new_state, metrics


def eval_step(apply_fn: Callable[..., jax.Array], params: Any, images: jax.Array, labels: jax.Array,
              mask: jax.Array) -> dict[str, jax.Array]:
    """Masked sums over a (padded) evaluation batch.

    Args:
      apply_fn: the model's ``apply``; params: its parameters.
      images: (B, H, W, C); labels: (B,) int32; mask: (B,) bool, False for padding rows.

    Returns:
      ``{"loss_sum", "correct", "count"}`` float32 scalars (sum over unmasked rows).
    """
    logits = apply_fn({"params": params}, images, train=False)
    m = mask.astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(cross_entropy(logits, labels) * m),
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * m),
        "count": jnp.sum(m),
    }


def global_norm(tree: Any) -> jax.Array:
    """sqrt of the sum of squares of every leaf (float32 scalar)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)) if leaves else jnp.zeros(())


def init_accumulators() -> dict[str, np.ndarray]:
    """Fresh metric accumulators: float32 scalar zeros, and ``first_bad = -1`` (none yet)."""
    accum = {name: np.zeros((), np.float32) for name in ACCUMULATOR_SUMS}
    accum["first_bad"] = np.full((), -1.0, np.float32)
    return accum


def accumulate(accum: Accumulators, metrics: dict[str, jax.Array], step: jax.Array) -> Accumulators:
    """Add the metrics of :func:`train_step` at `step` to the running sums `accum`.

    A finite step adds its ``loss``, ``ce``, ``correct``, ``count`` and ``grad_norm`` and one
    to ``steps``; a non-finite step adds one to ``bad`` only, and the first such step number is
    kept in ``first_bad`` (float32; -1 while every step was finite).
    """
    ok = metrics["finite"]
    okf = ok.astype(jnp.float32)
    return {
        "loss": accum["loss"] + jnp.where(ok, metrics["loss"], 0.0),
        "ce": accum["ce"] + jnp.where(ok, metrics["ce"], 0.0),
        "correct": accum["correct"] + jnp.where(ok, metrics["correct"], 0.0),
        "count": accum["count"] + okf * metrics["count"],
        "grad_norm": accum["grad_norm"] + jnp.where(ok, metrics["grad_norm"], 0.0),
        "steps": accum["steps"] + okf,
        "bad": accum["bad"] + (1.0 - okf),
        "first_bad": jnp.where(~ok & (accum["first_bad"] < 0), step.astype(jnp.float32), accum["first_bad"]),
    }
