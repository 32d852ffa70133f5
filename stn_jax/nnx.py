"""Flax NNX spatial transformers: the same behaviour and defaults as :mod:`stn_jax.linen`.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from stn_jax import nnx as stn
>>> st = stn.SpatialTransformer((28, 28, 1), transform="affine", rngs=nnx.Rngs(0))
>>> y = st(jnp.ones((2, 28, 28, 1)))                           # fresh module: y == x

NNX modules are built eagerly, so they need the input shape ``(H, W, C)`` up front (the Linen
modules infer it). They only create the learned layers; the forward pass after the regression
layer is :mod:`stn_jax.pipeline`, shared with :mod:`stn_jax.linen`, so given the same
parameters both APIs give bit-identical outputs.

Parameter access: ``__call__(x, return_params=True)`` returns ``(warped, params)``. Every call
also sows, as ``nnx.Intermediate`` values, ``transform_params`` (N, P) and
``transform_deviation`` (N, P) = params - initial params, collected with
``out, inter = nnx.capture(model, nnx.Intermediate)(x)`` (on older flax without
``nnx.capture``, ``nnx.pop(model, nnx.Intermediate)``); :func:`transform_penalty` turns them
into the penalty.

Inspection (the NNX form of Linen's ``"stn_inspect"`` collection): inside
``nnx.capture(model, Inspection)`` each transformer sows an :class:`Inspection` value named
``"transform:<kind>"``: a dict with ``"params"`` (N, P), ``"grid"`` (N, Ho, Wo, 2) and
``"warped"`` (N, Ho, Wo, C). Outside such a capture nothing is computed for it.
:func:`inspect_transformers` runs a model that way and lists the records.

Attribute names match the Linen parameter tree (``localization`` with ``layers[i]`` for the
dense/conv layers, ``regression``; ``heads[i]`` and ``stages[i]`` for ``head_<i>`` and
``stage_<i>``), and :func:`load_linen_params` copies Linen parameters into an NNX module, so
both APIs can be checked to give identical outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stn_jax import localization as core
from stn_jax import pipeline
from stn_jax.pipeline import TransformerConfig, transform_penalty
from stn_jax.pooling import max_pool_2x2
from stn_jax.transforms import Transform

__all__ = [
    "Inspection",
    "LocalizationCNN",
    "LocalizationMLP",
    "ParallelSpatialTransformers",
    "SeriesSpatialTransformers",
    "SpatialTransformer",
    "inspect_transformers",
    "load_linen_params",
    "transform_penalty",
]

Dtype = Any
LocalizationFactory = Callable[[tuple[int, int, int], nnx.Rngs], nnx.Module]
"""``f(in_shape, rngs) -> nnx.Module``: builds one localization net for input (H, W, C)."""


class Inspection(nnx.Intermediate):
    """Variable type of the inspection records (grid and warped output) of the transformers.

    Sown only inside ``nnx.capture(model, Inspection)``; a plain
    ``nnx.capture(model, nnx.Intermediate)`` does not collect (or compute) them.
    """


def _check_shape(in_shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in in_shape)
    except TypeError:
        raise ValueError(f"in_shape must be (H, W, C); got {in_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"in_shape must be the per-example shape (H, W, C) of positive ints; "
                         f"got {in_shape!r}")
    return shape


class LocalizationMLP(nnx.Module):
    """The paper's ST-FCN localization net: flatten, dense layers with ReLU.

    Args:
      in_features: flattened input size ``H * W * C``.
      features: widths (paper: three layers of 32).

    Input (N, H, W, C); output (N, features[-1]). ``out_features`` holds the output width.
    """

    def __init__(self, in_features: int, *, features: Sequence[int] = (32, 32, 32),
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        widths = [int(in_features)] + [int(f) for f in features]
        self.layers = nnx.List([nnx.Linear(a, b, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                                for a, b in zip(widths[:-1], widths[1:], strict=True)])
        self.out_features = widths[-1]

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for layer in self.layers:
            x = nnx.relu(layer(x))
        return x


class LocalizationCNN(nnx.Module):
    """The paper's ST-CNN localization net: [conv k x k -> max-pool 2 -> ReLU] per entry of
    ``features``, flatten, dense ``hidden`` with ReLU.

    Args:
      in_shape: per-example input shape ``(H, W, C)``.
      features: conv filters (paper: (20, 20)); kernel_size: 5; hidden: 20 (0 for none).

    Input (N, H, W, C); output (N, out_features).
    """

    def __init__(self, in_shape: Sequence[int], *, features: Sequence[int] = (20, 20),
                 kernel_size: int = 5, hidden: int = 20, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        h, w, c = _check_shape(in_shape)
        convs = []
        for f in features:
            convs.append(nnx.Conv(c, int(f), (kernel_size, kernel_size), dtype=dtype,
                                  param_dtype=param_dtype, rngs=rngs))
            c, h, w = int(f), math.ceil(h / 2), math.ceil(w / 2)
        self.convs = nnx.List(convs)
        flat = h * w * c
        self.dense = (nnx.Linear(flat, hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                      if hidden else None)
        self.out_features = hidden or flat

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.convs:
            x = nnx.relu(max_pool_2x2(conv(x)))
        x = x.reshape((x.shape[0], -1))
        return nnx.relu(self.dense(x)) if self.dense is not None else x


def _feature_count(localization: nnx.Module, in_shape: tuple[int, int, int]) -> int:
    out = getattr(localization, "out_features", None)
    if isinstance(out, int):
        return out
    graphdef, state = nnx.split(localization)
    shape = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                           jax.ShapeDtypeStruct((1,) + in_shape, jnp.float32)).shape
    if len(shape) != 2:
        raise ValueError(f"the localization net must return (N, F) features; got shape {shape}")
    return int(shape[-1])


def _localization_and_regression(
        module: nnx.Module, in_shape: tuple[int, int, int], config: TransformerConfig,
        localization: nnx.Module | None, *, dtype: Dtype | None, param_dtype: Dtype,
        rngs: nnx.Rngs) -> None:
    """Set ``module.localization`` (default :class:`LocalizationMLP`) and
    ``module.regression`` (features (N, F) -> raw (N, P): zero kernel, the bias that yields
    the starting parameters)."""
    if localization is None:
        localization = LocalizationMLP(int(np.prod(in_shape)), dtype=dtype,
                                       param_dtype=param_dtype, rngs=rngs)
    module.localization = localization
    bias = np.asarray(config.raw_bias)
    module.regression = nnx.Linear(
        _feature_count(localization, in_shape), config.transform.num_params, dtype=dtype,
        param_dtype=param_dtype, kernel_init=nnx.initializers.zeros,
        bias_init=lambda *_: jnp.asarray(bias, param_dtype), rngs=rngs)


def _capturing(module: nnx.Module, variable_type: type) -> bool:
    """True inside ``nnx.capture(..., variable_type)`` (flax keeps the capture buffers of a
    running capture on each module, as ``__captures__``)."""
    return any(type(v) is variable_type for v in getattr(module, "__captures__", ()))


def _sower(module: nnx.Module) -> pipeline.Sow:
    """The pipeline's ``sow(collection, name, value)`` for an NNX module: intermediates as
    ``nnx.Intermediate`` (inside ``nnx.capture`` only where flax has it, since sowing outside
    a capture is deprecated there; always on older flax), inspection records as
    :class:`Inspection`."""
    def sow(collection: str, name: str, value: Any) -> None:
        if collection == pipeline.INSPECT:
            module.sow(Inspection, name, value)
        elif not hasattr(nnx, "capture") or hasattr(module, "__captures__"):
            module.sow(nnx.Intermediate, name, value)
    return sow


class SpatialTransformer(nnx.Module):
    """A spatial transformer (NNX): localization -> regression -> sampler.

    Same behaviour and defaults as :class:`stn_jax.linen.SpatialTransformer`.

    Args:
      in_shape: per-example input shape ``(H, W, C)`` (any channel count).
      transform: kind name or :class:`stn_jax.Transform` (default ``"affine"``).
      localization: any NNX module mapping (N, H, W, C) -> (N, F); ``None``:
        :class:`LocalizationMLP` (paper's ST-FCN net). F is read from its ``out_features``
        attribute or found by shape inference.
      output_size: ``(Ho, Wo)``; ``None`` keeps the input size.
      num_control_points: K for ``tps``.
      mode, padding_mode, align_corners: passed to :func:`stn_jax.grid_sample`.
      bound: ``None`` or ``"tanh"``.
      initial_params: (P,) starting transform (default identity); the regression layer starts
        at zero weights and the matching bias.
      dtype, param_dtype: computation / parameter dtypes of the learned layers.
      rngs: ``nnx.Rngs``.

    Call: ``(x, *, return_params=False)`` with x (N, H, W, C) -> warped (N, Ho, Wo, C), or
    ``(warped, params (N, P) float32)``. The validated options are ``config``
    (:class:`stn_jax.pipeline.TransformerConfig`).
    """

    def __init__(self, in_shape: Sequence[int], *, transform: str | Transform = "affine",
                 localization: nnx.Module | None = None,
                 output_size: tuple[int, int] | None = None, num_control_points: int = 16,
                 mode: str = "bilinear", padding_mode: str = "zeros", align_corners: bool = False,
                 bound: str | None = None, initial_params: Any = None,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        in_shape = _check_shape(in_shape)
        self.config = TransformerConfig.create(
            transform, num_control_points=num_control_points, output_size=output_size,
            mode=mode, padding_mode=padding_mode, align_corners=align_corners, bound=bound,
            initial_params=initial_params)
        _localization_and_regression(self, in_shape, self.config, localization, dtype=dtype,
                                     param_dtype=param_dtype, rngs=rngs)

    @property
    def transform(self) -> Transform:
        """The transform kind."""
        return self.config.transform

    @property
    def initial(self) -> np.ndarray:
        """(P,) float32 starting parameters."""
        return self.config.initial

    def __call__(self, x: jax.Array, *, return_params: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
        raw = self.regression(self.localization(x))
        out, params = pipeline.transformer_forward(self.config, x, raw, sow=_sower(self),
                                                   inspect=_capturing(self, Inspection))
        return (out, params) if return_params else out


class ParallelSpatialTransformers(nnx.Module):
    """N spatial transformers on the same input, outputs concatenated on channels (NNX).

    Same behaviour and defaults as :class:`stn_jax.linen.ParallelSpatialTransformers`: heads
    start at distinct regions (zoom ``initial_scale`` on their own lattice cell).

    Args:
      in_shape: ``(H, W, C)``.
      num_heads: number of heads (default 2).
      localization: factory ``f(in_shape, rngs) -> nnx.Module`` (one net per head);
        ``None``: LocalizationMLP.
      initial_params: (num_heads, P) or ``None``.
      initial_scale: zoom of each head's starting region (default 0.5).
      options: the other options of :class:`SpatialTransformer`.

    Call: ``(x, *, return_params=False)``: x (N, H, W, C) -> (N, Ho, Wo, num_heads * C) with
    head i's output in channels ``[i*C, (i+1)*C)`` (and the list of per-head (N, P) params).
    """

    def __init__(self, in_shape: Sequence[int], *, num_heads: int = 2,
                 transform: str | Transform = "affine",
                 localization: LocalizationFactory | None = None,
                 initial_params: Any = None, initial_scale: float = 0.5,
                 num_control_points: int = 16, rngs: nnx.Rngs, **options: Any):
        in_shape = _check_shape(in_shape)
        kind = core.resolve_transform(transform, num_control_points=num_control_points)
        init = pipeline.head_initial_params(kind, num_heads, initial_params=initial_params,
                                            scale=initial_scale)
        self.heads = nnx.List([
            SpatialTransformer(in_shape, transform=kind, initial_params=init[i], rngs=rngs,
                               localization=(localization(in_shape, rngs)
                                             if localization is not None else None), **options)
            for i in range(num_heads)])

    def __call__(self, x: jax.Array, *, return_params: bool = False
                 ) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
        out, params = pipeline.parallel_forward(
            x, [lambda x, head=head: head(x, return_params=True) for head in self.heads])
        return (out, params) if return_params else out


class _Stage(nnx.Module):
    """Localization + regression of one series stage: (N, H, W, C) -> raw (N, P)."""

    def __init__(self, in_shape: tuple[int, int, int], config: TransformerConfig,
                 localization: nnx.Module | None, *, dtype: Dtype | None, param_dtype: Dtype,
                 rngs: nnx.Rngs):
        _localization_and_regression(self, in_shape, config, localization, dtype=dtype,
                                     param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.regression(self.localization(x))


class SeriesSpatialTransformers(nnx.Module):
    """Spatial transformers in series whose transforms are composed, sampling the input once
    (NNX).

    Same behaviour and defaults as :class:`stn_jax.linen.SeriesSpatialTransformers`: stage i's
    localization net sees the input warped by the composition of stages 0..i-1, the output
    samples the original input with the composition of all stages. Kinds with a matrix only
    (affine kinds and ``projective``); every stage starts at the identity.

    Args:
      in_shape: ``(H, W, C)``.
      num_stages: number of stages (default 2).
      transform: kind of every stage (default ``"affine"``).
      localization: factory ``f(in_shape, rngs) -> nnx.Module`` (one net per stage);
        ``None``: LocalizationMLP.
      output_size, mode, padding_mode, align_corners, bound, dtype, param_dtype, rngs: as in
        :class:`SpatialTransformer`.

    Call: ``(x, *, return_params=False)``: x (N, H, W, C) -> (N, Ho, Wo, C), and with
    ``return_params`` the composed (N, 3, 3) homogeneous matrix. Sows each stage's
    parameters as ``nnx.Intermediate`` and, inside ``nnx.capture(..., Inspection)``, one
    record of the composed transform (kind ``affine`` or ``projective``).
    """

    def __init__(self, in_shape: Sequence[int], *, num_stages: int = 2,
                 transform: str | Transform = "affine",
                 localization: LocalizationFactory | None = None,
                 output_size: tuple[int, int] | None = None, mode: str = "bilinear",
                 padding_mode: str = "zeros", align_corners: bool = False,
                 bound: str | None = None, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        in_shape = _check_shape(in_shape)
        self.config = TransformerConfig.create(
            transform, output_size=output_size, mode=mode, padding_mode=padding_mode,
            align_corners=align_corners, bound=bound)
        pipeline.check_series(self.config.transform, num_stages)
        self.stages = nnx.List([
            _Stage(in_shape, self.config,
                   localization(in_shape, rngs) if localization is not None else None,
                   dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for _ in range(num_stages)])

    def __call__(self, x: jax.Array, *, return_params: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
        out, total = pipeline.series_forward(self.config, x, list(self.stages),
                                             sow=_sower(self),
                                             inspect=_capturing(self, Inspection))
        return (out, total) if return_params else out


def inspect_transformers(module: nnx.Module, images: jax.typing.ArrayLike
                         ) -> list[dict[str, Any]]:
    """Run ``module`` on ``images`` and return what each spatial transformer did.

    The NNX counterpart of :func:`stn_jax.models.inspect_transformers`.

    Args:
      module: any NNX module containing transformers of this module (called as
        ``module(images)``).
      images: (N, H, W, C) float32.

    Returns:
      One dict per transformer, in the order of the module tree, with ``"kind"`` (str),
      ``"params"`` (N, P), ``"grid"`` (N, Ho, Wo, 2) normalised coordinates on the
      transformer's input and ``"warped"`` (N, Ho, Wo, C). For a series composition the entry
      describes the composed transform (kind ``affine`` or ``projective``).

    >>> st = SpatialTransformer((8, 8, 1), transform="tps", num_control_points=4, rngs=nnx.Rngs(0))
    >>> [(r["kind"], r["params"].shape, r["grid"].shape)
    ...  for r in inspect_transformers(st, jnp.ones((2, 8, 8, 1)))]
    [('tps', (2, 8), (2, 8, 8, 2))]
    """
    _, records = nnx.capture(module, Inspection)(jnp.asarray(images, jnp.float32))
    return pipeline.collect_inspections(nnx.to_pure_dict(records))


def _load_layers(module: nnx.Module, params: Mapping[str, Any]) -> None:
    """Copy a Linen ``{"localization": ..., "regression": ...}`` subtree into a module with
    ``localization`` (a default net) and ``regression`` attributes."""
    loc, lparams = module.localization, params["localization"]
    if isinstance(loc, LocalizationMLP):
        pairs = [(layer, lparams[f"Dense_{i}"]) for i, layer in enumerate(loc.layers)]
    elif isinstance(loc, LocalizationCNN):
        pairs = [(conv, lparams[f"Conv_{i}"]) for i, conv in enumerate(loc.convs)]
        if loc.dense is not None:
            pairs.append((loc.dense, lparams["Dense_0"]))
    else:
        raise TypeError(f"load_linen_params supports the default localization nets; got "
                        f"{type(loc).__name__}")
    pairs.append((module.regression, params["regression"]))
    for layer, p in pairs:
        layer.kernel[...] = jnp.asarray(p["kernel"])
        layer.bias[...] = jnp.asarray(p["bias"])


def load_linen_params(module: nnx.Module, params: Mapping[str, Any]) -> nnx.Module:
    """Copy the ``params`` of the matching :mod:`stn_jax.linen` module into ``module``.

    Args:
      module: a :class:`SpatialTransformer`, :class:`ParallelSpatialTransformers` (Linen
        ``head_<i>`` -> ``heads[i]``) or :class:`SeriesSpatialTransformers` (``stage_<i>`` ->
        ``stages[i]``) whose localization nets are the default ones
        (:class:`LocalizationMLP`, :class:`LocalizationCNN`).
      params: the Linen ``variables["params"]``.

    Returns:
      ``module``, updated in place.
    """
    if isinstance(module, ParallelSpatialTransformers):
        for i, head in enumerate(module.heads):
            _load_layers(head, params[f"head_{i}"])
    elif isinstance(module, SeriesSpatialTransformers):
        for i, stage in enumerate(module.stages):
            _load_layers(stage, params[f"stage_{i}"])
    elif isinstance(module, SpatialTransformer):
        _load_layers(module, params)
    else:
        raise TypeError(f"load_linen_params supports the transformers of stn_jax.nnx; got "
                        f"{type(module).__name__}")
    return module
