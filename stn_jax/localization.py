"""Framework-free pieces shared by the Linen and NNX spatial transformers.

A spatial transformer has three parts: a *localization network* (any map from the input to a
feature vector), a *regression layer* (dense, feature vector -> raw parameters) and a *sampler*
(parameters -> grid -> :func:`stn_jax.grid_sample`). This module holds everything except the
learned layers, as pure functions of arrays and static options, so both Flax APIs behave
identically:

- :func:`constrain` maps the regression output ("raw" parameters) to transform parameters,
  optionally through a bounded parameterisation (``bound="tanh"``), and :func:`unconstrain` is
  its inverse, used to initialise the regression bias so a fresh module is exactly the
  identity (or the chosen initial transform);
- :func:`spread_initial_params` places N parallel heads at distinct regions;
- :func:`apply_transform` samples the input with the parameters (affine kinds use the fused
  :func:`stn_jax.warp` path);
- :func:`identity_penalty` is the regulariser toward the initial parameters.

:mod:`stn_jax.pipeline` chains these into the forward pass (and decides what it records) for
both Flax APIs.

Parameters always use the conventions of :mod:`stn_jax.transforms` (normalised coordinates,
output -> source).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from stn_jax import sampling, separable
from stn_jax._src import dispatch
from stn_jax.transforms import Transform, get_transform
from stn_jax.warping import warp

__all__ = [
    "AXIS_ALIGNED_KINDS",
    "BOUNDS",
    "apply_transform",
    "check_bound",
    "check_output_size",
    "compose_params_matrix",
    "constrain",
    "identity_penalty",
    "initial_params",
    "resolve_transform",
    "spread_initial_params",
    "unconstrain",
    "warp_homogeneous",
]

BOUNDS = (None, "tanh")
"""Accepted values of the ``bound`` option."""

# Per kind, the indices of translation-like entries (bounded to (-1, 1) by tanh) and of
# scale-like entries (bounded to (0, 2) by 2 * sigmoid) under ``bound="tanh"``.
_TRANSLATION_IDX = {"translation": (0, 1), "attention": (1, 2), "similarity": (2, 3),
                    "affine": (2, 5), "projective": (2, 5)}
_SCALE_IDX = {"attention": (0,)}
_EPS = 1e-6


def resolve_transform(transform: str | Transform, *, num_control_points: int = 16) -> Transform:
    """A :class:`~stn_jax.Transform` from a kind name (or pass one through)."""
    if isinstance(transform, Transform):
        return transform
    if not isinstance(transform, str):
        raise TypeError(f"transform must be a kind name or a stn_jax.Transform; got {transform!r}")
    return get_transform(transform, num_control_points=num_control_points)


def check_bound(bound: str | None) -> None:
    """Raise ``ValueError`` unless ``bound`` is one of :data:`BOUNDS`."""
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}; got {bound!r}")


def check_output_size(output_size: Sequence[int] | None) -> tuple[int, int] | None:
    """Validate an output size: ``None`` (input size) or ``(Ho, Wo)`` positive ints."""
    if output_size is None:
        return None
    try:
        size = tuple(int(s) for s in output_size)
    except TypeError:
        raise ValueError(f"output_size must be (Ho, Wo) or None; got {output_size!r}") from None
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"output_size must be a 2-tuple (Ho, Wo) of positive ints (spatial "
                         f"size only); got {output_size!r}")
    return size


def _masks(transform: Transform) -> tuple[np.ndarray, np.ndarray]:
    p = transform.num_params
    trans, scale = np.zeros(p, bool), np.zeros(p, bool)
    if transform.kind == "tps":
        trans[:] = True
    else:
        trans[list(_TRANSLATION_IDX[transform.kind])] = True
        scale[list(_SCALE_IDX.get(transform.kind, ()))] = True
    return trans, scale


def constrain(raw: ArrayLike, transform: Transform, bound: str | None = None) -> jax.Array:
    """Regression output -> transform parameters.

    With ``bound=None`` this is the identity map. With ``bound="tanh"`` translation entries
    (and all TPS displacements) become ``tanh(raw)`` in (-1, 1) and the attention scale
    becomes ``2 * sigmoid(raw)`` in (0, 2); other entries (rotation/shear/perspective terms)
    pass through. The result is computed in float32 (or wider) whatever the input dtype.

    Args:
      raw: (..., P) regression outputs.
      transform: the transform kind.
      bound: ``None`` or ``"tanh"``.

    Returns:
      (..., P) parameters, float32 or float64.
    """
    check_bound(bound)
    raw = jnp.asarray(raw)
    raw = raw.astype(jnp.promote_types(raw.dtype, jnp.float32))
    if bound is None:
        return raw
    trans, scale = _masks(transform)
    out = jnp.where(trans, jnp.tanh(raw), raw)
    return jnp.where(scale, 2.0 * jax.nn.sigmoid(raw), out)


def unconstrain(params: ArrayLike, transform: Transform, bound: str | None = None) -> np.ndarray:
    """Inverse of :func:`constrain` (numpy, float32): the raw value that yields ``params``.

    Raises:
      ValueError: ``params`` outside the bounded range (absolute translation >= 1, scale not in (0, 2)).
    """
    check_bound(bound)
    params = np.asarray(params, np.float64)
    if params.shape[-1] != transform.num_params:
        raise ValueError(f"initial parameters for a {transform.kind} transform must have "
                         f"{transform.num_params} entries; got shape {params.shape}")
    if bound is None:
        return params.astype(np.float32)
    trans, scale = _masks(transform)
    if np.any(np.abs(params[..., trans]) >= 1) or np.any(
            (params[..., scale] <= 0) | (params[..., scale] >= 2)):
        raise ValueError("with bound='tanh' initial translations must lie in (-1, 1) and an "
                         f"attention scale in (0, 2); got {params}")
    out = np.where(trans, np.arctanh(np.clip(params, -1 + _EPS, 1 - _EPS)), params)
    half = np.clip(params / 2, _EPS, 1 - _EPS)
    out = np.where(scale, np.log(half) - np.log1p(-half), out)
    return out.astype(np.float32)


def initial_params(transform: Transform, initial: ArrayLike | None = None) -> np.ndarray:
    """The (P,) float32 starting parameters: ``initial`` or the transform's identity."""
    if initial is None:
        return transform.identity.astype(np.float32)
    initial = np.asarray(initial, np.float32)
    if initial.shape != (transform.num_params,):
        raise ValueError(f"initial parameters for a {transform.kind} transform must have shape "
                         f"({transform.num_params},); got {initial.shape}")
    return initial


