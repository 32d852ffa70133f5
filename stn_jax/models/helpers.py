"""Helpers around the zoo: inspection, regularisation, parameter paths and counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.linen import transform_penalty as _penalty
from stn_jax.models.specs import get_spec

_LOCALIZATION_PREFIXES = ("localization", "regression")


def apply_and_inspect(model: nn.Module, variables: Mapping[str, Any], images: Any
                      ) -> tuple[jax.Array, list[dict[str, Any]]]:
    """Run ``model`` on ``images`` once and return its output together with what each spatial
    transformer did (see :func:`inspect_transformers` for the records). Traceable: use it under
    ``jax.jit`` to get a model's predictions and transforms from one forward pass.

    Returns:
      ``(output, records)``: the model's output as from ``model.apply(variables, images,
      train=False)`` (logits (N, classes) for the zoo) and the list of records.
    """
    variables = {k: v for k, v in dict(variables).items()
                 if k not in ("intermediates", "stn_inspect")}
    output, state = model.apply(variables, jnp.asarray(images, jnp.float32), train=False,
                                mutable=["stn_inspect"])
    found: list[dict[str, Any]] = []

    def walk(tree: Any) -> None:
        for key, value in tree.items():
            if isinstance(key, str) and key.startswith("transform:"):
                for entry in value:
                    found.append({"kind": key.split(":", 1)[1], **entry})
            elif isinstance(value, Mapping):
                walk(value)

    walk(state.get("stn_inspect", {}))
    return output, found


def inspect_transformers(model: nn.Module, variables: Mapping[str, Any], images: Any
                         ) -> list[dict[str, Any]]:
    """Run ``model`` on ``images`` and return what each spatial transformer did.

    Args:
      model: a Linen module (e.g. from :func:`stn_jax.models.create_model`).
      variables: its variables (a dict with ``"params"``; other collections are passed on).
      images: (N, H, W, C) float32.

    Returns:
      One dict per transformer, in call order, with ``"kind"`` (str), ``"params"`` (N, P),
      ``"grid"`` (N, Ho, Wo, 2) normalised coordinates on the transformer's input and
      ``"warped"`` (N, Ho, Wo, C). Empty for models without transformers. For a series
      composition the entry describes the composed transform (kind ``affine`` or
      ``projective``). :func:`apply_and_inspect` returns the model's output as well.
    """
    return apply_and_inspect(model, variables, images)[1]


def transform_penalty(intermediates: Any) -> jax.Array:
    """Sum over transformers of the mean squared deviation of their parameters from their
    initial value (the identity, or a parallel head's starting region).

    Args:
      intermediates: the ``"intermediates"`` collection (or the whole mutable-state dict)
        returned by ``model.apply(..., mutable=["intermediates"])``; every transformer sows
        ``transform_deviation`` there.

    Returns:
      float32 scalar; 0 for a model without transformers.
    """
    return _penalty(intermediates)


def is_localization_path(path: tuple[str, ...]) -> bool:
    """True for a parameter of a localization net or of its regression layer.

    ``path`` is a tuple of names as in ``flax.traverse_util.flatten_dict(params)`` keys (jax
    ``DictKey`` path entries are accepted too). Used for the paper's reduced localization
    learning rate (e.g. ``optax.multi_transform``).
    """
    for entry in path:
        name = getattr(entry, "key", entry)
        if isinstance(name, str) and name.startswith(_LOCALIZATION_PREFIXES):
            return True
    return False


def count_params(variables: Mapping[str, Any]) -> int:
    """Number of scalars in ``variables["params"]`` (or in the whole tree without that key)."""
    tree = variables["params"] if isinstance(variables, Mapping) and "params" in variables \
        else variables
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def _shapes(model: nn.Module, dataset: str) -> Any:
    spec = get_spec(dataset)
    x = jax.ShapeDtypeStruct((1,) + spec.input_shape, jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))


def summary(name: str, dataset: str, transform: str = "affine", **overrides: Any) -> str:
    """A text summary of a zoo model: input, widths and parameters per part.

    Example line: ``st-cnn[affine] on rts: input (42, 42, 1), 10 classes, 119,... params``.
    """
    from stn_jax.models.zoo import budget, create_model
    model = create_model(name, dataset=dataset, transform=transform, **overrides)
    variables = _shapes(model, dataset)
    params = variables["params"]
    spec = get_spec(dataset)
    label = f"{name}[{transform}]" if name.startswith(("st-", "2st-")) else name
    total = count_params(variables)
    lines = [f"{label} on {dataset}: input {spec.input_shape}, {spec.num_classes} classes, "
             f"{total:,} params (budget {budget(dataset):,})"]
    loc = sum(int(np.prod(leaf.shape)) for path, leaf in
              jax.tree_util.tree_flatten_with_path(params)[0] if is_localization_path(path))
    if loc:
        lines.append(f"  localization + regression: {loc:,}")
        lines.append(f"  classifier: {total - loc:,}")
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = "/".join(str(getattr(k, "key", k)) for k in path)
        lines.append(f"    {names:<55s} {str(tuple(leaf.shape)):>16s}")
    return "\n".join(lines)
