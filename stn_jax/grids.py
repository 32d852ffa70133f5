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

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def _check_size(size: Sequence[int], dims: tuple[int, ...] = (2, 3)) -> tuple[int, ...]:
    try:
        size = tuple(int(s) for s in size)
    except TypeError:
        raise ValueError(f"size must be a tuple of spatial sizes (H, W) or (D, H, W); got {size!r}") from None
    if len(size) not in dims or any(s < 1 for s in size):
        want = " or ".join({2: "(H, W)", 3: "(D, H, W)"}[d] for d in dims)
        raise ValueError(f"size must be {want} with positive entries (spatial size only, "
                         f"no batch or channel); got {size}")
    return size


def _check_float(x: jax.Array, name: str) -> jax.Array:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array; got dtype {x.dtype}")
    return x


def base_coordinates(n: int, *, align_corners: bool = False) -> np.ndarray:
    """Normalised coordinates of the ``n`` pixel centres along one axis (float64, (n,))."""
    if n <= 1:
        return np.zeros((max(n, 1),), np.float64)
    c = np.linspace(-1.0, 1.0, n)
    return c if align_corners else c * (n - 1) / n


def identity_grid(size: Sequence[int], *, align_corners: bool = False,
                  dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """The grid that samples every pixel at its own centre.

    Args:
      size: ``(H, W)`` or ``(D, H, W)``.

    Returns:
      (H, W, 2) grid of ``(x, y)`` or (D, H, W, 3) grid of ``(x, y, z)``.
    """
    size = _check_size(size)
    axes = [base_coordinates(n, align_corners=align_corners) for n in size]
    mesh = np.meshgrid(*axes, indexing="ij")  # each (D?, H, W), ordered (z?, y, x)
    return jnp.asarray(np.stack(mesh[::-1], axis=-1), dtype)


def affine_grid(theta: ArrayLike, size: Sequence[int], *, align_corners: bool = False) -> jax.Array:
    """Sampling grid of an affine transform, identical to PyTorch's ``affine_grid``.

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
    size = _check_size(size)
    d = len(size)
    if theta.ndim not in (2, 3) or theta.shape[-2:] != (d, d + 1):
        raise ValueError(f"for a {d}-D size {size}, theta must have shape (N, {d}, {d + 1}) or "
                         f"({d}, {d + 1}); got {theta.shape}")
    # Elementwise multiply-add (not a matmul) keeps full float32 precision on every backend;
    # its derivative is an explicit contraction (one dot in reverse mode): see stn_jax._affine.
    from stn_jax import _affine

    return _affine.affine_grid(theta, size, bool(align_corners))


def projective_grid(homography: ArrayLike, size: Sequence[int], *,
                    align_corners: bool = False) -> jax.Array:
    """Sampling grid of a plane projective transform (the paper's "Proj", 8 parameters).

    ``[u, v, w] = H @ [x_out, y_out, 1]`` and the source point is ``(u / w, v / w)``.
    Points with ``w <= 1e-6`` (on or behind the horizon) get the coordinate ``+inf``, which
    :func:`stn_jax.grid_sample` treats as outside the image (zero output, zero gradient).

    Args:
      homography: (N, 3, 3) or (3, 3).
      size: ``(H, W)``.

    Returns:
      (N, H, W, 2) grid (no batch axis if ``homography`` had none).
    """
    h = _check_float(jnp.asarray(homography), "homography")
    size = _check_size(size, dims=(2,))
    if h.ndim not in (2, 3) or h.shape[-2:] != (3, 3):
        raise ValueError(f"homography must have shape (N, 3, 3) or (3, 3); got {h.shape}")
    base = identity_grid(size, align_corners=align_corners, dtype=h.dtype)
    t = h[..., None, None, :, :]
    uvw = t[..., :, 2] + base[..., 0, None] * t[..., :, 0] + base[..., 1, None] * t[..., :, 1]
    w = uvw[..., 2:]
    ok = w > 1e-6
    safe_w = jnp.where(ok, w, 1.0)
    return jnp.where(ok, uvw[..., :2] / safe_w, jnp.inf)


# ----------------------------------------------------------------------------- thin-plate spline


def tps_control_points(control_grid: tuple[int, int]) -> np.ndarray:
    """(K, 2) control points ``(x, y)`` of a regular ``(gy, gx)`` lattice spanning [-1, 1]^2.

    Ordered row major: point ``k = i * gx + j`` is at ``(x_j, y_i)``.
    """
    gy, gx = control_grid
    ys, xs = np.meshgrid(np.linspace(-1, 1, gy), np.linspace(-1, 1, gx), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r^2, with U(0) = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r2 > 0, r2 * np.log(np.maximum(r2, 1e-300)), 0.0)


@functools.lru_cache(maxsize=64)
def _tps_basis(size: tuple[int, int], control_grid: tuple[int, int], align_corners: bool) -> np.ndarray:
    """(H*W, K) float64 matrix M with ``displacement_field = M @ control_displacements``."""
    ctrl = tps_control_points(control_grid)
    k = ctrl.shape[0]
    poly = np.concatenate([np.ones((k, 1)), ctrl], axis=1)
    system = np.zeros((k + 3, k + 3))
    system[:k, :k] = _tps_kernel(((ctrl[:, None] - ctrl[None]) ** 2).sum(-1))
    system[:k, k:] = poly
    system[k:, :k] = poly.T
    coeffs = np.linalg.solve(system, np.eye(k + 3)[:, :k])  # (K+3, K): [w; a] per unit target
    # numpy only (no jax arrays), so the cache can be filled while tracing under jit.
    ys, xs = np.meshgrid(*(base_coordinates(n, align_corners=align_corners) for n in size), indexing="ij")
    pts = np.stack([xs, ys], axis=-1).astype(np.float32).astype(np.float64).reshape(-1, 2)
    basis = np.concatenate([_tps_kernel(((pts[:, None] - ctrl[None]) ** 2).sum(-1)),
                            np.ones((pts.shape[0], 1)), pts], axis=1)
    return basis @ coeffs


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

    Returns:
      (N, H, W, 2) grid (no batch axis if ``displacements`` had none).
    """
    disp = _check_float(jnp.asarray(displacements), "displacements")
    size = _check_size(size, dims=(2,))
    if disp.ndim not in (2, 3) or disp.shape[-1] != 2:
        raise ValueError(f"displacements must have shape (N, K, 2) or (K, 2); got {disp.shape}")
    k = disp.shape[-2]
    if control_grid is None:
        side = int(round(np.sqrt(k)))
        control_grid = (side, side)
    control_grid = tuple(int(g) for g in control_grid)
    if control_grid[0] * control_grid[1] != k or min(control_grid) < 2:
        raise ValueError(f"control_grid {control_grid} does not hold K={k} control points "
                         "(need gy * gx == K with gy, gx >= 2; K must be a square by default)")
    basis = jnp.asarray(_tps_basis(size, control_grid, bool(align_corners)), disp.dtype)
    field = jnp.einsum("pk,...kc->...pc", basis, disp, precision=jax.lax.Precision.HIGHEST)
    base = identity_grid(size, align_corners=align_corners, dtype=disp.dtype)
    return base + field.reshape(disp.shape[:-2] + (size[0], size[1], 2))


# ----------------------------------------------------------------------------- pixel coordinates


def normalized_to_pixel_matrix(size: Sequence[int], *, align_corners: bool = False) -> jax.Array:
    """(2, 3) affine map from normalised ``(x, y)`` to pixel ``(col, row)`` for ``size=(H, W)``.

    Pixel centres are at integer coordinates: pixel ``(row i, col j)`` is at ``(j, i)``.
    """
    h, w = _check_size(size, dims=(2,))
    sx, sy = ((w - 1) / 2, (h - 1) / 2) if align_corners else (w / 2, h / 2)
    return jnp.asarray([[sx, 0.0, (w - 1) / 2], [0.0, sy, (h - 1) / 2]], jnp.float32)


def pixel_to_normalized_matrix(size: Sequence[int], *, align_corners: bool = False) -> jax.Array:
    """(2, 3) affine map from pixel ``(col, row)`` to normalised ``(x, y)``; inverse of
    :func:`normalized_to_pixel_matrix`. With ``align_corners=True`` and a size of 1 the
    normalised coordinate is undefined (division by zero), as in PyTorch."""
    h, w = _check_size(size, dims=(2,))
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
