"""The paper's classifiers (Jaderberg et al. 2015, Table 1, TC and addition) in Flax Linen.

Models (``create_model(name, dataset=..., transform=...)``):

===========  ==============================================================================
``fcn``      flatten -> dense h -> ReLU -> dense h -> ReLU -> dense classes (3 weight layers)
``cnn``      conv 9x9 c1 -> max-pool 2 -> ReLU -> conv 7x7 c2 -> max-pool 2 -> ReLU -> dense
             classes (3 weight layers; unpadded 'VALID' convs, max-pools round up)
``st-fcn``   SpatialTransformer (ST-FCN localization: 3 dense of 32) -> [avg-pool 2] -> FCN
``st-cnn``   SpatialTransformer (ST-CNN localization on a 2x average-pooled copy of the input:
             2 x [conv 5x5 20 -> max-pool 2], dense 20) -> [avg-pool 2] -> CNN
``2st-fcn``  (addition only) two parallel transformers, each with its own ST-FCN localization
             net looking at the whole 2-channel input and producing a warped 2-channel image;
             outputs concatenated (4 channels) -> avg-pool 2 -> FCN
===========  ==============================================================================

The 2x average pooling after the transformer is used for RTS, TC and addition (as in the
paper for RTS/TC; the addition inputs are 42x42 RTS digits too).

Architectures (``architecture=``, :data:`ARCHITECTURES`):

``paper``   (default) the appendix reading: unpadded ('VALID') 9x9 and 7x7 convs in the CNN
            classifiers, the ST-CNN localization net on a 2x average-pooled input, and every
            classifier width solved to the dataset's parameter budget (no cap).
``padded``  the earlier zoo, kept to re-run older results: 'SAME' convs, the ST-CNN
            localization net on the full-resolution input, and the CNN's second conv capped at
            64 filters (so CNNs fall below the budget on RTS, TC and addition).

Widths. All models for one dataset are sized to about the same number of parameters, as in the
paper: the budget is the parameter count of the FCN with two hidden layers of 128 on that
dataset's raw input; every other model solves its classifier width to match the budget after
its localization net is paid for (FCN classifiers: hidden width h; CNN classifiers: c1 = 16 and
c2 solved). With 'VALID' convs and the paper's pooling the RTS ST-CNN's classifier sees
21x21 -> 13x13 -> 7x7 -> 1x1, so its second conv is a 7x7 "dense" layer over the pooled map.
Any width can be overridden; :func:`stn_jax.models.summary` prints each model's counts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stn_jax import linen as stn
from stn_jax import localization as core
from stn_jax.models.conv import check_conv_impl, conv_function
from stn_jax.models.specs import DatasetSpec, get_spec
from stn_jax.pooling import max_pool_2x2

MODEL_NAMES = ("fcn", "cnn", "st-fcn", "st-cnn", "2st-fcn")
"""Names accepted by :func:`create_model`."""

FCN_BUDGET_WIDTH = 128
"""Hidden width of the reference FCN whose parameter count sets each dataset's budget."""
CNN_C1 = 16
"""Filters of the first 9x9 conv in CNN classifiers."""
CNN_C2_CAP = 64
"""Upper bound on the solved filters of the second (7x7) conv in the ``padded`` architecture."""
ARCHITECTURES = ("paper", "padded")
"""Values of ``create_model(architecture=...)`` (see the module docstring)."""
LOC_DOWNSAMPLE = 2
"""Down-sampling factor of the ST-CNN localization input in the ``paper`` architecture."""

Dtype = Any


