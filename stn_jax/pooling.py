"""2x2 max-pooling with stride 2, as a reshape instead of a reduction window.

Every CNN of this package (the zoo's classifiers and the localization nets) pools with
``max_pool(x, (2, 2), strides=(2, 2), padding="SAME")``. XLA differentiates flax's
``lax.reduce_window`` version with a ``select_and_scatter_add``, which XLA:CPU runs slowly; as a
reshape the whole training step of the paper-architecture models runs 3-10% faster on a 2-core
x86_64 CPU (RTS CNN 1.04x, RTS ST-CNN 1.07x, TC CNN 1.10x, TC ST-CNN 1.03x, batch 128;
``experiments/benchmarks/bench_pool.py``).

:func:`max_pool_2x2` computes the same function with the same derivative, bit for bit:

* forward: the input is padded with ``-inf`` at the bottom and right to even height and width
  (what ``padding="SAME"`` does for a 2x2 window with stride 2), reshaped to
  (N, H/2, 2, W/2, 2, C) and reduced with ``max``;
* derivative: each output's tangent (and, transposed, its cotangent) is that of the *first*
  maximum of its window in row-major order (top-left, top-right, bottom-left, bottom-right), the
  element ``select_and_scatter_add`` picks. ``jnp.max``'s own derivative would instead split
  the gradient evenly between tied maxima, which happen: a blank background gives every window
  the same conv output.

Forward- and reverse-mode differentiation both work (``jax.custom_jvp``) and agree with each
other. (On tied maxima JAX's own forward-mode derivative of ``reduce_window`` can pick a different
element of the window than its reverse mode; this function always picks the first.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _windows(x: jax.Array, *, fill: float) -> jax.Array:
    """(N, H, W, C) -> (N, ceil(H/2), ceil(W/2), C, 4): each 2x2 window's elements in row-major
    order, with `fill` for the padding of an odd height or width."""
    n, h, w, c = x.shape
    ho, wo = -(-h // 2), -(-w // 2)
    if (2 * ho, 2 * wo) != (h, w):
        x = jnp.pad(x, ((0, 0), (0, 2 * ho - h), (0, 2 * wo - w), (0, 0)), constant_values=fill)
    return x.reshape(n, ho, 2, wo, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, ho, wo, c, 4)


@jax.custom_jvp
def _max_pool(x: jax.Array) -> jax.Array:
    return _windows(x, fill=-jnp.inf).max(axis=-1)


@_max_pool.defjvp
def _max_pool_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    windows = _windows(x, fill=-jnp.inf)
    first = jax.nn.one_hot(jnp.argmax(windows, axis=-1), 4, dtype=t.dtype)
    return windows.max(axis=-1), jnp.sum(first * _windows(t, fill=0.0), axis=-1)


def max_pool_2x2(x: jax.typing.ArrayLike) -> jax.Array:
    """2x2 max-pooling with stride 2 and 'SAME' padding (odd sizes round up).

    Equal, values and gradients, to ``flax.linen.max_pool(x, (2, 2), strides=(2, 2),
    padding="SAME")``; faster to differentiate on the CPU (module docstring).

    Args:
      x: (N, H, W, C) or a single (H, W, C) image, a floating dtype.

    Returns:
      (N, ceil(H/2), ceil(W/2), C) (no N for a single image), the dtype of ``x``.
    """
    x = jnp.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"max_pool_2x2 expects (N, H, W, C) or (H, W, C); got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"max_pool_2x2 expects a floating dtype; got {x.dtype}")
    if x.ndim == 3:
        return _max_pool(x[None])[0]
    return _max_pool(x)
