"""Thin-plate-spline (TPS) grids with control points on a regular lattice.

The source point of output location ``p`` is ``p + f(p)``, where ``f`` (kernel ``r^2 log r^2``
plus an affine part) interpolates the control-point displacements. ``f`` is linear in the
displacements: ``field = M @ displacements`` with a basis matrix ``M`` that depends only on the
output size, the lattice and ``align_corners``. ``M`` is built with numpy (no jax arrays), so
it can be built and cached while tracing under ``jit``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax._src import coordinates


def tps_control_points(control_grid: tuple[int, int]) -> np.ndarray:
    """(K, 2) control points ``(x, y)`` of a regular ``(gy, gx)`` lattice spanning [-1, 1]^2.

    Ordered row major: point ``k = i * gx + j`` is at ``(x_j, y_i)``.
    """
    gy, gx = control_grid
    ys, xs = np.meshgrid(np.linspace(-1, 1, gy), np.linspace(-1, 1, gx), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def tps_kernel(r2: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r^2 of squared distances ``r2``, with U(0) = 0 (float64)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r2 > 0, r2 * np.log(np.maximum(r2, 1e-300)), 0.0)


@functools.lru_cache(maxsize=64)
def tps_basis(size: tuple[int, int], control_grid: tuple[int, int], align_corners: bool) -> np.ndarray:
    """(H*W, K) float64 matrix M with ``displacement_field = M @ control_displacements``.

    numpy only (no jax arrays), so it is built and cached also while tracing under ``jit``.
    """
    ctrl = tps_control_points(control_grid)
    k = ctrl.shape[0]
    poly = np.concatenate([np.ones((k, 1)), ctrl], axis=1)
    system = np.zeros((k + 3, k + 3))
    system[:k, :k] = tps_kernel(((ctrl[:, None] - ctrl[None]) ** 2).sum(-1))
    system[:k, k:] = poly
    system[k:, :k] = poly.T
    coeffs = np.linalg.solve(system, np.eye(k + 3)[:, :k])  # (K+3, K): [w; a] per unit target
    # The output points as float32 grid values, so the basis matches the float32 identity grid.
    pts = coordinates.identity_coordinates(size, align_corners)
    pts = pts.astype(np.float32).astype(np.float64).reshape(-1, 2)
    basis = np.concatenate([tps_kernel(((pts[:, None] - ctrl[None]) ** 2).sum(-1)),
                            np.ones((pts.shape[0], 1)), pts], axis=1)
    return basis @ coeffs


def tps_grid(displacements: jax.Array, size: tuple[int, int], control_grid: tuple[int, int],
             align_corners: bool) -> jax.Array:
    """displacements (..., K, 2) -> grid (..., H, W, 2); arguments validated by the caller."""
    basis = jnp.asarray(tps_basis(size, control_grid, align_corners), displacements.dtype)
    field = jnp.einsum("pk,...kc->...pc", basis, displacements, precision=jax.lax.Precision.HIGHEST)
    base = jnp.asarray(coordinates.identity_coordinates(size, align_corners), displacements.dtype)
    return base + field.reshape(displacements.shape[:-2] + (size[0], size[1], 2))
