"""Convolution implementations for the zoo's CNN classifiers.

XLA:CPU runs ``lax.conv_general_dilated`` far below the speed of a matrix product of the same
size, and its filter and input gradients are slower still. On the paper's second conv (7x7,
16 -> c2 filters) an *im2col* formulation -- gather the k*k*c_in input patches with static
slices, then one matrix product with the (k*k*c_in, c_out) kernel -- computes the same sums with
forward and backward passes 2.4x (RTS, 17x17 input, batch 128) and 3.0x (TC, 26x26) faster on a
2-core x86_64 CPU; on the first conv (one input channel) the two are about even
(``experiments/benchmarks/bench_conv.py``). The gathered patches take k*k times the input's
memory, so a convolution whose patch matrix would exceed :data:`IM2COL_MAX_PATCH_BYTES` (large
images or batches, e.g. bulk canonicalisation at 224x224) falls back to XLA's.

Implementations (:data:`CONV_IMPLS`, the ``conv=`` option of :func:`stn_jax.models.create_model`):

==========  =====================================================================================
``xla``     ``lax.conv_general_dilated`` everywhere
``im2col``  :func:`im2col_conv_general_dilated`
``auto``    (default) ``im2col`` when JAX's default backend is the CPU, else ``xla`` (cuDNN and
            the TPU convolution emitters are faster than any gather + matmul)
==========  =====================================================================================

Both compute the same convolution; they differ only in the order of floating-point sums
(about 1e-6 relative in float32), so a run's numbers do not depend on the choice beyond that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "xla", "im2col")
"""Values of the ``conv=`` option (see the module docstring)."""

IM2COL_MAX_PATCH_BYTES = 1 << 30
"""Largest patch matrix (bytes) :func:`im2col_conv_general_dilated` builds; above it, XLA's
convolution runs instead."""

_NHWC = ("NHWC", "HWIO", "NHWC")


def check_conv_impl(conv: str) -> str:
    """``conv`` if it is one of :data:`CONV_IMPLS`, else ValueError."""
    if conv not in CONV_IMPLS:
        raise ValueError(f"unknown conv implementation {conv!r}; expected one of {CONV_IMPLS}")
    return conv


def _is_nhwc(lhs_ndim: int, dimension_numbers: Any) -> bool:
    if lhs_ndim != 4:
        return False
    if dimension_numbers is None:  # lax's default is NCHW/OIHW
        return False
    expected = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    return lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), dimension_numbers) == expected


def im2col_conv_general_dilated(
    lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
    feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """A drop-in for ``lax.conv_general_dilated`` that computes 2-D NHWC/HWIO convolutions with
    unit strides, no dilation and one feature group as patches @ kernel.

    Args:
      lhs: (N, H, W, C_in) input.
      rhs: (kh, kw, C_in, C_out) kernel.
      window_strides, padding, ...: as ``lax.conv_general_dilated``; ``padding`` is 'VALID',
        'SAME' or explicit ((top, bottom), (left, right)) pairs.

    Returns:
      (N, Ho, Wo, C_out), Ho = H + top + bottom - kh + 1 (likewise Wo). Any other layout,
      stride, dilation or grouping, and any convolution whose patch matrix would exceed
      :data:`IM2COL_MAX_PATCH_BYTES`, is passed on to ``lax.conv_general_dilated`` unchanged.
    """
    simple = (_is_nhwc(lhs.ndim, dimension_numbers) and tuple(window_strides) == (1, 1)
              and all(d == 1 for d in (lhs_dilation or (1, 1)))
              and all(d == 1 for d in (rhs_dilation or (1, 1)))
              and feature_group_count == 1 and batch_group_count == 1)
    if simple:
        kh, kw, c_in, _ = rhs.shape
        n, h, w, _ = lhs.shape
        pads = (lax.padtype_to_pads((h, w), (kh, kw), (1, 1), padding)
                if isinstance(padding, str) else [tuple(p) for p in padding])
        oh, ow = h + sum(pads[0]) - kh + 1, w + sum(pads[1]) - kw + 1
        patch_bytes = n * oh * ow * kh * kw * c_in * jnp.dtype(lhs.dtype).itemsize
        simple = patch_bytes <= IM2COL_MAX_PATCH_BYTES
    if not simple:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, batch_group_count=batch_group_count,
            precision=precision, preferred_element_type=preferred_element_type)
    c_out = rhs.shape[-1]
    if any(p != (0, 0) for p in pads):
        lhs = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
    patches = jnp.concatenate([lhs[:, i:i + oh, j:j + ow, :] for i in range(kh)
                               for j in range(kw)], axis=-1)
    out = lax.dot_general(patches.reshape(n * oh * ow, kh * kw * c_in),
                          rhs.reshape(kh * kw * c_in, c_out), (((1,), (0,)), ((), ())),
                          precision=precision, preferred_element_type=preferred_element_type)
    return out.reshape(n, oh, ow, c_out)


def conv_function(conv: str) -> Callable[..., jax.Array] | None:
    """The ``conv_general_dilated`` a ``flax.linen.Conv`` should use under implementation
    `conv` (None: Flax's default, ``lax.conv_general_dilated``). ``auto`` is resolved against
    JAX's default backend when the model is traced."""
    check_conv_impl(conv)
    if conv == "im2col" or (conv == "auto" and jax.default_backend() == "cpu"):
        return im2col_conv_general_dilated
    return None