class FCN(nn.Module):
    """Fully connected classifier: flatten, ``len(hidden)`` dense+ReLU layers, dense logits.

    Input (N, H, W, C); output (N, num_classes) float32 logits.
    """

    hidden: Sequence[int] = (128, 128)
    num_classes: int = 10
    dropout_rate: float = 0.0
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
            if self.dropout_rate:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class CNN(nn.Module):
    """The paper's CNN classifier: conv 9x9 -> max-pool 2 -> conv 7x7 -> max-pool 2 -> dense.

    Convolutions use ``padding`` ('VALID', the paper's, shrinks each side by k - 1; 'SAME'
    keeps it); max-pooling always rounds up (2x2, stride 2, 'SAME'), so a 21x21 input gives
    13 -> 7 -> 1 -> 1 with 'VALID' convs. ``conv`` picks the convolution implementation
    (:data:`stn_jax.models.conv.CONV_IMPLS`; same sums, different speed). Input (N, H, W, C);
    output (N, num_classes) float32 logits. A 'VALID' conv larger than its input raises
    ValueError.
    """

    features: Sequence[int] = (32, 64)
    kernel_sizes: Sequence[int] = (9, 7)
    padding: str = "VALID"
    num_classes: int = 10
    dropout_rate: float = 0.0
    dtype: Dtype | None = None
    conv: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        check_conv_impl(self.conv)
        if len(self.features) != len(self.kernel_sizes):
            raise ValueError(f"CNN needs one kernel size per conv; got features={self.features} "
                             f"and kernel_sizes={self.kernel_sizes}")
        if self.padding not in ("VALID", "SAME"):
            raise ValueError(f"CNN padding must be 'VALID' or 'SAME'; got {self.padding!r}")
        for width, k in zip(self.features, self.kernel_sizes, strict=True):
            if self.padding == "VALID" and min(x.shape[1:3]) < k:
                raise ValueError(f"CNN: a {k}x{k} 'VALID' conv needs at least {k}x{k} input; "
                                 f"got {x.shape[1:3]} (use padding='SAME' or a larger input)")
            x = nn.Conv(width, (k, k), padding=self.padding, dtype=self.dtype,
                        conv_general_dilated=conv_function(self.conv))(x)
            x = nn.relu(max_pool_2x2(x))
        x = x.reshape((x.shape[0], -1))
        if self.dropout_rate:
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class Downsampled(nn.Module):
    """Runs ``net`` on a ``factor`` x ``factor`` average-pooled copy of its input.

    The paper's ST-CNN localization net looks at a 2x down-sampled image; the transformer still
    samples the full-resolution input. Pooling is 'VALID' (an odd trailing row/column is
    dropped). Input (N, H, W, C); output whatever ``net`` returns for (N, H//f, W//f, C).
    """

    net: nn.Module
    factor: int = LOC_DOWNSAMPLE

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.factor > 1:
            x = nn.avg_pool(x, (self.factor, self.factor), strides=(self.factor, self.factor))
        return self.net(x)


class STClassifier(nn.Module):
    """A spatial transformer (or several) in front of a classifier.

    Attributes:
      transformer: a Linen module mapping (N, H, W, C) -> (N, Ho, Wo, C') (e.g.
        :class:`stn_jax.linen.SpatialTransformer`); its parameters live under ``transformer/``.
      classifier: a Linen module taking ``(x, train=...)`` and returning logits.
      pool: average-pooling factor applied to the warped output (1 = none).
    """

    transformer: nn.Module
    classifier: nn.Module
    pool: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        y = self.transformer(x)
        if self.pool > 1:
            y = nn.avg_pool(y, (self.pool, self.pool), strides=(self.pool, self.pool))
        return self.classifier(y, train=train)


# ----------------------------------------------------------------------------- sizing


def _pooled(n: int, times: int = 2) -> int:
    for _ in range(times):
        n = math.ceil(n / 2)
    return n


def _fcn_count(in_dim: int, h: int, k: int) -> int:
    return in_dim * h + h + h * h + h + h * k + k


def _cnn_map(n: int, padding: str) -> int:
    """Spatial size before the CNN's dense layer: (conv 9, pool 2, conv 7, pool 2)."""
    for kernel in (9, 7):
        n = math.ceil((n - kernel + 1 if padding == "VALID" else n) / 2)
    return n


def _cnn_count(h: int, w: int, c: int, c1: int, c2: int, k: int, padding: str = "VALID") -> int:
    return ((81 * c * c1 + c1) + (49 * c1 * c2 + c2)
            + _cnn_map(h, padding) * _cnn_map(w, padding) * c2 * k + k)


def _mlp_loc_count(in_dim: int, features: Sequence[int], p: int) -> int:
    n, prev = 0, in_dim
    for f in features:
        n, prev = n + prev * f + f, f
    return n + prev * p + p


def _cnn_loc_count(h: int, w: int, c: int, p: int, features=(20, 20), k: int = 5,
                   hidden: int = 20) -> int:
    n, prev = 0, c
    for f in features:
        n, prev = n + k * k * prev * f + f, f
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    flat = h * w * prev
    if hidden:
        n, flat = n + flat * hidden + hidden, hidden
    return n + flat * p + p


def _best(count: Callable[[int], int], budget: int, lo: int = 1, hi: int = 1024) -> int:
    return min(range(lo, hi + 1), key=lambda v: (abs(count(v) - budget), v))


