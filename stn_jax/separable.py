"""Axis-aligned warps (scale + translation) as two matrix products.

An affine matrix without rotation or shear, ``theta = [[sx, 0, tx], [0, sy, ty]]``, samples
output pixel ``(i, j)`` at source ``(x_j, y_i) = (sx * xo_j + tx, sy * yo_i + ty)``: the x
coordinate depends only on the output column and y only on the output row. Every sampling
mode is a product of per-axis weights, so the warp factorises exactly into two small
matrix products per example::

    out[i, j, c] = sum_a sum_b Ky[i, a] * Kx[j, b] * image[a, b, c]

with ``Kx`` (Wo, W) and ``Ky`` (Ho, H) the per-axis tap matrices. They are built from the
same 1-D taps as :func:`stn_jax.grid_sample` (:func:`stn_jax.sampling._axis_taps`), so values
and gradients are those of ``grid_sample(image, affine_grid(theta, size))`` for every mode,
padding mode and ``align_corners`` (checked against it and against PyTorch in
``tests/test_separable.py``), including the one-sided gradient exactly at integer positions
and non-finite parameters (the affected rows/columns read as outside: output 0, gradient 0).

Why: the backward of a gather sampler is a scatter-add (serial on CPU, atomics on GPU, so
nondeterministic there). Here both derivatives are matrix products: deterministic on every
backend and fast for small and medium images. The products cost ``N*C*(Wo*W*H + Ho*H*Wo)``
multiply-adds (dense), which pays off in the derivative but not in a plain forward pass, so
:func:`axis_aligned_warp` is a ``custom_jvp``: an undifferentiated call evaluates the gather
sampler (:func:`stn_jax.warp`), and every derivative (reverse, forward, higher order) is the
derivative of the matrix products. :func:`prefer_separable` holds the measured crossover for
training (``experiments/bench_separable.py``). The dots run at ``HIGHEST`` precision, so GPU/TPU
do not silently use TF32/bfloat16 passes.

:class:`stn_jax.linen.SpatialTransformer` and :class:`stn_jax.nnx.SpatialTransformer` take this
path automatically for the ``translation`` and ``attention`` kinds (through
:func:`stn_jax.localization.apply_transform`); :func:`axis_aligned_warp` is the public function.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from stn_jax import grids, sampling, warping

# Measured crossover (experiments/bench_separable.py, 2-core CPU, forward+backward): the products'
# derivative beats the gather sampler's at every measured size, 28x28 (56 multiply-adds per output
# value) to 224x224x3 (448, where the margin is down to ~10%).
_MAX_DENSE_MACS_PER_OUTPUT = 448


def prefer_separable(in_size: Sequence[int], out_size: Sequence[int]) -> bool:
    """Whether the matrix-product path is the faster one for an axis-aligned warp of these sizes.

    Args:
      in_size: ``(H, W)`` of the input.
      out_size: ``(Ho, Wo)`` of the output.
    """
    h, w = in_size
    ho, wo = out_size
    # Multiply-adds per output value and channel: N*C*(Wo*W*H + Ho*H*Wo) / (N*C*Ho*Wo).
    macs = (wo * w * h + ho * h * wo) / (ho * wo)
    return macs <= _MAX_DENSE_MACS_PER_OUTPUT


def _tap_matrix(coord: jax.Array, size: int, *, mode: str, padding_mode: str,
                align_corners: bool) -> jax.Array:
    """coord (N, K) normalised source coordinates -> (N, K, size) per-axis tap weights.

    A non-finite coordinate gives a zero row (the point reads as outside), with zero gradient.
    """
    finite = jnp.isfinite(coord)
    coord = jnp.where(finite, coord, 0.0)
    positions = jnp.arange(size, dtype=jnp.int32)
    matrix = jnp.zeros(coord.shape + (size,), coord.dtype)
    for index, weight in sampling._axis_taps(coord, size, mode, padding_mode, align_corners):
        inside = (index >= 0) & (index <= size - 1)
        weight = jnp.where(inside & finite, weight, 0.0)
        safe = jnp.clip(index, 0, size - 1).astype(jnp.int32)
        matrix = matrix + jnp.where(safe[..., None] == positions, weight[..., None], 0.0)
    return matrix


def axis_aligned_warp(image: ArrayLike, scale: ArrayLike, translation: ArrayLike,
                      size: Sequence[int] | None = None, *, mode: str = "bilinear",
                      padding_mode: str = "zeros", align_corners: bool = False) -> jax.Array:
    """Warp with ``theta = [[sx, 0, tx], [0, sy, ty]]`` as two matrix products per example.

    Equal to ``stn_jax.warp(image, theta, size, ...)`` for that theta (values and gradients,
    every mode and padding mode). An undifferentiated call is that gather sampler; every
    derivative is computed from the two matrix products, without a scatter-add, so gradients
    are deterministic on every backend.

    Args:
      image: (N, H, W, C) floating-point image (channels last).
      scale: (N, 2) ``(sx, sy)``: source half-extent of the output window along x and y in
        normalised units (``< 1`` zooms in; the paper's attention transform has ``sx = sy``).
      translation: (N, 2) ``(tx, ty)``: source position of the output centre, normalised.
      size: ``(Ho, Wo)`` output size; default ``(H, W)``.
      mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
      padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
      align_corners: as in :func:`stn_jax.grid_sample`.

    Returns:
      (N, Ho, Wo, C) in the dtype of ``image``.

    Raises:
      TypeError: non-floating inputs.
      ValueError: shapes that do not fit, or an unknown option.
    """
    image, scale, translation = (jnp.asarray(a) for a in (image, scale, translation))
    for name, a in (("image", image), ("scale", scale), ("translation", translation)):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"{name} must be a floating-point array; got dtype {a.dtype}")
    if image.ndim != 4:
        raise ValueError(f"image must be (N, H, W, C); got shape {image.shape}")
    n, h, w, _ = image.shape
    for name, a in (("scale", scale), ("translation", translation)):
        if a.shape != (n, 2):
            raise ValueError(f"{name} must have shape (N, 2) = ({n}, 2) (x, y) for image "
                             f"{image.shape}; got {a.shape}")
    sampling.check_options(mode, padding_mode, 2)
    ho, wo = grids._check_size((h, w) if size is None else size, dims=(2,))
    dtype = sampling._compute_dtype(image.dtype, scale.dtype, translation.dtype)
    return _warp(image, scale.astype(dtype), translation.astype(dtype), (ho, wo), mode, padding_mode,
                 bool(align_corners))


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
def _warp(image: jax.Array, scale: jax.Array, translation: jax.Array, size: tuple[int, int],
          mode: str, padding_mode: str, align_corners: bool) -> jax.Array:
    # Undifferentiated: the gather sampler, whose forward is cheaper than the dense products.
    zero = jnp.zeros_like(scale[:, 0])
    theta = jnp.stack([jnp.stack([scale[:, 0], zero, translation[:, 0]], -1),
                       jnp.stack([zero, scale[:, 1], translation[:, 1]], -1)], 1)
    return warping.warp(image, theta, size, mode=mode, padding_mode=padding_mode,
                        align_corners=align_corners)


@_warp.defjvp
def _warp_jvp(size, mode, padding_mode, align_corners, primals, tangents):
    products = functools.partial(_products, size=size, mode=mode, padding_mode=padding_mode,
                                 align_corners=align_corners)
    return jax.jvp(products, primals, tangents)


def _products(image: jax.Array, scale: jax.Array, translation: jax.Array, *, size: tuple[int, int],
              mode: str, padding_mode: str, align_corners: bool) -> jax.Array:
    """The warp as ``Ky @ image @ Kx^T`` per example (see the module docstring)."""
    _, h, w, _ = image.shape
    ho, wo = size
    dtype = scale.dtype
    base_x = jnp.asarray(grids.base_coordinates(wo, align_corners=align_corners), dtype)
    base_y = jnp.asarray(grids.base_coordinates(ho, align_corners=align_corners), dtype)
    # The same arithmetic as affine_grid's x = t00 * xo + t01 * yo + t02 with t01 = 0.
    x = scale[:, 0:1] * base_x + translation[:, 0:1]  # (N, Wo)
    y = scale[:, 1:2] * base_y + translation[:, 1:2]  # (N, Ho)
    opts = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    kx = _tap_matrix(x, w, **opts)  # (N, Wo, W)
    ky = _tap_matrix(y, h, **opts)  # (N, Ho, H)
    highest = jax.lax.Precision.HIGHEST
    rows = jnp.einsum("njb,nabc->najc", kx, image.astype(dtype), precision=highest)
    out = jnp.einsum("nia,najc->nijc", ky, rows, precision=highest)
    return out.astype(image.dtype)
