"""Projective (homography) grids: ``[u, v, w] = H @ [x_out, y_out, 1]``, source ``(u / w, v / w)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stn_jax._src import coordinates

MIN_W = 1e-6
"""Points with ``w <= MIN_W`` (on or behind the horizon) get the coordinate ``+inf``."""


def projective_grid(homography: jax.Array, size: tuple[int, int], align_corners: bool) -> jax.Array:
    """homography (..., 3, 3) -> grid (..., H, W, 2); arguments validated by the caller.

    Points on or behind the horizon hold ``+inf``, which the samplers read as outside the image.
    """
    h = homography
    base = jnp.asarray(coordinates.identity_coordinates(size, align_corners), h.dtype)
    t = h[..., None, None, :, :]
    uvw = t[..., :, 2] + base[..., 0, None] * t[..., :, 0] + base[..., 1, None] * t[..., :, 1]
    w = uvw[..., 2:]
    ok = w > MIN_W
    safe_w = jnp.where(ok, w, 1.0)
    return jnp.where(ok, uvw[..., :2] / safe_w, jnp.inf)