def budget(dataset: str) -> int:
    """Parameter budget of ``dataset``: the FCN with two hidden layers of 128 on the raw input."""
    spec = get_spec(dataset)
    h, w, c = spec.input_shape
    return _fcn_count(h * w * c, FCN_BUDGET_WIDTH, spec.num_classes)


def check_architecture(architecture: str) -> str:
    """``architecture`` if it is one of :data:`ARCHITECTURES`, else ValueError."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
    return architecture


def default_loc_downsample(architecture: str) -> int:
    """Down-sampling factor of the ST-CNN localization input: :data:`LOC_DOWNSAMPLE` for
    ``paper``, 1 (full resolution) for ``padded``."""
    return LOC_DOWNSAMPLE if check_architecture(architecture) == "paper" else 1


def check_loc_downsample(factor: Any) -> int:
    """``factor`` if it is a positive int, else ValueError naming the expectation."""
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"loc_downsample must be a positive integer (1: full resolution), got {factor!r}")
    return factor


def default_widths(name: str, dataset: str, transform: str = "affine", *,
                   num_control_points: int = 16, architecture: str = "paper",
                   loc_downsample: int | None = None) -> dict[str, Any]:
    """The classifier widths :func:`create_model` uses: ``{"hidden": (h, h)}`` for FCN
    classifiers or ``{"features": (c1, c2)}`` for CNN classifiers. ``loc_downsample`` (ST-CNN
    only; default :func:`default_loc_downsample`) sets the localization input the budget pays for."""
    check_architecture(architecture)
    padding, cap = ("VALID", 4096) if architecture == "paper" else ("SAME", CNN_C2_CAP)
    loc_factor = (default_loc_downsample(architecture) if loc_downsample is None
                  else check_loc_downsample(loc_downsample))
    spec = get_spec(dataset)
    h, w, c = spec.input_shape
    k, target = spec.num_classes, budget(dataset)
    if name == "fcn":
        return {"hidden": (FCN_BUDGET_WIDTH,) * 2}
    if name == "cnn":
        c2 = _best(lambda v: _cnn_count(h, w, c, CNN_C1, v, k, padding), target, hi=cap)
        return {"features": (CNN_C1, c2)}
    p = core.resolve_transform(transform, num_control_points=num_control_points).num_params
    ph, pw = h // spec.st_pool, w // spec.st_pool
    if name == "st-fcn":
        rest = target - _mlp_loc_count(h * w * c, (32, 32, 32), p)
        return {"hidden": (_best(lambda v: _fcn_count(ph * pw * c, v, k), rest),) * 2}
    if name == "2st-fcn":
        rest = target - 2 * _mlp_loc_count(h * w * c, (32, 32, 32), p)
        return {"hidden": (_best(lambda v: _fcn_count(ph * pw * 2 * c, v, k), rest),) * 2}
    if name == "st-cnn":
        rest = target - _cnn_loc_count(h // loc_factor, w // loc_factor, c, p)
        c2 = _best(lambda v: _cnn_count(ph, pw, c, CNN_C1, v, k, padding), rest, hi=cap)
        return {"features": (CNN_C1, c2)}
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")


# ----------------------------------------------------------------------------- factory

_ST_OPTIONS = ("num_control_points", "mode", "padding_mode", "align_corners", "bound",
               "output_size")
_CLASSIFIER_OPTIONS = ("hidden", "features", "kernel_sizes", "dropout_rate", "conv")


def create_model(name: str, *, dataset: str, transform: str = "affine", **overrides: Any
                 ) -> nn.Module:
    """Build one of the paper's models for a dataset.

    Args:
      name: one of :data:`MODEL_NAMES`.
      dataset: one of :data:`stn_jax.models.DATASET_SPECS` (input shape, classes, pooling).
      transform: transformer kind for ST models (``affine``, ``projective``, ``tps``,
        ``attention``, ``similarity``, ``translation``); ignored by ``fcn``/``cnn``.
      **overrides: ``architecture`` (:data:`ARCHITECTURES`, default ``"paper"``); classifier
        options ``hidden`` (FCN widths), ``features``/``kernel_sizes``/``conv`` (CNN; ``conv``
        is the convolution implementation, :data:`stn_jax.models.conv.CONV_IMPLS`),
        ``dropout_rate``; transformer options ``num_control_points``, ``mode``,
        ``padding_mode``, ``align_corners``, ``bound``, ``output_size``; ``pool`` (post-ST
        average pooling), ``loc_downsample`` (``st-cnn`` only: average-pooling factor of the
        localization net's input, 1 = full resolution; default 2 for ``paper``, 1 for
        ``padded``; the classifier's width is re-solved to the budget), ``localization`` (a
        Linen module, or for ``2st-fcn`` a factory),
        ``dtype`` (computation dtype, e.g. ``jnp.bfloat16``).

    Returns:
      An unbound Linen module: ``model.init(key, images, train=False)``,
      ``model.apply(variables, images, train=..., rngs={"dropout": key})`` -> (N, classes)
      float32 logits, images float32 (N, H, W, C) in [0, 1].

    Raises:
      ValueError: unknown name/dataset/transform/option, or ``2st-fcn`` outside ``addition``.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    spec: DatasetSpec = get_spec(dataset)
    if name == "2st-fcn" and dataset != "addition":
        raise ValueError("2st-fcn (two parallel transformers) is the MNIST-addition model; "
                         f"use dataset='addition', got {dataset!r}")
    known = set(_ST_OPTIONS) | set(_CLASSIFIER_OPTIONS) | {"pool", "localization", "dtype",
                                                          "architecture", "loc_downsample"}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown create_model option(s) {sorted(unknown)}; expected some of "
                         f"{sorted(known)}")
    dtype = overrides.get("dtype")
    architecture = check_architecture(overrides.get("architecture", "paper"))
    loc_downsample = overrides.get("loc_downsample")
    if loc_downsample is not None:
        if name != "st-cnn":
            raise ValueError(f"loc_downsample applies to the st-cnn localization net only, not {name!r}")
        check_loc_downsample(loc_downsample)
    else:
        loc_downsample = default_loc_downsample(architecture)
    st_opts = {k: overrides[k] for k in _ST_OPTIONS if k in overrides}
    is_st = name.startswith(("st-", "2st-"))
    if is_st:  # validate the transform (and K) early, with a clear message
        core.resolve_transform(transform, num_control_points=st_opts.get("num_control_points", 16))
        core.check_bound(st_opts.get("bound"))
        core.check_output_size(st_opts.get("output_size"))
    widths = default_widths(name, dataset, transform, architecture=architecture,
                            num_control_points=st_opts.get("num_control_points", 16),
                            loc_downsample=loc_downsample)
    cls_opts = {k: overrides[k] for k in _CLASSIFIER_OPTIONS if k in overrides}
    k = spec.num_classes
    if name in ("fcn", "st-fcn", "2st-fcn"):
        if {"features", "kernel_sizes", "conv"} & set(cls_opts):
            raise ValueError(f"{name} has an FCN classifier; use hidden=..., not "
                             "features/kernel_sizes/conv")
        classifier = FCN(hidden=tuple(cls_opts.get("hidden", widths["hidden"])), num_classes=k,
                         dropout_rate=cls_opts.get("dropout_rate", 0.0), dtype=dtype,
                         parent=None)
    else:
        if "hidden" in cls_opts:
            raise ValueError(f"{name} has a CNN classifier; use features=..., not hidden")
        classifier = CNN(features=tuple(cls_opts.get("features", widths["features"])),
                         kernel_sizes=tuple(cls_opts.get("kernel_sizes", (9, 7))), num_classes=k,
                         padding="VALID" if architecture == "paper" else "SAME",
                         dropout_rate=cls_opts.get("dropout_rate", 0.0), dtype=dtype,
                         conv=check_conv_impl(cls_opts.get("conv", "auto")), parent=None)
    if not is_st:
        return classifier
    pool = int(overrides.get("pool", spec.st_pool))
    if name == "2st-fcn":
        loc = overrides.get("localization") or functools.partial(stn.LocalizationMLP, dtype=dtype)
        transformer = stn.ParallelSpatialTransformers(num_heads=2, transform=transform,
                                                      localization=loc, dtype=dtype, parent=None,
                                                      **st_opts)
    else:
        loc = overrides.get("localization")
        if loc is None:
            if name == "st-fcn":
                loc = stn.LocalizationMLP(dtype=dtype, parent=None)
            elif loc_downsample > 1:
                loc = Downsampled(net=stn.LocalizationCNN(dtype=dtype, parent=None), factor=loc_downsample,
                                  parent=None)
            else:
                loc = stn.LocalizationCNN(dtype=dtype, parent=None)
        transformer = stn.SpatialTransformer(transform=transform, localization=loc, dtype=dtype,
                                             parent=None, **st_opts)
    return STClassifier(transformer=transformer, classifier=classifier, pool=pool)
