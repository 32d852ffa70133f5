"""Axis-aligned warps (scale + translation) as two matrix products per example.

An affine matrix without rotation or shear, ``theta = [[sx, 0, tx], [0, sy, ty]]``, samples
output pixel ``(i, j)`` at source ``(x_j, y_i) = (sx * xo_j + tx, sy * yo_i + ty)``: the x
coordinate depends only on the output column and y only on the output row. Every sampling
mode is a product of per-axis weights, so the warp factorises exactly::

    out[i, j, c] = sum_a sum_b Ky[i, a] * Kx[j, b] * image[a, b, c]

with ``Kx`` (Wo, W) and ``Ky`` (Ho, H) the per-axis tap matrices, built from the same 1-D taps
as the gather samplers (:func:`stn_jax._src.coordinates.axis_taps`). :func:`warp` is a
``custom_jvp``: the undifferentiated call is the gather sampler (cheaper forward), every
derivative is the derivative of the matrix products (no scatter-add: deterministic on every
backend). The dots run at ``HIGHEST`` precision (no silent TF32/bfloat16 passes).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from stn_jax._src import affine_grid, coordinates, dispatch


def tap_matrix(coord: jax.Array, size: int, *, mode: str, padding_mode: str,
               align_corners: bool) -> jax.Array:
    """coord (N, K) normalised source coordinates -> (N, K, size) per-axis tap weights.

    A non-finite coordinate gives a zero row (the point reads as outside), with zero gradient.
    """
    finite = jnp.isfinite(coord)
    coord = jnp.where(finite, coord, 0.0)
    positions = jnp.arange(size, dtype=jnp.int32)
    matrix = jnp.zeros(coord.shape + (size,), coord.dtype)
    for index, weight in coordinates.axis_taps(coord, size, mode, padding_mode, align_corners):
        inside = (index >= 0) & (index <= size - 1)
        weight = jnp.where(inside & finite, weight, 0.0)
        safe = jnp.clip(index, 0, size - 1).astype(jnp.int32)
        matrix = matrix + jnp.where(safe[..., None] == positions, weight[..., None], 0.0)
    return matrix


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
def warp(image: jax.Array, scale: jax.Array, translation: jax.Array, size: tuple[int, int],
         mode: str, padding_mode: str, align_corners: bool) -> jax.Array:
    """image (N, H, W, C), scale and translation (N, 2) (x, y) in the compute dtype -> (N, Ho, Wo, C).

    Arguments validated by the caller. The value is the gather sampler's; derivatives are
    those of :func:`products`.
    """
    # Undifferentiated: the gather sampler, whose forward is cheaper than the dense products.
    zero = jnp.zeros_like(scale[:, 0])
    theta = jnp.stack([jnp.stack([scale[:, 0], zero, translation[:, 0]], -1),
                       jnp.stack([zero, scale[:, 1], translation[:, 1]], -1)], 1)
    theta = theta.astype(jnp.promote_types(theta.dtype, jnp.float32))
    grid = affine_grid.affine_grid(theta, size, align_corners)
    return dispatch.sample(image, grid, mode=mode, padding_mode=padding_mode,
                           align_corners=align_corners)


@warp.defjvp
def _warp_jvp(size, mode, padding_mode, align_corners, primals, tangents):
    warp_products = functools.partial(products, size=size, mode=mode, padding_mode=padding_mode,
                                      align_corners=align_corners)
    return jax.jvp(warp_products, primals, tangents)


def products(image: jax.Array, scale: jax.Array, translation: jax.Array, *, size: tuple[int, int],
             mode: str, padding_mode: str, align_corners: bool) -> jax.Array:
    """The warp as ``Ky @ image @ Kx^T`` per example (see the module docstring)."""
    _, h, w, _ = image.shape
    ho, wo = size
    dtype = scale.dtype
    base_x = jnp.asarray(coordinates.base_coordinates(wo, align_corners=align_corners), dtype)
    base_y = jnp.asarray(coordinates.base_coordinates(ho, align_corners=align_corners), dtype)
    # The same arithmetic as affine_grid's x = t00 * xo + t01 * yo + t02 with t01 = 0.
    x = scale[:, 0:1] * base_x + translation[:, 0:1]  # (N, Wo)
    y = scale[:, 1:2] * base_y + translation[:, 1:2]  # (N, Ho)
    opts = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    kx = tap_matrix(x, w, **opts)  # (N, Wo, W)
    ky = tap_matrix(y, h, **opts)  # (N, Ho, H)
    highest = jax.lax.Precision.HIGHEST
    rows = jnp.einsum("njb,nabc->najc", kx, image.astype(dtype), precision=highest)
    out = jnp.einsum("nia,najc->nijc", ky, rows, precision=highest)
    return out.astype(image.dtype)