def _affine_to_params(transform: Transform, scale: float, tx: float, ty: float) -> np.ndarray:
    """Parameters of the zoom ``[[s, 0, tx], [0, s, ty]]`` in ``transform``'s parameterisation."""
    kind = transform.kind
    if kind == "translation":
        return np.array([tx, ty], np.float32)
    if kind == "attention":
        return np.array([scale, tx, ty], np.float32)
    if kind == "similarity":
        return np.array([scale, 0.0, tx, ty], np.float32)
    if kind == "affine":
        return np.array([scale, 0.0, tx, 0.0, scale, ty], np.float32)
    if kind == "projective":
        return np.array([scale, 0.0, tx, 0.0, scale, ty, 0.0, 0.0], np.float32)
    # tps: displacement of control point c is (A c + t) - c (a TPS reproduces affine maps)
    from stn_jax.grids import tps_control_points
    ctrl = np.asarray(tps_control_points(transform.control_grid), np.float64)  # (K, 2) (x, y)
    disp = ctrl * (scale - 1.0) + np.array([tx, ty])
    return disp.reshape(-1).astype(np.float32)


def spread_initial_params(transform: Transform, num_heads: int, *, scale: float = 0.5) -> np.ndarray:
    """Distinct starting regions for ``num_heads`` parallel transformers.

    Head ``i`` starts as a zoom by ``scale`` centred on cell ``i`` of a near-square lattice of
    cells covering the image (row-major), so parallel heads see different regions from the
    first step and do not collapse onto one crop. A single head starts at the identity. For
    the ``translation`` kind (no scale) only the centres differ.

    Returns:
      (num_heads, P) float32.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1; got {num_heads}")
    if num_heads == 1:
        return transform.identity[None].astype(np.float32)
    cols = math.ceil(math.sqrt(num_heads))
    rows = math.ceil(num_heads / cols)
    out = []
    for i in range(num_heads):
        r, c = divmod(i, cols)
        tx = (2 * c + 1) / cols - 1 if cols > 1 else 0.0
        ty = (2 * r + 1) / rows - 1 if rows > 1 else 0.0
        # keep the window inside the image: centre within [-(1 - s), 1 - s]
        lim = max(1.0 - scale, 0.0)
        tx, ty = float(np.clip(tx, -lim, lim)), float(np.clip(ty, -lim, lim))
        out.append(_affine_to_params(transform, scale, tx, ty))
    return np.stack(out)


def apply_transform(x: jax.Array, params: jax.Array, transform: Transform, *,
                    output_size: tuple[int, int] | None = None, mode: str = "bilinear",
                    padding_mode: str = "zeros", align_corners: bool = False,
                    return_grid: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Warp ``x`` with transform parameters: params -> grid -> sample.

    Axis-aligned kinds (translation, attention) up to about 224x224 take the matrix-product
    path (:func:`stn_jax.separable.axis_aligned_warp`: a deterministic gradient without a
    scatter-add); other affine kinds go through :func:`stn_jax.warp` (grid fused into
    the sampler); projective and TPS build their grid with :meth:`Transform.grid`. Every path
    gives the values and gradients of ``grid_sample(x, transform.grid(params, size))``.

    Args:
      x: (N, H, W, C) image or feature map, any floating dtype and channel count.
      params: (N, P) transform parameters (float32 recommended; the grid is computed in at
        least float32).
      transform: the kind.
      output_size: ``(Ho, Wo)``; ``None`` keeps ``(H, W)``.
      mode, padding_mode, align_corners: passed to :func:`stn_jax.grid_sample`.
      return_grid: also return the (N, Ho, Wo, 2) grid (materialised).

    Returns:
      (N, Ho, Wo, C) warped output in ``x``'s dtype (and the grid if requested).
    """
    if x.ndim != 4:
        raise ValueError(f"a 2-D spatial transformer expects input (N, H, W, C); got {x.shape}")
    sampling.check_options(mode, padding_mode, 2)
    size = tuple(x.shape[1:3]) if output_size is None else tuple(output_size)
    params = params.astype(jnp.promote_types(params.dtype, jnp.float32))
    if (transform.kind in AXIS_ALIGNED_KINDS and not return_grid
            and dispatch.use_separable(x.shape[1:3], size)):
        scale, translation = _axis_aligned(params, transform.kind)
        return separable.axis_aligned_warp(x, scale, translation, size=size, mode=mode,
                                           padding_mode=padding_mode, align_corners=align_corners)
    if transform.is_affine and not return_grid:
        return warp(x, transform.matrix(params), size=size, mode=mode, padding_mode=padding_mode,
                    align_corners=align_corners)
    grid = transform.grid(params, size, align_corners=align_corners)
    out = sampling.grid_sample(x, grid, mode=mode, padding_mode=padding_mode,
                               align_corners=align_corners)
    return (out, grid) if return_grid else out


