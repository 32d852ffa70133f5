"""Axis-aligned warps (scale + translation) as two matrix products.

An affine matrix without rotation or shear, ``theta = [[sx, 0, tx], [0, sy, ty]]``, samples
output pixel ``(i, j)`` at source ``(x_j, y_i) = (sx * xo_j + tx, sy * yo_i + ty)``: the x
coordinate depends only on the output column and y only on the output row. Every sampling
mode is a product of per-axis weights, so the warp factorises exactly into two small
matrix products per example::

    out[i, j, c] = sum_a sum_b Ky[i, a] * Kx[j, b] * image[a, b, c]

with ``Kx`` (Wo, W) and ``Ky`` (Ho, H) the per-axis tap matrices. They are built from the
same 1-D taps as :func:`stn_jax.grid_sample`, so values and gradients are those of
``grid_sample(image, affine_grid(theta, size))`` for every mode,
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
training. The dots run at ``HIGHEST`` precision, so GPU/TPU do not silently use TF32/bfloat16
passes.

:class:`stn_jax.linen.SpatialTransformer` and :class:`stn_jax.nnx.SpatialTransformer` take this
path automatically for the ``translation`` and ``attention`` kinds (through
:func:`stn_jax.localization.apply_transform`); :func:`axis_aligned_warp` is the public function.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from stn_jax import sampling
from stn_jax._src import coordinates, dispatch, separable

__all__ = ["axis_aligned_warp", "prefer_separable"]


def prefer_separable(in_size: Sequence[int], size: Sequence[int]) -> bool:
    """Whether the matrix-product path is the faster one for an axis-aligned warp of these sizes.

    The measured crossover (``experiments/benchmarks/bench_separable.py``, forward+backward): at
    most 448 multiply-adds per output value, i.e. up to about 224x224 at equal sizes. The
    spatial-transformer modules take the matrix-product path where this holds and the sampler
    implementation is ``"auto"`` (:func:`stn_jax.sampler_implementation`).

    Args:
      in_size: ``(H, W)`` of the input.
      size: ``(Ho, Wo)`` of the output.
    """
    return dispatch.prefer_separable(in_size, size)


def axis_aligned_warp(image: ArrayLike, scale: ArrayLike, translation: ArrayLike, *,
                      size: Sequence[int] | None = None, mode: str = "bilinear",
                      padding_mode: str = "zeros", align_corners: bool = False) -> jax.Array:
    """Warp with ``theta = [[sx, 0, tx], [0, sy, ty]]`` as two matrix products per example.

    Equal to ``stn_jax.warp(image, theta, size=size, ...)`` for that theta (values and gradients,
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
    ho, wo = coordinates.check_size((h, w) if size is None else size, dims=(2,))
    dtype = coordinates.compute_dtype(image.dtype, scale.dtype, translation.dtype)
    return separable.warp(image, scale.astype(dtype), translation.astype(dtype), (ho, wo), mode,
                          padding_mode, bool(align_corners))
