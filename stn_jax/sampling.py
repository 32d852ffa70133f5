"""``grid_sample``: differentiable image sampling with PyTorch's exact conventions.

Layout is channels-last: images (N, H, W, C) or (N, D, H, W, C); grids (N, Ho, Wo, 2) holding
``(x, y)`` or (N, Do, Ho, Wo, 3) holding ``(x, y, z)`` in normalised coordinates (see
:mod:`stn_jax.grids`). Values, gradients, padding and ``align_corners`` semantics match
``torch.nn.functional.grid_sample`` (checked against it in ``tests/test_sampling_parity.py``):

* coordinate ``x`` maps to the pixel coordinate ``(x + 1) / 2 * (W - 1)`` when
  ``align_corners=True`` and ``((x + 1) * W - 1) / 2`` when ``False`` (pixel centres at integers);
* ``padding_mode="zeros"``: taps outside the image read 0; ``"border"``: the coordinate is
  clamped to ``[0, W - 1]``; ``"reflection"``: the coordinate is reflected at the image edges
  (at the pixel centres with ``align_corners=True``, at the outer pixel edges otherwise) and
  then clamped. Clamped coordinates have zero gradient, exactly as in PyTorch;
* ``mode="nearest"`` rounds half to even; ``"bicubic"`` (2-D only) uses cubic convolution
  with ``A = -0.75`` and applies the padding rule to each of the 4x4 taps.

Non-finite grid values (NaN, +-inf) are treated as *outside the image for every padding
mode*: the output there is 0 and both gradients are 0. They never index out of bounds.

Half-precision inputs (bfloat16, float16) are computed in float32 and the result is cast
back to the image dtype; float64 inputs (with ``jax_enable_x64``) are computed in float64.

Several exact implementations exist (a per-tap reference sampler; for 2-D bilinear sampling a
window-gather path with a hand-written derivative and, on one CPU device, a cache-blocked
derivative for large batches). The fastest is chosen at trace time; experts can pin one with
:func:`sampler_implementation` or the environment variable ``STN_JAX_SAMPLER_IMPLEMENTATION``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from stn_jax._src import dispatch
from stn_jax._src.dispatch import current_sampler_implementation, sampler_implementation

__all__ = [
    "INTERPOLATION_MODES",
    "PADDING_MODES",
    "SAMPLER_IMPLEMENTATIONS",
    "check_options",
    "current_sampler_implementation",
    "grid_sample",
    "sampler_implementation",
]

INTERPOLATION_MODES = ("bilinear", "nearest", "bicubic")
"""Values of the ``mode`` option (``"bicubic"`` is 2-D only)."""

PADDING_MODES = ("zeros", "border", "reflection")
"""Values of the ``padding_mode`` option."""

SAMPLER_IMPLEMENTATIONS = dispatch.IMPLEMENTATIONS
"""Names accepted by :func:`sampler_implementation` and ``STN_JAX_SAMPLER_IMPLEMENTATION``."""


def _resolve_layout(image: jax.Array, grid: jax.Array) -> tuple[int, bool]:
    """Returns (spatial ndim, batched) or raises a ValueError naming the expected shapes."""
    expected = ("expected image (N, H, W, C) with grid (N, Ho, Wo, 2), image (N, D, H, W, C) "
                "with grid (N, Do, Ho, Wo, 3), or the same without the batch axis")
    if grid.ndim < 3 or grid.shape[-1] not in (2, 3):
        raise ValueError(f"grid's last axis must hold 2 (x, y) or 3 (x, y, z) coordinates; "
                         f"got grid shape {grid.shape}; {expected}")
    ndim = grid.shape[-1]
    if grid.ndim == ndim + 2:
        batched = True
    elif grid.ndim == ndim + 1:
        batched = False
    else:
        raise ValueError(f"a grid holding {ndim} coordinates must have rank {ndim + 2} (batched) "
                         f"or {ndim + 1}; got grid shape {grid.shape}; {expected}")
    if image.ndim != grid.ndim:
        raise ValueError(f"image rank {image.ndim} does not match grid rank {grid.ndim} "
                         f"(image {image.shape}, grid {grid.shape}); {expected}")
    if batched and image.shape[0] != grid.shape[0]:
        raise ValueError(f"batch sizes differ: image has {image.shape[0]}, grid has {grid.shape[0]}")
    if any(s == 0 for s in image.shape[int(batched):-1]):
        raise ValueError(f"image spatial size must be non-zero; got image shape {image.shape}")
    return ndim, batched


def check_options(mode: str, padding_mode: str, ndim: int) -> None:
    """Raise ValueError for an unknown ``mode``/``padding_mode`` or bicubic with ``ndim != 2``.

    Args:
      mode: one of :data:`INTERPOLATION_MODES`.
      padding_mode: one of :data:`PADDING_MODES`.
      ndim: number of spatial dimensions (2 or 3).
    """
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {INTERPOLATION_MODES}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"unknown padding_mode {padding_mode!r}; expected one of {PADDING_MODES}")
    if mode == "bicubic" and ndim != 2:
        raise ValueError("mode='bicubic' supports only 2-D images (N, H, W, C); use 'bilinear' "
                         "(trilinear) or 'nearest' for 3-D volumes")


def grid_sample(image: ArrayLike, grid: ArrayLike, *, mode: str = "bilinear",
                padding_mode: str = "zeros", align_corners: bool = False) -> jax.Array:
    """Sample ``image`` at the normalised locations in ``grid`` (PyTorch ``grid_sample``).

    Args:
      image: (N, H, W, C) or (N, D, H, W, C), floating point (channels last); an unbatched
        (H, W, C) / (D, H, W, C) image is accepted together with an unbatched grid.
      grid: (N, Ho, Wo, 2) holding ``(x, y)`` or (N, Do, Ho, Wo, 3) holding ``(x, y, z)``;
        floating point. ``(-1, -1)`` is the top-left corner of the image.
      mode: ``"bilinear"`` (trilinear in 3-D), ``"nearest"`` or ``"bicubic"`` (2-D only).
      padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
      align_corners: whether -1/+1 are the centres (True) or outer edges (False) of the
        corner pixels.

    Returns:
      (N, Ho, Wo, C) or (N, Do, Ho, Wo, C) array with the dtype of ``image``.

    Raises:
      TypeError: non-floating image or grid.
      ValueError: ranks, batch sizes or coordinate count that do not fit, or an unknown option.
    """
    image, grid = jnp.asarray(image), jnp.asarray(grid)
    for name, x in (("image", image), ("grid", grid)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be a floating-point array (float32, bfloat16, float16 "
                            f"or float64); got dtype {x.dtype}")
    ndim, _ = _resolve_layout(image, grid)
    check_options(mode, padding_mode, ndim)
    return dispatch.sample(image, grid, mode=mode, padding_mode=padding_mode,
                           align_corners=bool(align_corners))
