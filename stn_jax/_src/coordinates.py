"""Coordinates, padding and 1-D taps: the arithmetic every sampler shares.

Conventions (those of PyTorch's ``grid_sample``): a normalised coordinate ``c`` in [-1, 1]
along an axis of ``size`` pixels maps to the pixel coordinate ``(c + 1) / 2 * (size - 1)``
with ``align_corners=True`` (-1 and +1 are the centres of the corner pixels) and
``((c + 1) * size - 1) / 2`` with ``align_corners=False`` (-1 and +1 are their outer edges).
Pixel centres are at integer pixel coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

CUBIC_A = -0.75
"""PyTorch's (and OpenCV's) cubic convolution coefficient."""

Tap = tuple[jax.Array, jax.Array]
"""One 1-D tap: (integer-valued float source index, weight), each shaped like the coordinate."""


def unnormalize(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
    """Normalised coordinates -> pixel coordinates along an axis of ``size`` pixels."""
    if align_corners:
        return (coord + 1) / 2 * (size - 1)
    return ((coord + 1) * size - 1) / 2


def clip_coordinates(coord: jax.Array, size: int) -> jax.Array:
    """Clamp pixel coordinates to ``[0, size - 1]``, with zero gradient at and beyond both limits."""
    # where (not clip) so that the gradient is 0 at and beyond both limits, as in PyTorch.
    hi = size - 1
    return jnp.where(coord <= 0, 0.0, jnp.where(coord >= hi, float(hi), coord)).astype(coord.dtype)


def reflect_coordinates(coord: jax.Array, twice_low: int, twice_high: int) -> jax.Array:
    """Reflect pixel coordinates into ``[twice_low / 2, twice_high / 2]`` (PyTorch's rule)."""
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


def apply_padding(coord: jax.Array, size: int, padding_mode: str, align_corners: bool) -> jax.Array:
    """The padding rule on pixel coordinates: ``"zeros"`` leaves them, ``"border"`` clamps,
    ``"reflection"`` reflects (at the centres of the edge pixels with ``align_corners=True``, at
    their outer edges otherwise) and then clamps."""
    if padding_mode == "border":
        return clip_coordinates(coord, size)
    if padding_mode == "reflection":
        if align_corners:
            coord = reflect_coordinates(coord, 0, 2 * (size - 1))
        else:
            coord = reflect_coordinates(coord, -1, 2 * size - 1)
        return clip_coordinates(coord, size)
    return coord


def cubic_weights(t: jax.Array) -> list[jax.Array]:
    """The four cubic-convolution weights of taps ``i0 - 1 .. i0 + 2`` for fraction ``t``."""
    a = CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def axis_taps(coord: jax.Array, size: int, mode: str, padding_mode: str,
              align_corners: bool) -> list[Tap]:
    """The 1-D taps (source index, weight) of one axis for every output point.

    Args:
      coord: normalised coordinates along the axis (finite), any shape.
      size: number of pixels along the axis.
      mode: ``"bilinear"`` (2 taps), ``"nearest"`` (1) or ``"bicubic"`` (4).
      padding_mode, align_corners: as in :func:`stn_jax.grid_sample`.

    Returns:
      A list of (index, weight) pairs shaped like ``coord``; indices may lie outside
      ``[0, size - 1]`` (``"zeros"`` padding), where the caller reads 0.
    """
    ix = unnormalize(coord, size, align_corners)
    if mode == "bicubic":
        i0 = jnp.floor(ix)
        weights = cubic_weights(ix - i0)
        taps = [jax.lax.stop_gradient(i0 + (k - 1)) for k in range(4)]
        taps = [apply_padding(t, size, padding_mode, align_corners) for t in taps]
        return list(zip(taps, weights, strict=True))
    ix = apply_padding(ix, size, padding_mode, align_corners)
    if mode == "nearest":
        return [(jax.lax.stop_gradient(jnp.round(ix)), jnp.ones_like(ix))]
    i0 = jax.lax.stop_gradient(jnp.floor(ix))
    frac = ix - i0
    return [(i0, 1 - frac), (i0 + 1, frac)]


def compute_dtype(*dtypes: jnp.dtype) -> jnp.dtype:
    """float64 if any input is float64, else float32 (half precision is computed in float32)."""
    return jnp.float64 if any(d == jnp.float64 for d in dtypes) else jnp.float32


def check_size(size: Sequence[int], *, dims: tuple[int, ...] = (2, 3)) -> tuple[int, ...]:
    """Validate a spatial size ``(H, W)`` / ``(D, H, W)`` with ``len(size) in dims``.

    Raises:
      ValueError: not a sequence of ints, the wrong length, or a non-positive entry.
    """
    try:
        size = tuple(int(s) for s in size)
    except TypeError:
        raise ValueError(f"size must be a tuple of spatial sizes (H, W) or (D, H, W); got {size!r}") from None
    if len(size) not in dims or any(s < 1 for s in size):
        want = " or ".join({2: "(H, W)", 3: "(D, H, W)"}[d] for d in dims)
        raise ValueError(f"size must be {want} with positive entries (spatial size only, "
                         f"no batch or channel); got {size}")
    return size


def base_coordinates(n: int, *, align_corners: bool = False) -> np.ndarray:
    """Normalised coordinates of the ``n`` pixel centres along one axis (float64, (n,))."""
    if n <= 1:
        return np.zeros((max(n, 1),), np.float64)
    c = np.linspace(-1.0, 1.0, n)
    return c if align_corners else c * (n - 1) / n


def identity_coordinates(size: tuple[int, ...], align_corners: bool) -> np.ndarray:
    """float64 (*size, d): the normalised ``(x, y[, z])`` of every pixel centre (numpy only)."""
    axes = [base_coordinates(n, align_corners=align_corners) for n in size]
    mesh = np.meshgrid(*axes, indexing="ij")  # each (D?, H, W), ordered (z?, y, x)
    return np.stack(mesh[::-1], axis=-1)
