"""Cache-blocked derivative of the batched 2-D bilinear sampler (XLA:CPU, large batches).

The reverse pass of :func:`stn_jax._src.bilinear.sample_one` under ``vmap`` materialises several
arrays with one or more entries per output point (scatter indices, the (P, 2, 2C) update
array of the image-gradient scatter, the gathered windows for the grid gradient). When the
batch has many output points these arrays no longer fit in the CPU caches and every pass
over them runs at DRAM speed. Here the derivative of a batched call is evaluated as
``lax.map`` over ``steps`` contiguous chunks of the batch, with ``jax.checkpoint`` on the
step so that nothing but the inputs is saved between the passes: each step's intermediates
are cache-sized. The values and gradients are exactly those of the unblocked path (the same
per-example computations; only the order in which examples are processed changes).

* Only the derivative is blocked: the undifferentiated call stays one vmapped pass (a blocked
  forward measured ~2x slower).
* Only when the image tangent is non-zero: with a constant image (the usual spatial-
  transformer case, gradients w.r.t. theta only) the grid-only derivative has no scatter and
  blocking made it slower, so that case keeps the unblocked rule. Symbolic-zero tangents tell
  the two apart at trace time.

When it runs and with how many steps (one-device CPU, large batches) is decided by
:func:`stn_jax._src.dispatch.choose_kernel` and :func:`stn_jax._src.dispatch.blocked_steps`;
measurements in ``docs/design/performance.md``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from stn_jax._src import bilinear


def _vmapped(padding_mode: str, align_corners: bool, compute_dtype: jnp.dtype):
    return jax.vmap(functools.partial(bilinear.sample_one, padding_mode=padding_mode,
                                     align_corners=align_corners, compute_dtype=compute_dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _sample(image: jax.Array, grid: jax.Array, padding_mode: str, align_corners: bool,
            compute_dtype: jnp.dtype, steps: int) -> jax.Array:
    return _vmapped(padding_mode, align_corners, compute_dtype)(image, grid)


def _sample_jvp(padding_mode, align_corners, compute_dtype, steps, primals, tangents):
    sample = _vmapped(padding_mode, align_corners, compute_dtype)
    image, grid = primals
    t_image, t_grid = tangents
    if isinstance(t_image, SymbolicZero):  # constant image: no scatter, nothing to block
        if isinstance(t_grid, SymbolicZero):
            out = sample(image, grid)
            return out, jnp.zeros_like(out)
        return jax.jvp(lambda g: sample(image, g), (grid,), (t_grid,))
    grid_live = not isinstance(t_grid, SymbolicZero)

    def split(x: jax.Array) -> jax.Array:
        return x.reshape(steps, x.shape[0] // steps, *x.shape[1:])

    def step(chunk):
        im, g, t_im, t_g = chunk
        if grid_live:
            return jax.jvp(sample, (im, g), (t_im, t_g))[1]
        return jax.jvp(lambda a: sample(a, g), (im,), (t_im,))[1]

    chunks = (split(image), split(grid), split(t_image), split(t_grid) if grid_live else None)
    t_out = lax.map(jax.checkpoint(step), chunks)
    out = sample(image, grid)
    return out, t_out.reshape(out.shape)


_sample.defjvp(_sample_jvp, symbolic_zeros=True)


def sample_batched(image: jax.Array, grid: jax.Array, *, padding_mode: str, align_corners: bool,
                   compute_dtype: jnp.dtype, steps: int) -> jax.Array:
    """Batched 2-D bilinear sampling, image (N, H, W, C), grid (N, Ho, Wo, 2) -> (N, Ho, Wo, C).

    Equal to ``vmap(bilinear.sample_one)`` in value and in every derivative; reverse mode
    w.r.t. the image runs over ``steps`` chunks of the batch (``steps`` must divide N).
    """
    if steps < 1 or image.shape[0] % steps:
        raise ValueError(f"steps must be a positive divisor of the batch size {image.shape[0]}; got {steps}")
    return _sample(image, grid, padding_mode, bool(align_corners), jnp.dtype(compute_dtype), int(steps))
