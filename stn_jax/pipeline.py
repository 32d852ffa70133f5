"""The spatial-transformer forward pass, framework-free, shared by :mod:`stn_jax.linen` and
:mod:`stn_jax.nnx`.

A spatial transformer is *localization net -> regression layer -> raw parameters -> transform
parameters -> grid -> sample*. The two Flax adapters own only the learned layers (parameter
creation, module plumbing); everything after the regression output lives here, once:

- :class:`TransformerConfig` validates the static options of one transformer and holds its
  starting parameters and the regression bias that produces them;
- :func:`transformer_forward` maps raw regression outputs to the warped input;
- :func:`parallel_forward` concatenates parallel heads on channels, and
  :func:`head_initial_params` gives each head its own starting region;
- :func:`series_forward` composes the parameters of stages in series and samples the input
  once with the product;
- :func:`transform_penalty` and :func:`collect_inspections` read back what the forward passes
  recorded.

What gets recorded is decided here too. Each forward function takes a ``sow(collection,
name, value)`` callback, which the adapter maps onto its own mechanism (Linen collections,
NNX variable types):

- into :data:`INTERMEDIATES`, on every call and per transformer (per stage in series):
  :data:`PARAMS_NAME` (N, P) transform parameters and :data:`DEVIATION_NAME` (N, P) =
  parameters - starting parameters;
- into :data:`INSPECT`, only when the caller passes ``inspect=True``: under the name
  ``"transform:<kind>"`` (:func:`inspection_name`) a dict with ``"params"`` (N, P), ``"grid"``
  (N, Ho, Wo, 2, the materialised sampling grid in normalised (x, y) coordinates of the
  input) and ``"warped"`` (N, Ho, Wo, C), the output returned by the call. A series records
  its composed transform once, as kind ``affine`` (P = 6) or ``projective`` (P = 8).

Parameters follow :mod:`stn_jax.transforms` (normalised coordinates, output -> source).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from stn_jax import localization as core
from stn_jax import sampling
from stn_jax.grids import projective_grid
from stn_jax.transforms import Transform
from stn_jax.warping import warp

__all__ = [
    "DEVIATION_NAME",
    "INSPECT",
    "INSPECT_PREFIX",
    "INTERMEDIATES",
    "PARAMS_NAME",
    "Sow",
    "TransformerConfig",
    "check_series",
    "collect_inspections",
    "head_initial_params",
    "inspection_name",
    "parallel_forward",
    "series_forward",
    "transform_penalty",
    "transformer_forward",
]

INTERMEDIATES = "intermediates"
"""Collection of the per-call parameter records (read by :func:`transform_penalty`)."""
INSPECT = "stn_inspect"
"""Collection of the inspection records (grid and warped output), recorded only on request."""
PARAMS_NAME = "transform_params"
"""Name of the (N, P) transform parameters in :data:`INTERMEDIATES`."""
DEVIATION_NAME = "transform_deviation"
"""Name of the (N, P) parameters minus starting parameters in :data:`INTERMEDIATES`."""
INSPECT_PREFIX = "transform:"
"""Prefix of the inspection record names; the transform kind follows it."""

Sow = Callable[[str, str, Any], Any]
"""``sow(collection, name, value)``: records ``value``; ``collection`` is :data:`INTERMEDIATES`
or :data:`INSPECT`. The return value is ignored."""


def inspection_name(kind: str) -> str:
    """The :data:`INSPECT` record name of a transformer of ``kind``: ``"transform:<kind>"``."""
    return INSPECT_PREFIX + kind


@dataclasses.dataclass(frozen=True, eq=False)
class TransformerConfig:
    """The validated static options of one spatial transformer.

    Build it with :meth:`create`, which raises ``ValueError``/``TypeError`` naming the bad
    option.

    Attributes:
      transform: the kind.
      output_size: ``(Ho, Wo)``, or ``None`` for the input's spatial size.
      mode, padding_mode, align_corners: options of :func:`stn_jax.grid_sample`.
      bound: ``None`` or ``"tanh"`` (:func:`stn_jax.localization.constrain`).
      initial: (P,) float32 starting parameters (the transform a fresh module applies).
      raw_bias: (P,) float32 regression bias that yields ``initial`` (the regression kernel
        starts at zero, so a fresh module maps every input to ``initial``).
    """

    transform: Transform
    output_size: tuple[int, int] | None
    mode: str
    padding_mode: str
    align_corners: bool
    bound: str | None
    initial: np.ndarray
    raw_bias: np.ndarray

    @classmethod
    def create(cls, transform: str | Transform, *, num_control_points: int = 16,
               output_size: Sequence[int] | None = None, mode: str = "bilinear",
               padding_mode: str = "zeros", align_corners: bool = False,
               bound: str | None = None, initial_params: ArrayLike | None = None
               ) -> TransformerConfig:
        """Validate the options of a transformer.

        Args:
          transform: kind name or :class:`stn_jax.Transform`.
          num_control_points: K for a ``tps`` kind name.
          output_size: ``(Ho, Wo)`` positive ints, or ``None``.
          mode, padding_mode, align_corners: sampling options (2-D).
          bound: ``None`` or ``"tanh"``.
          initial_params: (P,) starting parameters; ``None`` for the identity.
        """
        kind = core.resolve_transform(transform, num_control_points=num_control_points)
        core.check_bound(bound)
        size = core.check_output_size(output_size)
        sampling.check_options(mode, padding_mode, 2)
        initial = core.initial_params(kind, initial_params)
        raw_bias = core.unconstrain(initial, kind, bound)
        return cls(kind, size, mode, padding_mode, bool(align_corners), bound, initial, raw_bias)

    @property
    def sampling_options(self) -> dict[str, Any]:
        """``output_size``, ``mode``, ``padding_mode``, ``align_corners`` as keyword arguments of
        :func:`stn_jax.localization.apply_transform`."""
        return dict(output_size=self.output_size, mode=self.mode,
                    padding_mode=self.padding_mode, align_corners=self.align_corners)


def _record_params(config: TransformerConfig, params: jax.Array, sow: Sow) -> None:
    sow(INTERMEDIATES, PARAMS_NAME, params)
    sow(INTERMEDIATES, DEVIATION_NAME, params - jnp.asarray(config.initial))


def transformer_forward(config: TransformerConfig, x: jax.Array, raw: jax.Array, *, sow: Sow,
                        inspect: bool = False) -> tuple[jax.Array, jax.Array]:
    """One transformer after its regression layer: raw outputs -> parameters -> warped input.

    Args:
      config: the transformer's options.
      x: (N, H, W, C) input, any floating dtype and channel count.
      raw: (N, P) regression outputs.
      sow: records :data:`PARAMS_NAME` and :data:`DEVIATION_NAME`, and with ``inspect`` the
        inspection record (see the module docstring).
      inspect: also record the grid and the warped output. The warp then samples a
        materialised grid instead of a fused path (same values up to rounding).

    Returns:
      ``(warped, params)``: (N, Ho, Wo, C) in ``x``'s dtype and (N, P) float32 (or wider).
    """
    transform = config.transform
    params = core.constrain(raw, transform, config.bound)
    _record_params(config, params, sow)
    if not inspect:
        return core.apply_transform(x, params, transform, **config.sampling_options), params
    out, grid = core.apply_transform(x, params, transform, return_grid=True,
                                     **config.sampling_options)
    sow(INSPECT, inspection_name(transform.kind), {"params": params, "grid": grid, "warped": out})
    return out, params


def head_initial_params(transform: Transform, num_heads: int, *,
                        initial_params: ArrayLike | None = None,
                        scale: float = 0.5) -> np.ndarray:
    """Starting parameters of ``num_heads`` parallel transformers.

    Args:
      transform: the kind shared by the heads.
      num_heads: number of heads.
      initial_params: (num_heads, P) chosen starting parameters, or ``None`` for distinct
        regions (:func:`stn_jax.localization.spread_initial_params`, a zoom by ``scale``).
      scale: zoom of the spread regions.

    Returns:
      (num_heads, P) float32.
    """
    if initial_params is None:
        return core.spread_initial_params(transform, num_heads, scale=scale)
    init = np.asarray(initial_params, np.float32)
    if init.shape != (num_heads, transform.num_params):
        raise ValueError(f"initial_params must have shape ({num_heads}, "
                         f"{transform.num_params}); got {init.shape}")
    return init


def parallel_forward(x: jax.Array,
                     heads: Sequence[Callable[[jax.Array], tuple[jax.Array, jax.Array]]]
                     ) -> tuple[jax.Array, list[jax.Array]]:
    """Apply parallel heads to the same input and concatenate their outputs on channels.

    Args:
      x: (N, H, W, C) input.
      heads: callables ``x -> (warped (N, Ho, Wo, C), params (N, P))``, in order.

    Returns:
      ``(out, params)``: (N, Ho, Wo, len(heads) * C) with head i in channels
      ``[i*C, (i+1)*C)``, and the list of per-head (N, P) parameters.
    """
    outs, params = [], []
    for head in heads:
        out, p = head(x)
        outs.append(out)
        params.append(p)
    return jnp.concatenate(outs, axis=-1), params


def check_series(transform: Transform, num_stages: int) -> None:
    """Raise ``ValueError`` unless ``num_stages >= 1`` and ``transform`` has a matrix (affine
    kinds or ``projective``), which composition in series needs."""
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1; got {num_stages}")
    core.compose_params_matrix(transform, jnp.asarray(transform.identity)[None])


def _warp_matrix(x: jax.Array, total: jax.Array, transform: Transform,
                 size: tuple[int, int] | None, *, mode: str, padding_mode: str,
                 align_corners: bool) -> jax.Array:
    """Sample ``x`` once with (N, 3, 3) homogeneous matrices (fused affine path when the
    kind is affine)."""
    opts = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    if transform.kind == "projective":
        return core.warp_homogeneous(x, total, output_size=size, **opts)
    return warp(x, total[:, :2, :], size=size, **opts)


def series_forward(config: TransformerConfig, x: jax.Array,
                   stages: Sequence[Callable[[jax.Array], jax.Array]], *, sow: Sow,
                   inspect: bool = False) -> tuple[jax.Array, jax.Array]:
    """Transformers in series whose transforms are composed, sampling the input once.

    Stage i sees the input warped (at its own size) by the composition of stages 0..i-1 and
    returns raw regression outputs; the final output samples the original input with the
    composition of all stages, so no content is lost at the borders between stages.

    Args:
      config: options shared by the stages (``initial``: every stage starts at it); check
        the kind with :func:`check_series` first.
      x: (N, H, W, C) input.
      stages: callables ``(N, H, W, C) -> (N, P)`` raw outputs, in order.
      sow: records each stage's :data:`PARAMS_NAME` and :data:`DEVIATION_NAME`, and with
        ``inspect`` one record of the composed transform.
      inspect: also record the composed transform's parameters, grid and warped output.

    Returns:
      ``(warped, total)``: (N, Ho, Wo, C) and the composed (N, 3, 3) float32 homogeneous
      matrix (output -> source).
    """
    transform = config.transform
    opts = dict(mode=config.mode, padding_mode=config.padding_mode,
                align_corners=config.align_corners)
    total = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (x.shape[0], 3, 3))
    current = x
    for i, stage in enumerate(stages):
        params = core.constrain(stage(current), transform, config.bound)
        _record_params(config, params, sow)
        total = total @ core.compose_params_matrix(transform, params)
        if i + 1 < len(stages):
            current = _warp_matrix(x, total, transform, None, **opts)
    out = _warp_matrix(x, total, transform, config.output_size, **opts)
    if inspect:
        n = total.shape[0]
        grid = projective_grid(total, out.shape[1:3], align_corners=config.align_corners)
        if transform.kind == "projective":
            kind, flat = "projective", total.reshape(n, 9)[:, :8]
        else:
            kind, flat = "affine", total[:, :2, :].reshape(n, 6)
        sow(INSPECT, inspection_name(kind), {"params": flat, "grid": grid, "warped": out})
    return out, total


def _key_name(key: Any) -> Any:
    return getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))


def transform_penalty(intermediates: Any) -> jax.Array:
    """Sum over transformers of mean((params - initial)^2), from recorded intermediates.

    Args:
      intermediates: any pytree holding the :data:`DEVIATION_NAME` records, e.g. Linen's
        ``"intermediates"`` collection from ``apply(..., mutable=["intermediates"])`` (the
        whole dict or that collection) or the state of ``nnx.capture(model, nnx.Intermediate)``.

    Returns:
      float32 scalar (0 when the tree holds no transformer).
    """
    total = jnp.zeros((), jnp.float32)
    for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        if DEVIATION_NAME in [_key_name(k) for k in path]:
            total = total + jnp.mean(jnp.square(jnp.asarray(leaf, jnp.float32)))
    return total


def collect_inspections(tree: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The inspection records in a nested mapping, in its iteration order.

    Args:
      tree: nested mappings (e.g. Linen's ``"stn_inspect"`` collection) whose
        ``"transform:<kind>"`` entries are sequences of record dicts.

    Returns:
      One dict per record with ``"kind"`` (str), ``"params"`` (N, P), ``"grid"``
      (N, Ho, Wo, 2) and ``"warped"`` (N, Ho, Wo, C).
    """
    found: list[dict[str, Any]] = []

    def walk(node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            if isinstance(key, str) and key.startswith(INSPECT_PREFIX):
                found.extend({"kind": key[len(INSPECT_PREFIX):], **entry} for entry in value)
            elif isinstance(value, Mapping):
                walk(value)

    walk(tree)
    return found
