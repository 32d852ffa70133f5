"""Sampling-grid generators: identity, affine (2-D/3-D), projective and thin-plate spline.

A grid holds, for every output pixel, the *source* location to sample, in normalised
coordinates: ``(x, y)`` (2-D, shape (..., H, W, 2)) or ``(x, y, z)`` (3-D, (..., D, H, W, 3)),
where x runs along the width axis, y along the height axis and z along the depth axis,
and -1 / +1 are the edges of the image. With ``align_corners=True`` -1 and +1 are the centres
of the first and last pixels; with ``align_corners=False`` (the default, as in PyTorch) they
are the outer edges of those pixels, so pixel ``i`` of ``n`` has centre ``(2i + 1) / n - 1``.

These are the conventions of PyTorch's ``affine_grid``/``grid_sample``; ``size`` here is the
*spatial* output size only: ``(H, W)`` or ``(D, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from stn_jax._src import affine_grid as affine_grid_lib
from stn_jax._src import coordinates, projective, tps
from stn_jax._src.coordinates import base_coordinates
from stn_jax._src.tps import tps_control_points

__all__ = [
    "affine_grid",
    "base_coordinates",
    "identity_grid",
    "normalized_to_pixel",
    "normalized_to_pixel_matrix",
    "pixel_to_normalized",
    "pixel_to_normalized_matrix",
    "projective_grid",
    "tps_control_points",
    "tps_grid",
]


def _check_float(x: jax.Array, name: str) -> jax.Array:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array; got dtype {x.dtype}")
    return x


def identity_grid(size: Sequence[int], *, align_corners: bool = False,
                  dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """The grid that samples every pixel at its own centre.

    Args:
      size: ``(H, W)`` or ``(D, H, W)``.
      align_corners: see the module docstring.
      dtype: floating dtype of the result.

    Returns:
      (H, W, 2) grid of ``(x, y)`` or (D, H, W, 3) grid of ``(x, y, z)``.
    """
    size = coordinates.check_size(size)
    return jnp.asarray(coordinates.identity_coordinates(size, align_corners), dtype)


def affine_grid(theta: ArrayLike, size: Sequence[int], *, align_corners: bool = False) -> jax.Array:
    """Sampling grid of an affine transform, identical to PyTorch's ``affine_grid``.

    The grid is an elementwise multiply-add (full float32 precision on every backend); its
    derivative w.r.t. ``theta`` is one contraction (a single dot in reverse mode).

    Args:
      theta: (N, 2, 3) with ``size = (H, W)``, or (N, 3, 4) with ``size = (D, H, W)``; an
        unbatched (2, 3) / (3, 4) matrix is also accepted. Maps output to source coordinates:
        ``[x_src, y_src] = theta @ [x_out, y_out, 1]``.
      size: spatial output size.
      align_corners: see the module docstring.

    Returns:
      (N, H, W, 2) or (N, D, H, W, 3) grid (no batch axis if ``theta`` had none), dtype of theta.
    """
    theta = _check_float(jnp.asarray(theta), "theta")
    size = coordinates.check_size(size)
    d = len(size)
    if theta.ndim not in (2, 3) or theta.shape[-2:] != (d, d + 1):
        raise ValueError(f"for a {d}-D size {size}, theta must have shape (N, {d}, {d + 1}) or "
                         f"({d}, {d + 1}); got {theta.shape}")
    return affine_grid_lib.affine_grid(theta, size, bool(align_corners))


def projective_grid(homography: ArrayLike, size: Sequence[int], *,
                    align_corners: bool = False) -> jax.Array:
    """Sampling grid of a plane projective transform (the paper's "Proj", 8 parameters).

    ``[u, v, w] = H @ [x_out, y_out, 1]`` and the source point is ``(u / w, v / w)``.
    Points with ``w <= 1e-6`` (on or behind the horizon) get the coordinate ``+inf``, which
    :func:`stn_jax.grid_sample` treats as outside the image (zero output, zero gradient).

    Args:
      homography: (N, 3, 3) or (3, 3).
      size: ``(H, W)``.
      align_corners: see the module docstring.

    Returns:
      (N, H, W, 2) grid (no batch axis if ``homography`` had none).
    """
    h = _check_float(jnp.asarray(homography), "homography")
    size = coordinates.check_size(size, dims=(2,))
    if h.ndim not in (2, 3) or h.shape[-2:] != (3, 3):
        raise ValueError(f"homography must have shape (N, 3, 3) or (3, 3); got {h.shape}")
    return projective.projective_grid(h, size, bool(align_corners))


def tps_grid(displacements: ArrayLike, size: Sequence[int], *,
             control_grid: tuple[int, int] | None = None, align_corners: bool = False) -> jax.Array:
    """Sampling grid of a thin-plate spline (TPS) warp with control points on a lattice.

    The source point for output location ``p`` is ``p + f(p)``, where ``f`` is the thin-plate
    spline (kernel ``r^2 log r^2`` plus an affine part) that interpolates the control-point
    displacements: ``f(c_k) = displacements[k]``. Zero displacements give the identity grid.
    The map is linear in ``displacements``, so it is cheap and exactly differentiable.

    Args:
      displacements: (N, K, 2) or (K, 2) displacements ``(dx, dy)`` in normalised units of the
        control points returned by :func:`tps_control_points`.
      size: ``(H, W)`` output size.
      control_grid: lattice shape ``(gy, gx)`` with ``gy * gx == K``; default: square lattice.
      align_corners: see the module docstring.

    Returns:
      (N, H, W, 2) grid (no batch axis if ``displacements`` had none).
    """
    disp = _check_float(jnp.asarray(displacements), "displacements")
    size = coordinates.check_size(size, dims=(2,))
    if disp.ndim not in (2, 3) or disp.shape[-1] != 2:
        raise ValueError(f"displacements must have shape (N, K, 2) or (K, 2); got {disp.shape}")
    k = disp.shape[-2]
    if control_grid is None:
        side = int(round(math.sqrt(k)))
        control_grid = (side, side)
    control_grid = tuple(int(g) for g in control_grid)
    if control_grid[0] * control_grid[1] != k or min(control_grid) < 2:
        raise ValueError(f"control_grid {control_grid} does not hold K={k} control points "
                         "(need gy * gx == K with gy, gx >= 2; K must be a square by default)")
    return tps.tps_grid(disp, size, control_grid, bool(align_corners))


# ----------------------------------------------------------------------------- pixel coordinates


def normalized_to_pixel_matrix(size: Sequence[int], *, align_corners: bool = False) -> jax.Array:
    """(2, 3) affine map from normalised ``(x, y)`` to pixel ``(col, row)`` for ``size=(H, W)``.

    Pixel centres are at integer coordinates: pixel ``(row i, col j)`` is at ``(j, i)``.
    """
    h, w = coordinates.check_size(size, dims=(2,))
    sx, sy = ((w - 1) / 2, (h - 1) / 2) if align_corners else (w / 2, h / 2)
    return jnp.asarray([[sx, 0.0, (w - 1) / 2], [0.0, sy, (h - 1) / 2]], jnp.float32)


def pixel_to_normalized_matrix(size: Sequence[int], *, align_corners: bool = False) -> jax.Array:
    """(2, 3) affine map from pixel ``(col, row)`` to normalised ``(x, y)``; inverse of
    :func:`normalized_to_pixel_matrix`. With ``align_corners=True`` and a size of 1 the
    normalised coordinate is undefined (division by zero), as in PyTorch."""
    h, w = coordinates.check_size(size, dims=(2,))
    sx, sy = ((w - 1) / 2, (h - 1) / 2) if align_corners else (w / 2, h / 2)
    return jnp.asarray([[1 / sx, 0.0, -(w - 1) / 2 / sx], [0.0, 1 / sy, -(h - 1) / 2 / sy]], jnp.float32)


def pixel_to_normalized(coords: ArrayLike, size: Sequence[int], *,
                        align_corners: bool = False) -> jax.Array:
    """(..., 2) pixel coordinates ``(col, row)`` -> normalised ``(x, y)`` for ``size=(H, W)``."""
    return _apply_affine(pixel_to_normalized_matrix(size, align_corners=align_corners), coords)


def normalized_to_pixel(coords: ArrayLike, size: Sequence[int], *,
                        align_corners: bool = False) -> jax.Array:
    """(..., 2) normalised ``(x, y)`` -> pixel coordinates ``(col, row)`` for ``size=(H, W)``."""
    return _apply_affine(normalized_to_pixel_matrix(size, align_corners=align_corners), coords)


def _apply_affine(m: jax.Array, coords: ArrayLike) -> jax.Array:
    c = _check_float(jnp.asarray(coords), "coords")
    if c.shape[-1:] != (2,):
        raise ValueError(f"coords must have shape (..., 2) holding (x, y); got {c.shape}")
    m = m.astype(c.dtype)
    return c[..., :1] * m[:, 0] + c[..., 1:] * m[:, 1] + m[:, 2]
