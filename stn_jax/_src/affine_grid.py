"""Affine grid with a contraction-shaped derivative (fast reverse mode on every backend).

The grid itself is the elementwise multiply-add of :func:`stn_jax.affine_grid`
(full float32 precision on every backend; XLA decides whether to recompute it inside the
sampler that reads it or to store it once: XLA:CPU in jax 0.10 stores it, since the sampler's
four taps all read it). Its derivative w.r.t. ``theta`` is given as an
explicit ``einsum`` with the homogeneous base coordinates (at ``HIGHEST`` precision), so
reverse mode turns the (N, H, W, 2) grid cotangent into the (N, 2, 3) theta cotangent with
one ``dot_general`` instead of XLA autodiff's broadcast-multiply-reduce chain. On a 2-core
CPU (``experiments/benchmarks/bench_sampler.py``) the latter cost ~12x a dot of the same size
(see ``docs/design/performance.md``). Values and derivatives (all orders) are those
of the elementwise formula; the grid is linear in ``theta``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax._src import coordinates


def homogeneous_base(size: tuple[int, ...], align_corners: bool) -> np.ndarray:
    """(*size, d + 1) float64: the identity grid's ``(x, y[, z])`` followed by 1."""
    ident = coordinates.identity_coordinates(size, align_corners)
    return np.concatenate([ident, np.ones(ident.shape[:-1] + (1,))], axis=-1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def affine_grid(theta: jax.Array, size: tuple[int, ...], align_corners: bool) -> jax.Array:
    """theta (..., d, d + 1) -> grid (..., *size, d), dtype of theta; arguments validated by the caller."""
    d = len(size)
    base = jnp.asarray(homogeneous_base(size, align_corners), theta.dtype)
    t = theta[(..., *([None] * d), slice(None), slice(None))]  # (..., 1, .., 1, d, d + 1)
    out = t[..., :, d]
    for k in range(d):
        out = out + base[..., k, None] * t[..., :, k]
    return out


@affine_grid.defjvp
def _affine_grid_jvp(size, align_corners, primals, tangents):
    (theta,), (t_theta,) = primals, tangents
    base = jnp.asarray(homogeneous_base(size, align_corners), theta.dtype)
    spatial = "dhw"[3 - len(size):]
    t_out = jnp.einsum(f"...ck,{spatial}k->...{spatial}c", t_theta.astype(theta.dtype), base,
                       precision=jax.lax.Precision.HIGHEST)
    return affine_grid(theta, size, align_corners), t_out
