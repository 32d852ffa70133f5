"""Flax NNX spatial transformers: the same behaviour and defaults as :mod:`stn_jax.linen`.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from stn_jax import nnx as stn
>>> st = stn.SpatialTransformer((28, 28, 1), transform="affine", rngs=nnx.Rngs(0))
>>> y = st(jnp.ones((2, 28, 28, 1)))                           # fresh module: y == x

NNX modules are built eagerly, so they need the input shape ``(H, W, C)`` up front (the Linen
modules infer it). Parameter access: ``__call__(x, return_params=True)`` returns
``(warped, params)``; every call also sows, as ``nnx.Intermediate`` values,
``transform_params`` (N, P) and ``transform_deviation`` (N, P) = params - initial params,
collected with ``out, inter = nnx.capture(model, nnx.Intermediate)(x)`` (flax >= 0.12.x; on
older flax without ``nnx.capture``, ``nnx.pop(model, nnx.Intermediate)``), and
:func:`stn_jax.models.transform_penalty` turns them into the penalty.

Attribute names match the Linen parameter tree (``localization`` with ``layers[i]`` for the
dense/conv layers, ``regression``), and :func:`load_linen_params` copies Linen parameters
into an NNX module, so both APIs can be checked to give identical outputs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stn_jax import localization as core
from stn_jax.transforms import Transform

Dtype = Any


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

    def __init__(self, in_features: int, features: Sequence[int] = (32, 32, 32), *,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        widths = [int(in_features)] + [int(f) for f in features]
        self.layers = nnx.List([nnx.Linear(a, b, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                                for a, b in zip(widths[:-1], widths[1:])])
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

    def __init__(self, in_shape: Sequence[int], features: Sequence[int] = (20, 20),
                 kernel_size: int = 5, hidden: int = 20, *, dtype: Dtype | None = None,
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
            x = nnx.relu(nnx.max_pool(conv(x), (2, 2), strides=(2, 2), padding="SAME"))
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


def _sow(module: nnx.Module, name: str, value: jax.Array) -> None:
    """Sow an ``nnx.Intermediate``: inside ``nnx.capture`` only where flax has it (sowing
    outside a capture is deprecated there), always on older flax."""
    if not hasattr(nnx, "capture") or hasattr(module, "__captures__"):
        module.sow(nnx.Intermediate, name, value)


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

    Call: ``(x, *, return_params=False)`` -> warped (N, Ho, Wo, C) or ``(warped, params)``.
    """

    def __init__(self, in_shape: Sequence[int], transform: str | Transform = "affine", *,
                 localization: nnx.Module | None = None,
                 output_size: tuple[int, int] | None = None, num_control_points: int = 16,
                 mode: str = "bilinear", padding_mode: str = "zeros", align_corners: bool = False,
                 bound: str | None = None, initial_params: Any = None,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        in_shape = _check_shape(in_shape)
        self.transform = core.resolve_transform(transform, num_control_points=num_control_points)
        core.check_bound(bound)
        from stn_jax import sampling
        sampling.check_options(mode, padding_mode, 2)
        self.output_size = core.check_output_size(output_size)
        self.mode, self.padding_mode, self.align_corners = mode, padding_mode, bool(align_corners)
        self.bound = bound
        self.initial = core.initial_params(self.transform, initial_params)
        raw_bias = core.unconstrain(self.initial, self.transform, bound)
        if localization is None:
            localization = LocalizationMLP(int(np.prod(in_shape)), dtype=dtype,
                                           param_dtype=param_dtype, rngs=rngs)
        self.localization = localization
        features = _feature_count(localization, in_shape)
        self.regression = nnx.Linear(
            features, self.transform.num_params, dtype=dtype, param_dtype=param_dtype,
            kernel_init=nnx.initializers.zeros,
            bias_init=lambda *_: jnp.asarray(raw_bias, param_dtype), rngs=rngs)

    def __call__(self, x: jax.Array, *, return_params: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
        raw = self.regression(self.localization(x))
        params = core.constrain(raw, self.transform, self.bound)
        _sow(self, "transform_params", params)
        _sow(self, "transform_deviation", params - jnp.asarray(self.initial))
        out = core.apply_transform(x, params, self.transform, output_size=self.output_size,
                                   mode=self.mode, padding_mode=self.padding_mode,
                                   align_corners=self.align_corners)
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
      initial_params: (num_heads, P) or ``None``; initial_scale: 0.5.
      Other options as in :class:`SpatialTransformer`.

    Call: ``(x, *, return_params=False)`` -> (N, Ho, Wo, num_heads * C) (and the list of
    per-head params).
    """

    def __init__(self, in_shape: Sequence[int], num_heads: int = 2,
                 transform: str | Transform = "affine", *,
                 localization: Callable[[tuple[int, int, int], nnx.Rngs], nnx.Module] | None = None,
                 initial_params: Any = None, initial_scale: float = 0.5,
                 num_control_points: int = 16, rngs: nnx.Rngs, **options: Any):
        in_shape = _check_shape(in_shape)
        kind = core.resolve_transform(transform, num_control_points=num_control_points)
        if initial_params is None:
            init = core.spread_initial_params(kind, num_heads, scale=initial_scale)
        else:
            init = np.asarray(initial_params, np.float32)
            if init.shape != (num_heads, kind.num_params):
                raise ValueError(f"initial_params must have shape ({num_heads}, "
                                 f"{kind.num_params}); got {init.shape}")
        self.heads = nnx.List([
            SpatialTransformer(in_shape, kind, initial_params=init[i], rngs=rngs,
                               localization=(localization(in_shape, rngs)
                                             if localization is not None else None), **options)
            for i in range(num_heads)])

    def __call__(self, x: jax.Array, *, return_params: bool = False):
        outs, params = zip(*(head(x, return_params=True) for head in self.heads))
        out = jnp.concatenate(outs, axis=-1)
        return (out, list(params)) if return_params else out


def load_linen_params(module: SpatialTransformer, params: dict) -> SpatialTransformer:
    """Copy a Linen :class:`stn_jax.linen.SpatialTransformer`'s ``params`` into ``module``.

    Supports the default localization nets (:class:`LocalizationMLP`,
    :class:`LocalizationCNN`); ``module`` is updated in place and returned.
    """
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
    return module
