"""Parameterisations of spatial transforms and algebra on affine matrices.

Every transform maps *output* (target) coordinates to *source* coordinates, in the
normalised coordinate system of :func:`stn_jax.grid_sample` (x, y in [-1, 1]). This is the
convention of PyTorch's ``affine_grid``: ``theta @ [x_out, y_out, 1] = [x_src, y_src]``.

A transform *kind* is a flat parameter vector of fixed length with an identity value:

============  ======  ==============================================  =====================
kind          params  meaning                                         identity
============  ======  ==============================================  =====================
translation   2       ``(tx, ty)``                                    ``(0, 0)``
attention     3       ``(s, tx, ty)``: isotropic scale + translation  ``(1, 0, 0)``
similarity    4       ``(a, b, tx, ty)``: ``[[a, -b, tx], [b, a, ty]]``  ``(1, 0, 0, 0)``
                      (``a = s cos r``, ``b = s sin r``)
affine        6       the 2x3 matrix, row major                       ``(1, 0, 0, 0, 1, 0)``
projective    8       the 3x3 homography, row major, ``h33 = 1``      ``(1,0,0, 0,1,0, 0,0)``
tps           2K      control-point displacements ``(K, 2)`` (x, y),  zeros
                      flattened row major
============  ======  ==============================================  =====================

All parameterisations are linear in their parameters, so a regression layer initialised to
zero weights and the identity bias yields exactly the identity transform.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from stn_jax import grids

__all__ = [
    "MATRIX_KINDS",
    "TRANSFORM_KINDS",
    "Transform",
    "affine_matrix",
    "attention_matrix",
    "compose_affine",
    "get_transform",
    "invert_affine",
    "pixel_affine_to_theta",
    "projective_matrix",
    "rotation_params",
    "similarity_matrix",
    "to_homogeneous",
    "translation_matrix",
]

TRANSFORM_KINDS = ("translation", "attention", "similarity", "affine", "projective", "tps")
"""Names accepted by :func:`get_transform`."""

MATRIX_KINDS = ("translation", "attention", "similarity", "affine")
"""Kinds whose parameters map to a 2x3 affine matrix (usable with :func:`stn_jax.warp`)."""


def translation_matrix(params: ArrayLike) -> jax.Array:
    """(..., 2) translations ``(tx, ty)`` -> (..., 2, 3) affine matrices."""
    p = jnp.asarray(params)
    one, zero = jnp.ones_like(p[..., 0]), jnp.zeros_like(p[..., 0])
    return _rows([one, zero, p[..., 0]], [zero, one, p[..., 1]])


def attention_matrix(params: ArrayLike) -> jax.Array:
    """(..., 3) ``(s, tx, ty)`` -> (..., 2, 3) matrices ``[[s, 0, tx], [0, s, ty]]``.

    ``s < 1`` zooms in: the output shows a window of half-width ``s`` centred at ``(tx, ty)``.
    """
    p = jnp.asarray(params)
    zero = jnp.zeros_like(p[..., 0])
    return _rows([p[..., 0], zero, p[..., 1]], [zero, p[..., 0], p[..., 2]])


def similarity_matrix(params: ArrayLike) -> jax.Array:
    """(..., 4) ``(a, b, tx, ty)`` -> (..., 2, 3) matrices ``[[a, -b, tx], [b, a, ty]]``.

    ``a = s cos(r)`` and ``b = s sin(r)`` for scale ``s`` and rotation ``r`` (radians,
    counter-clockwise in the (x right, y down) image frame is a positive ``r``
    rotating sample points from +x towards +y).
    """
    p = jnp.asarray(params)
    return _rows([p[..., 0], -p[..., 1], p[..., 2]], [p[..., 1], p[..., 0], p[..., 3]])


def affine_matrix(params: ArrayLike) -> jax.Array:
    """(..., 6) -> (..., 2, 3): the row-major affine matrix."""
    p = jnp.asarray(params)
    return p.reshape(p.shape[:-1] + (2, 3))


def projective_matrix(params: ArrayLike) -> jax.Array:
    """(..., 8) -> (..., 3, 3) homographies with the last entry fixed to 1."""
    p = jnp.asarray(params)
    one = jnp.ones_like(p[..., :1])
    return jnp.concatenate([p, one], axis=-1).reshape(p.shape[:-1] + (3, 3))


def _rows(row0: list[jax.Array], row1: list[jax.Array]) -> jax.Array:
    return jnp.stack([jnp.stack(row0, axis=-1), jnp.stack(row1, axis=-1)], axis=-2)


def rotation_params(angle: ArrayLike, *, scale: ArrayLike = 1.0, tx: ArrayLike = 0.0,
                    ty: ArrayLike = 0.0) -> jax.Array:
    """Similarity parameters ``(a, b, tx, ty)`` for a rotation ``angle`` (radians) and ``scale``.

    Args:
      angle: rotation in radians, any shape (see :func:`similarity_matrix` for the direction).
      scale: isotropic scale ``s`` (``a = s cos(angle)``, ``b = s sin(angle)``).
      tx, ty: translation in normalised units.

    Returns:
      (..., 4) parameters of the ``similarity`` kind, broadcast over all inputs.
    """
    angle, scale = jnp.asarray(angle), jnp.asarray(scale)
    tx, ty = jnp.broadcast_arrays(jnp.asarray(tx), jnp.asarray(ty))
    a, b = scale * jnp.cos(angle), scale * jnp.sin(angle)
    a, b, tx, ty = jnp.broadcast_arrays(a, b, tx, ty)
    return jnp.stack([a, b, tx, ty], axis=-1)


# ----------------------------------------------------------------------------- affine algebra


def _check_affine(theta: jax.Array, name: str) -> None:
    if theta.ndim < 2 or theta.shape[-2:] not in ((2, 3), (3, 4)):
        raise ValueError(
            f"{name} must have shape (..., 2, 3) (2-D) or (..., 3, 4) (3-D); got {theta.shape}")


def to_homogeneous(theta: ArrayLike) -> jax.Array:
    """(..., d, d+1) affine matrices -> (..., d+1, d+1) homogeneous matrices."""
    theta = jnp.asarray(theta)
    _check_affine(theta, "theta")
    d = theta.shape[-2]
    last = jnp.zeros(theta.shape[:-2] + (1, d + 1), theta.dtype).at[..., 0, d].set(1)
    return jnp.concatenate([theta, last], axis=-2)


def compose_affine(first: ArrayLike, second: ArrayLike) -> jax.Array:
    """The single affine transform equal to warping by ``first`` and then by ``second``.

    If ``y = warp(x, first)`` and ``z = warp(y, second)`` then, inside the image,
    ``z == warp(x, compose_affine(first, second))``. Since matrices map output to source
    coordinates, the result is the matrix product ``first @ second`` (homogeneous).
    Sampling once with the composed matrix avoids the border loss of chained warps.

    Args:
      first, second: (..., 2, 3) or (..., 3, 4) affine matrices (broadcastable).

    Returns:
      (..., 2, 3) or (..., 3, 4) composed matrix.
    """
    a, b = to_homogeneous(first), to_homogeneous(second)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"cannot compose a {a.shape[-1] - 1}-D and a {b.shape[-1] - 1}-D transform")
    return (a @ b)[..., :-1, :]


def invert_affine(theta: ArrayLike) -> jax.Array:
    """Inverse of (..., 2, 3) or (..., 3, 4) affine matrices (same shape out)."""
    return jnp.linalg.inv(to_homogeneous(theta))[..., :-1, :]


def pixel_affine_to_theta(matrix: ArrayLike, in_size: tuple[int, int], *,
                          size: tuple[int, int] | None = None,
                          align_corners: bool = False) -> jax.Array:
    """Convert a pixel-space 2x3 affine map to a normalised ``theta`` for ``affine_grid``.

    ``matrix`` maps output pixel coordinates ``(x, y)`` (x = column, y = row; pixel centres
    at integers) to source pixel coordinates, like the inverse map used by OpenCV's
    ``warpAffine(..., WARP_INVERSE_MAP)``.

    Args:
      matrix: (..., 2, 3) pixel-space map, output -> source.
      in_size: ``(H, W)`` of the source image.
      size: ``(Ho, Wo)`` of the output; default ``in_size``.
      align_corners: as in :func:`stn_jax.affine_grid`.

    Returns:
      (..., 2, 3) matrix ``theta`` such that ``affine_grid(theta, size)`` samples the
      same source points.
    """
    size = in_size if size is None else size
    to_pixel_out = to_homogeneous(grids.normalized_to_pixel_matrix(size, align_corners=align_corners))
    to_norm_in = to_homogeneous(grids.pixel_to_normalized_matrix(in_size, align_corners=align_corners))
    m = to_homogeneous(jnp.asarray(matrix))
    return (to_norm_in @ m @ to_pixel_out)[..., :2, :]


# ----------------------------------------------------------------------------- kinds


@dataclasses.dataclass(frozen=True)
class Transform:
    """A transform kind: its parameter count, identity and the map from parameters to a grid.

    Attributes:
      kind: one of :data:`TRANSFORM_KINDS`.
      num_params: length of the flat parameter vector.
      identity: (num_params,) float32 numpy array, the identity parameters.
      control_grid: for ``tps``, the lattice shape ``(gy, gx)``; else ``None``.
    """

    kind: str
    num_params: int
    identity: np.ndarray
    control_grid: tuple[int, int] | None = None

    @property
    def is_affine(self) -> bool:
        """True when the parameters map to a 2x3 affine matrix (:meth:`matrix`)."""
        return self.kind in MATRIX_KINDS

    def matrix(self, params: ArrayLike) -> jax.Array:
        """(..., num_params) -> (..., 2, 3) affine, or (..., 3, 3) for ``projective``."""
        params = self._check(params)
        if self.kind == "tps":
            raise ValueError("a tps transform has no matrix; use Transform.grid")
        return _MATRIX_FNS[self.kind](params)

    def grid(self, params: ArrayLike, size: tuple[int, int], *,
             align_corners: bool = False) -> jax.Array:
        """(N, num_params) -> (N, H, W, 2) sampling grid for output ``size = (H, W)``."""
        params = self._check(params)
        if self.kind == "tps":
            gy, gx = self.control_grid
            disp = params.reshape(params.shape[:-1] + (gy * gx, 2))
            return grids.tps_grid(disp, size, control_grid=self.control_grid,
                                  align_corners=align_corners)
        if self.kind == "projective":
            return grids.projective_grid(self.matrix(params), size, align_corners=align_corners)
        return grids.affine_grid(self.matrix(params), size, align_corners=align_corners)

    def _check(self, params: ArrayLike) -> jax.Array:
        params = jnp.asarray(params)
        if params.ndim < 1 or params.shape[-1] != self.num_params:
            raise ValueError(f"{self.kind} transform expects parameters of shape "
                             f"(..., {self.num_params}); got {params.shape}")
        return params


_MATRIX_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "translation": translation_matrix,
    "attention": attention_matrix,
    "similarity": similarity_matrix,
    "affine": affine_matrix,
    "projective": projective_matrix,
}

_IDENTITIES = {
    "translation": [0.0, 0.0],
    "attention": [1.0, 0.0, 0.0],
    "similarity": [1.0, 0.0, 0.0, 0.0],
    "affine": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    "projective": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
}


def get_transform(kind: str, *, num_control_points: int = 16) -> Transform:
    """Look up a transform kind.

    Args:
      kind: one of :data:`TRANSFORM_KINDS`.
      num_control_points: for ``tps`` only: K, a perfect square (the control points form a
        regular sqrt(K) x sqrt(K) lattice spanning [-1, 1]^2). The paper uses 16.

    Raises:
      ValueError: unknown kind, or K not a perfect square >= 4.
    """
    if kind not in TRANSFORM_KINDS:
        raise ValueError(f"unknown transform kind {kind!r}; expected one of {TRANSFORM_KINDS}")
    if kind == "tps":
        side = math.isqrt(num_control_points) if num_control_points > 0 else 0
        if side * side != num_control_points or side < 2:
            raise ValueError("tps needs num_control_points to be a perfect square >= 4 "
                             f"(a regular lattice); got {num_control_points}")
        return Transform("tps", 2 * num_control_points,
                         np.zeros(2 * num_control_points, np.float32), (side, side))
    identity = np.asarray(_IDENTITIES[kind], np.float32)
    return Transform(kind, identity.size, identity)
