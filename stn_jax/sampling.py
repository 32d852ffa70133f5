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
"""

from __future__ import annotations

import functools
import itertools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")

_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


# ----------------------------------------------------------------------------- coordinates


def _unnormalize(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
    if align_corners:
        return (coord + 1) / 2 * (size - 1)
    return ((coord + 1) * size - 1) / 2


def _clip(coord: jax.Array, size: int) -> jax.Array:
    # where (not clip) so that the gradient is 0 at and beyond both limits, as in PyTorch.
    hi = size - 1
    return jnp.where(coord <= 0, 0.0, jnp.where(coord >= hi, float(hi), coord)).astype(coord.dtype)


def _reflect(coord: jax.Array, twice_low: int, twice_high: int) -> jax.Array:
    if twice_low == twice_high:
        return jnp.zeros_like(coord)
    low = twice_low / 2
    span = (twice_high - twice_low) / 2
    c = coord - low
    c = jnp.where(c < 0, -c, c)
    extra = jnp.fmod(c, span)
    flips = jnp.floor(c / span)
    even = jnp.fmod(flips, 2) == 0
    return jnp.where(even, extra + low, span - extra + low)


def _apply_padding(coord: jax.Array, size: int, padding_mode: str, align_corners: bool) -> jax.Array:
    if padding_mode == "border":
        return _clip(coord, size)
    if padding_mode == "reflection":
        if align_corners:
            coord = _reflect(coord, 0, 2 * (size - 1))
        else:
            coord = _reflect(coord, -1, 2 * size - 1)
        return _clip(coord, size)
    return coord


def _cubic_weights(t: jax.Array) -> list[jax.Array]:
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


Tap = tuple[jax.Array, jax.Array]  # (integer-valued float index, weight)


def _axis_taps(coord: jax.Array, size: int, mode: str, padding_mode: str,
               align_corners: bool) -> list[Tap]:
    """The 1-D taps (source index, weight) of one axis for every output point."""
    ix = _unnormalize(coord, size, align_corners)
    if mode == "bicubic":
        i0 = jnp.floor(ix)
        weights = _cubic_weights(ix - i0)
        taps = [jax.lax.stop_gradient(i0 + (k - 1)) for k in range(4)]
        taps = [_apply_padding(t, size, padding_mode, align_corners) for t in taps]
        return list(zip(taps, weights))
    ix = _apply_padding(ix, size, padding_mode, align_corners)
    if mode == "nearest":
        return [(jax.lax.stop_gradient(jnp.round(ix)), jnp.ones_like(ix))]
    i0 = jax.lax.stop_gradient(jnp.floor(ix))
    frac = ix - i0
    return [(i0, 1 - frac), (i0 + 1, frac)]


# ----------------------------------------------------------------------------- per-example core


def _sample_one(image: jax.Array, grid: jax.Array, *, mode: str, padding_mode: str,
                align_corners: bool, compute_dtype: jnp.dtype) -> jax.Array:
    """One example: image (*spatial, C), grid (*out_spatial, ndim) -> (*out_spatial, C)."""
    spatial = image.shape[:-1]
    ndim = len(spatial)
    channels = image.shape[-1]
    grid = grid.astype(compute_dtype)
    # Per-component arithmetic, no reduce op over the last axis: for affine_grid + grid_sample
    # XLA:CPU then runs two fusions (grid, sampling) instead of four (no separate reduce and
    # select passes); 28x28 forward 1.5 -> 0.96 ms (experiments/NOTES-performance.md).
    components = [grid[..., k] for k in range(ndim)]
    finite = functools.reduce(jnp.logical_and, [jnp.isfinite(g) for g in components])
    components = [jnp.where(finite, g, 0.0) for g in components]  # safe value; masked out below

    # grid component k is (x, y, z)[k]; spatial axis a = ndim - 1 - k.
    per_axis = []
    for axis, size in enumerate(spatial):
        coord = components[ndim - 1 - axis]
        per_axis.append(_axis_taps(coord, size, mode, padding_mode, align_corners))

    flat = image.reshape(-1, channels)
    strides = [1] * ndim
    for axis in range(ndim - 2, -1, -1):
        strides[axis] = strides[axis + 1] * spatial[axis + 1]

    out = jnp.zeros(grid.shape[:-1] + (channels,), compute_dtype)
    for combo in itertools.product(*per_axis):
        weight = finite.astype(compute_dtype)
        flat_index = jnp.zeros(grid.shape[:-1], jnp.int32)
        for axis, (index, w) in enumerate(combo):
            size = spatial[axis]
            inside = (index >= 0) & (index <= size - 1)
            weight = weight * jnp.where(inside, w, 0.0)
            safe = jnp.clip(index, 0, size - 1).astype(jnp.int32)
            flat_index = flat_index + safe * strides[axis]
        values = jnp.take(flat, flat_index, axis=0, mode="clip").astype(compute_dtype)
        out = out + weight[..., None] * values
    return out


# ----------------------------------------------------------------------------- public API


def _compute_dtype(*dtypes: jnp.dtype) -> jnp.dtype:
    return jnp.float64 if any(d == jnp.float64 for d in dtypes) else jnp.float32


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


def check_options(mode: str, padding_mode: str, ndim: int = 2) -> None:
    """Raise ValueError for an unknown mode/padding or bicubic in 3-D."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
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
    ndim, batched = _resolve_layout(image, grid)
    check_options(mode, padding_mode, ndim)
    from stn_jax import _bilinear, _blocked  # fast 2-D bilinear paths (they import this module)

    fast = _bilinear.use_fast_path(mode, ndim)
    options = dict(padding_mode=padding_mode, align_corners=bool(align_corners),
                   compute_dtype=_compute_dtype(image.dtype, grid.dtype))
    steps = (_blocked.steps_for(grid.shape[0], grid.shape[1] * grid.shape[2])
             if fast and batched and _blocked.blocking_enabled() else 1)
    if steps > 1:
        out = _blocked.sample_batched(image, grid, steps=steps, **options)
    else:
        core = _bilinear.sample_one if fast else functools.partial(_sample_one, mode=mode)
        fn: Callable[[jax.Array, jax.Array], jax.Array] = lambda im, g: core(im, g, **options)
        out = jax.vmap(fn)(image, grid) if batched else fn(image, grid)
    return out.astype(image.dtype)
