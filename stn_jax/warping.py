"""``warp``: an affine warp in one call (grid generation fused into the sampler)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from stn_jax import grids, sampling

__all__ = ["warp"]


def warp(image: ArrayLike, theta: ArrayLike, *, size: Sequence[int] | None = None,
         mode: str = "bilinear", padding_mode: str = "zeros",
         align_corners: bool = False) -> jax.Array:
    """Affine-warp ``image``: ``grid_sample(image, affine_grid(theta, size))`` in one call.

    The grid is an elementwise function of ``theta``, so under ``jit`` XLA may compute it inside
    the sampling loop instead of reading a stored (N, Ho, Wo, 2) array (XLA:CPU in jax 0.10
    stores it once: its four taps all read it).

    Args:
      image: (N, H, W, C) or (N, D, H, W, C) floating-point image (or unbatched).
      theta: (N, 2, 3) or (N, 3, 4) affine matrices (unbatched with an unbatched image),
        mapping output to source normalised coordinates (PyTorch convention).
      size: spatial output size ``(Ho, Wo)`` / ``(Do, Ho, Wo)``; default: the input's.
      mode, padding_mode, align_corners: as in :func:`stn_jax.grid_sample`.

    Returns:
      (N, Ho, Wo, C) or (N, Do, Ho, Wo, C), dtype of ``image``.
    """
    image, theta = jnp.asarray(image), jnp.asarray(theta)
    if not jnp.issubdtype(theta.dtype, jnp.floating):
        raise TypeError(f"theta must be floating point; got dtype {theta.dtype}")
    ndim = theta.shape[-2] if theta.ndim >= 2 else 0
    if ndim not in (2, 3) or theta.shape[-1] != ndim + 1 or theta.ndim not in (2, 3):
        raise ValueError(f"theta must have shape (N, 2, 3), (N, 3, 4) or unbatched (2, 3)/(3, 4); "
                         f"got {theta.shape}")
    batched = theta.ndim == 3
    if image.ndim != ndim + 1 + int(batched):
        raise ValueError(f"theta {theta.shape} describes a {'batched ' if batched else ''}{ndim}-D "
                         f"warp, so image must have rank {ndim + 1 + int(batched)}; got {image.shape}")
    spatial = image.shape[int(batched):-1]
    size = tuple(spatial) if size is None else tuple(size)
    grid_dtype = jnp.promote_types(theta.dtype, jnp.float32)
    grid = grids.affine_grid(theta.astype(grid_dtype), size, align_corners=align_corners)
    return sampling.grid_sample(image, grid, mode=mode, padding_mode=padding_mode,
                                align_corners=align_corners)