AXIS_ALIGNED_KINDS = ("translation", "attention")
"""Kinds whose matrix has no rotation or shear, so the warp factorises per axis."""


def _axis_aligned(params: jax.Array, kind: str) -> tuple[jax.Array, jax.Array]:
    """(N, P) params of an axis-aligned kind -> scale (N, 2) and translation (N, 2), both (x, y)."""
    if kind == "translation":
        return jnp.ones_like(params), params
    return jnp.concatenate([params[:, :1], params[:, :1]], axis=1), params[:, 1:3]


def compose_params_matrix(transform: Transform, params: jax.Array) -> jax.Array:
    """(N, P) parameters of an affine or projective kind -> (N, 3, 3) homogeneous matrices."""
    if transform.kind == "projective":
        return transform.matrix(params)
    if not transform.is_affine:
        raise ValueError(f"transformers in series compose matrices; a {transform.kind} transform "
                         "has none (use an affine kind or projective)")
    m = transform.matrix(params)
    last = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0], m.dtype), m.shape[:-2] + (1, 3))
    return jnp.concatenate([m, last], axis=-2)


def warp_homogeneous(x: jax.Array, matrix: jax.Array, *, output_size: tuple[int, int] | None,
                     mode: str, padding_mode: str, align_corners: bool,
                     return_grid: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Sample ``x`` once with (N, 3, 3) homogeneous matrices (affine when the last row is
    ``(0, 0, 1)``, which is checked statically only through ``affine``)."""
    from stn_jax import grids
    size = tuple(x.shape[1:3]) if output_size is None else tuple(output_size)
    grid = grids.projective_grid(matrix, size, align_corners=align_corners)
    out = sampling.grid_sample(x, grid, mode=mode, padding_mode=padding_mode,
                               align_corners=align_corners)
    return (out, grid) if return_grid else out


def identity_penalty(params: ArrayLike, initial: ArrayLike) -> jax.Array:
    """Mean squared deviation of (N, P) parameters from their (P,) initial value (scalar f32)."""
    params = jnp.asarray(params, jnp.float32)
    return jnp.mean(jnp.square(params - jnp.asarray(initial, jnp.float32)))
