"""Flax Linen spatial transformers and the paper's localization networks.

>>> import jax, jax.numpy as jnp
>>> from stn_jax import linen as stn
>>> st = stn.SpatialTransformer(transform="affine")          # default: ST-FCN localization
>>> x = jnp.ones((2, 28, 28, 1))
>>> variables = st.init(jax.random.key(0), x)
>>> y = st.apply(variables, x)                                # fresh module: y == x

These modules only create the learned layers; the forward pass after the regression layer is
:mod:`stn_jax.pipeline`, shared with :mod:`stn_jax.nnx`.

Parameter access (for visualisation and regularisation): ``__call__(x, return_params=True)``
returns ``(warped, params)`` with ``params`` of shape (N, P) in the kind's parameterisation
(:mod:`stn_jax.transforms`). In every call the module also *sows*, into the
``"intermediates"`` collection, ``"transform_params"`` (N, P) and ``"transform_deviation"``
(N, P) = params - initial params (what :func:`transform_penalty` reads); and, only when the
``"stn_inspect"`` collection is mutable, a dict with ``"params"``, the ``"grid"``
(N, Ho, Wo, 2) and the ``"warped"`` output (N, Ho, Wo, C) under the name
``"transform:<kind>"`` (used by :func:`stn_jax.models.inspect_transformers`; read it with
:func:`stn_jax.pipeline.collect_inspections`). Sowing is free unless the caller asks for the
collection with ``mutable=[...]``.

Submodule names: the localization net is ``localization`` and the regression layer is
``regression`` (parallel heads: ``head_<i>/...``; series stages: ``stage_<i>/...``), so an
optimizer can give these a smaller learning rate by path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stn_jax import localization as core
from stn_jax import pipeline
from stn_jax.pipeline import TransformerConfig, transform_penalty
from stn_jax.pooling import max_pool_2x2
from stn_jax.transforms import Transform

__all__ = [
    "LocalizationCNN",
    "LocalizationMLP",
    "ParallelSpatialTransformers",
    "SeriesSpatialTransformers",
    "SpatialTransformer",
    "transform_penalty",
]

Dtype = Any


class LocalizationMLP(nn.Module):
    """The paper's ST-FCN localization net: flatten, then dense layers with ReLU.

    Attributes:
      features: widths of the dense layers (paper: three layers of 32).
      dtype: computation dtype (``None``: inferred from the input).
      param_dtype: parameter dtype.

    Input (N, H, W, C) (or any (N, ...)); output (N, features[-1]).
    """

    features: Sequence[int] = (32, 32, 32)
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for width in self.features:
            x = nn.relu(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype)(x))
        return x


class LocalizationCNN(nn.Module):
    """The paper's ST-CNN localization net: [conv k x k -> max-pool 2 -> ReLU] x len(features),
    flatten, dense ``hidden`` with ReLU.

    Attributes:
      features: filters of each conv (paper: two convs of 20).
      kernel_size: square kernel size (paper: 5).
      hidden: width of the final dense layer (paper: 20); ``0`` for none.
      dtype, param_dtype: as in Flax layers.

    Input (N, H, W, C) ('SAME' convolutions, H and W halved by each pool); output (N, hidden).
    """

    features: Sequence[int] = (20, 20)
    kernel_size: int = 5
    hidden: int = 20
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.features:
            x = nn.Conv(width, (self.kernel_size, self.kernel_size), dtype=self.dtype,
                        param_dtype=self.param_dtype)(x)
            x = nn.relu(max_pool_2x2(x))
        x = x.reshape((x.shape[0], -1))
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype)(x))
        return x


def _build(factory: Callable[[], nn.Module] | None) -> nn.Module | None:
    """Call a localization factory and detach the module from the calling scope, so the
    submodule that receives it adopts it (its parameters live under that submodule)."""
    if factory is None:
        return None
    module = factory()
    if not isinstance(module, nn.Module):
        raise TypeError(f"localization factory must return a flax.linen.Module; got {module!r}")
    return module.clone(parent=None)


def _regression(config: TransformerConfig, dtype: Dtype | None, param_dtype: Dtype) -> nn.Dense:
    """The regression layer, features (N, F) -> raw parameters (N, P): zero kernel and the
    bias that yields the starting parameters."""
    bias = np.asarray(config.raw_bias)
    return nn.Dense(config.transform.num_params, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=nn.initializers.zeros,
                    bias_init=lambda *_: jnp.asarray(bias, param_dtype), name="regression")


def _inspecting(module: nn.Module) -> bool:
    """Whether the caller asked for the ``"stn_inspect"`` collection (never during init)."""
    return module.is_mutable_collection(pipeline.INSPECT) and not module.is_initializing()


class SpatialTransformer(nn.Module):
    """A spatial transformer (Jaderberg et al. 2015): localization -> regression -> sampler.

    Attributes:
      transform: kind name (``translation``, ``attention``, ``similarity``, ``affine``,
        ``projective``, ``tps``) or a :class:`stn_jax.Transform`.
      localization: any Linen module mapping the input (N, H, W, C) to features (N, F);
        ``None``: :class:`LocalizationMLP` (the paper's ST-FCN net, three dense of 32).
      output_size: ``(Ho, Wo)``; ``None`` (default) keeps the input size.
      num_control_points: K for ``tps`` (a perfect square, lattice sqrt(K) x sqrt(K)).
      mode, padding_mode, align_corners: passed to :func:`stn_jax.grid_sample`.
      bound: ``None`` (linear, default) or ``"tanh"`` (see :func:`stn_jax.localization.constrain`).
      initial_params: (P,) starting transform (default: identity). The regression layer starts
        with zero weights and the bias that yields these parameters, so a fresh module warps
        every input by exactly this transform.
      dtype: computation dtype of the localization/regression layers (e.g. ``jnp.bfloat16``);
        the grid is always computed in float32 and the output has the input's dtype.
      param_dtype: parameter dtype.

    Call: ``(x, *, return_params=False)`` with x (N, H, W, C) of any channel count ->
    warped (N, Ho, Wo, C), or ``(warped, params (N, P) float32)`` if ``return_params``.
    """

    transform: str | Transform = "affine"
    localization: nn.Module | None = None
    output_size: tuple[int, int] | None = None
    num_control_points: int = 16
    mode: str = "bilinear"
    padding_mode: str = "zeros"
    align_corners: bool = False
    bound: str | None = None
    initial_params: Any = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, return_params: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
        config = TransformerConfig.create(
            self.transform, num_control_points=self.num_control_points,
            output_size=self.output_size, mode=self.mode, padding_mode=self.padding_mode,
            align_corners=self.align_corners, bound=self.bound, initial_params=self.initial_params)
        loc = self.localization
        if loc is None:
            loc = LocalizationMLP(dtype=self.dtype, param_dtype=self.param_dtype,
                                  name="localization")
        raw = _regression(config, self.dtype, self.param_dtype)(loc(x))
        out, params = pipeline.transformer_forward(config, x, raw, sow=self.sow,
                                                   inspect=_inspecting(self))
        return (out, params) if return_params else out


class ParallelSpatialTransformers(nn.Module):
    """N spatial transformers applied to the same input, outputs concatenated on channels.

    Each head starts at a different region (:func:`stn_jax.localization.spread_initial_params`,
    a zoom by ``initial_scale`` centred on its own lattice cell) so the heads do not collapse
    onto one crop; pass ``initial_params`` (num_heads, P) to choose the regions yourself.

    Attributes:
      num_heads: number of transformers.
      transform, output_size, num_control_points, mode, padding_mode, align_corners, bound,
        dtype, param_dtype: as in :class:`SpatialTransformer` (shared by all heads).
      localization: a *factory* (zero-argument callable returning a Linen module, e.g.
        ``functools.partial(LocalizationMLP, features=(32, 32, 32))`` or the class itself);
        each head gets its own localization net built from it. ``None``: LocalizationMLP.
      initial_params: (num_heads, P) starting transforms, or ``None`` for spread regions.
      initial_scale: zoom of the spread starting regions (default 0.5).

    Call: ``(x, *, return_params=False)``: x (N, H, W, C) -> (N, Ho, Wo, num_heads * C) with
    head i's output in channels ``[i*C, (i+1)*C)``; with ``return_params`` also the list of
    per-head (N, P) parameters.
    """

    num_heads: int = 2
    transform: str | Transform = "affine"
    localization: Callable[[], nn.Module] | None = None
    output_size: tuple[int, int] | None = None
    num_control_points: int = 16
    mode: str = "bilinear"
    padding_mode: str = "zeros"
    align_corners: bool = False
    bound: str | None = None
    initial_params: Any = None
    initial_scale: float = 0.5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, return_params: bool = False
                 ) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
        transform = core.resolve_transform(self.transform,
                                           num_control_points=self.num_control_points)
        init = pipeline.head_initial_params(transform, self.num_heads,
                                            initial_params=self.initial_params,
                                            scale=self.initial_scale)
        heads = [SpatialTransformer(
            transform=transform, localization=_build(self.localization),
            output_size=self.output_size, mode=self.mode, padding_mode=self.padding_mode,
            align_corners=self.align_corners, bound=self.bound,
            initial_params=tuple(float(v) for v in init[i]), dtype=self.dtype,
            param_dtype=self.param_dtype, name=f"head_{i}") for i in range(self.num_heads)]
        out, params = pipeline.parallel_forward(
            x, [lambda x, head=head: head(x, return_params=True) for head in heads])
        return (out, params) if return_params else out


class _Stage(nn.Module):
    """Localization + regression of one series stage: (N, H, W, C) -> raw (N, P)."""

    localization: nn.Module
    config: TransformerConfig
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _regression(self.config, self.dtype, self.param_dtype)(self.localization(x))


class SeriesSpatialTransformers(nn.Module):
    """Spatial transformers in series whose transforms are *composed*: the input is sampled
    once, with the product of all stages' matrices, so no content is lost at the borders
    between stages (chained warps would zero-pad at every stage).

    Stage i's localization net sees the input warped by the composition of stages 0..i-1
    (a same-size intermediate used only for localization); the final output samples the
    original input with the composition of all stages (:func:`stn_jax.pipeline.series_forward`).
    Kinds with a matrix only (affine kinds and ``projective``); every stage starts at the
    identity.

    Attributes:
      num_stages: number of stages.
      transform: kind of every stage.
      localization: factory (zero-argument callable returning a Linen module), one net per
        stage; ``None``: LocalizationMLP.
      output_size, mode, padding_mode, align_corners, bound, dtype, param_dtype: as in
        :class:`SpatialTransformer`.

    Call: ``(x, *, return_params=False)``: x (N, H, W, C) -> (N, Ho, Wo, C), and with
    ``return_params`` the composed (N, 3, 3) homogeneous matrix. Sows each stage's
    parameters into ``"intermediates"`` and, on request, one ``"stn_inspect"`` record of the
    composed transform (kind ``affine`` or ``projective``).
    """

    num_stages: int = 2
    transform: str | Transform = "affine"
    localization: Callable[[], nn.Module] | None = None
    output_size: tuple[int, int] | None = None
    mode: str = "bilinear"
    padding_mode: str = "zeros"
    align_corners: bool = False
    bound: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, return_params: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
        config = TransformerConfig.create(
            self.transform, output_size=self.output_size, mode=self.mode,
            padding_mode=self.padding_mode, align_corners=self.align_corners, bound=self.bound)
        pipeline.check_series(config.transform, self.num_stages)
        stages = [_Stage(
            localization=_build(self.localization) or LocalizationMLP(
                dtype=self.dtype, param_dtype=self.param_dtype, parent=None),
            config=config, dtype=self.dtype, param_dtype=self.param_dtype, name=f"stage_{i}")
            for i in range(self.num_stages)]
        out, total = pipeline.series_forward(config, x, stages, sow=self.sow,
                                             inspect=_inspecting(self))
        return (out, total) if return_params else out
