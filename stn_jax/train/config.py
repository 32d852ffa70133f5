"""Training configuration: one dataclass holding every option of ``stn-jax train``.

A :class:`TrainConfig` is plain data (JSON/TOML serialisable). :meth:`TrainConfig.validate`
checks every option and every combination *before* anything is compiled, raising
:class:`ValueError` that names the offending option and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tomllib
from typing import Any

from stn_jax.data import DATASETS, parse_distortion_overrides
from stn_jax.data.sources import SOURCES as MNIST_SOURCES
from stn_jax.models import ARCHITECTURES, CONV_IMPLS
from stn_jax.models import MODEL_NAMES as MODELS
from stn_jax.sampling import PADDING_MODES
from stn_jax.train.optim import OPTIMIZERS, SCHEDULES
from stn_jax.transforms import TRANSFORM_KINDS as TRANSFORMS

CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS,
    "model": MODELS,
    "architecture": ARCHITECTURES,
    "conv": CONV_IMPLS,
    "transform": TRANSFORMS,
    "padding_mode": PADDING_MODES,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "data_source": MNIST_SOURCES,
}
"""Option name -> its allowed values, each the tuple of the module that owns the concept:
:data:`stn_jax.data.DATASETS`, :data:`stn_jax.models.MODEL_NAMES`,
:data:`stn_jax.models.ARCHITECTURES`, :data:`stn_jax.models.CONV_IMPLS`,
:data:`stn_jax.transforms.TRANSFORM_KINDS`, :data:`stn_jax.sampling.PADDING_MODES`, the MNIST
sources of :func:`stn_jax.data.load_mnist`, :data:`stn_jax.train.optim.OPTIMIZERS` and
:data:`~stn_jax.train.optim.SCHEDULES`. :meth:`TrainConfig.validate` checks them in this order."""


def _opt(default: Any, help: str) -> Any:
    """A dataclass field with a default and its --help text."""
    return dataclasses.field(default=default, metadata={"help": help})


def option_help(name: str) -> str:
    """The documentation of option `name` (used by ``stn-jax train --help``)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}[name]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run (units in the field docs below).

    The defaults follow the paper's distorted-MNIST protocol (SGD, batch 256, lr 0.01,
    x0.1 every 50k steps, 150k steps) with the localization net at 0.1x the base rate.
    """

    # what to train
    dataset: str = _opt("rts", f'Distorted-MNIST variant: one of {", ".join(DATASETS)}.')
    model: str = _opt("st-cnn", f'Classifier: one of {", ".join(MODELS)} (2st-fcn: addition only).')
    transform: str = _opt("affine", f'Spatial transformer parameterisation: one of {", ".join(TRANSFORMS)} (ignored by fcn/cnn).')
    architecture: str = _opt("paper", "CNN and ST-CNN layers: paper (unpadded 9x9/7x7 convs, the ST-CNN localization net on a 2x down-sampled input, widths matched to the parameter budget) or padded (the earlier zoo: 'SAME' convs, full-resolution localization input, second conv capped at 64 filters).")
    conv: str = _opt("auto", f"Convolution implementation of the CNN classifiers: one of {', '.join(CONV_IMPLS)} (auto: im2col, gathered patches times the kernel, on the CPU backend, where it is 2-3x faster than XLA's convolution; XLA's elsewhere). The same sums in a different order.")
    st_pool: int = _opt(0, "Average-pooling factor after the spatial transformer (0: the dataset's, the paper's 2x on RTS/TC/addition and none on R/P/E; 1: none, so the classifier sees the transformer's output at full resolution).")
    loc_downsample: int = _opt(0, "Average-pooling factor of the st-cnn localization net's input (0: the architecture's, 2 for paper and 1 for padded; 1: full resolution). The classifier width is re-solved to the parameter budget. Ignored by the other models.")
    fcn_width: int = _opt(0, "Width of both hidden layers of an FCN classifier (fcn, st-fcn, 2st-fcn; 0: the zoo's, matched to the dataset's parameter budget, 128 for the plain FCN). Ignored by the CNN models.")
    padding_mode: str = _opt("zeros", f"Spatial transformers' padding outside the input: one of {', '.join(PADDING_MODES)}; zeros is the paper's (ignored by fcn/cnn).")
    # data
    data_source: str = _opt("auto", f'MNIST source for stn_jax.data.load_mnist: one of {", ".join(MNIST_SOURCES)}.')
    data_dir: str | None = _opt(None, "Directory holding the four MNIST IDX files (implies data_source='idx' when source is auto).")
    validation_size: int | None = _opt(None, 'Training digits held out for validation curves (default: the data layer\'s, 5,000 for full MNIST, 10% of smaller sources).')
    fixed_train: bool = _opt(False, 'Draw training batches from a fixed pre-generated set instead of fresh distortions.')
    distortion: str = _opt("", "Distortion parameters replacing the paper's for this dataset (training, validation and test data alike): comma-separated key=value pairs of the dataset's stn_jax.data.distortions fields, a range written lo:hi, e.g. 'sigma=3' (P) or 'max_angle=30,scale_range=0.8:1.2' (RTS). Empty: the paper's.")
    # optimisation
    steps: int = _opt(150_000, 'Number of optimisation steps.')
    batch_size: int = _opt(256, 'Global batch size (summed over all devices and hosts); must divide by the device count.')
    optimizer: str = _opt("sgd", 'sgd (with momentum) or adam.')
    lr: float = _opt(0.01, 'Base learning rate.')
    momentum: float = _opt(0.9, 'SGD momentum (0 disables it).')
    schedule: str = _opt("step", 'step: multiply by decay_factor every decay_steps; cosine: cosine decay to 0 over `steps`; constant.')
    decay_steps: int = _opt(50_000, 'Step-schedule period in optimisation steps.')
    decay_factor: float = _opt(0.1, 'Step-schedule multiplier applied every decay_steps.')
    warmup_steps: int = _opt(0, 'Linear warm-up steps (cosine schedule only).')
    loc_lr_mult: float = _opt(0.1, 'Learning-rate multiplier of the localization networks (paper: 0.1 for SVHN).')
    clip_norm: float = _opt(0.0, 'Global gradient-norm clipping threshold (0 disables).')
    weight_decay: float = _opt(0.0, 'Decoupled weight decay coefficient (0 disables).')
    identity_penalty: float = _opt(0.0, 'Weight of the mean squared deviation of transformer parameters from identity.')
    # run control
    seed: int = _opt(0, 'Seed of initialisation, dropout and the training-data stream.')
    eval_batch_size: int = _opt(1000, 'Batch size of validation/test evaluation (padded to a multiple of the device count).')
    eval_every: int = _opt(0, 'Validation every N steps (0: ten times per run).')
    log_every: int = _opt(50, 'Training metrics are averaged and written every N steps.')
    checkpoint_every: int = _opt(1000, 'Checkpoint every N steps (and always at the end).')
    keep_checkpoints: int = _opt(3, 'How many recent checkpoints to keep.')
    workdir: str = _opt("runs/default", 'Output directory: config.json, metrics.jsonl, results.json, checkpoints/, figures/, tensorboard/.')
    resume: bool = _opt(False, 'Continue from the latest checkpoint in workdir (exactly: same step, data order and RNG).')
    progress: bool = _opt(True, 'Show a progress bar on stderr.')
    figures: bool = _opt(True, 'Write figures (learning curves, transformer panel) at the end.')
    tensorboard: bool = _opt(True, 'Write TensorBoard events (the metrics.jsonl scalars, the transformer panel at each validation) under workdir/tensorboard.')

    # ------------------------------------------------------------------ helpers
    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)

    def model_options(self) -> dict[str, Any]:
        """Keyword options of :func:`stn_jax.models.create_model` for this run's model."""
        options: dict[str, Any] = {"transform": self.transform}
        if self.model in ("cnn", "st-cnn"):
            options["architecture"] = self.architecture
            options["conv"] = self.conv
        if self.model == "st-cnn" and self.loc_downsample:
            options["loc_downsample"] = self.loc_downsample
        if self.model in ("fcn", "st-fcn", "2st-fcn") and self.fcn_width:
            options["hidden"] = (self.fcn_width, self.fcn_width)
        if self.model not in ("fcn", "cnn"):
            options["padding_mode"] = self.padding_mode
            if self.st_pool:
                options["pool"] = self.st_pool
        return options

    def distortion_overrides(self) -> dict[str, Any]:
        """``distortion`` as keyword overrides of :func:`stn_jax.data.make_dataset` (ValueError if invalid)."""
        return parse_distortion_overrides(self.dataset, self.distortion)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; expected some of {sorted(names)}")
        return cls(**{k: v for k, v in values.items()})

    @classmethod
    def from_file(cls, path: str | pathlib.Path, **overrides: Any) -> TrainConfig:
        """Read a JSON (``.json``) or TOML (``.toml``) file of options, then apply `overrides`.

        A TOML file may hold the options at top level or under a ``[train]`` table.
        """
        return cls.from_dict({**load_config_file(path), **overrides})

    def validate(self, *, device_count: int | None = None) -> TrainConfig:
        """Check every option; returns self, raises ValueError naming the problem."""
        for name, choices in CHOICES.items():
            _choice(name, getattr(self, name), choices)
        if not isinstance(self.distortion, str):
            raise TypeError(f"distortion must be a string of key=value pairs, got {type(self.distortion).__name__}")
        self.distortion_overrides()
        if self.model == "2st-fcn" and self.dataset != "addition":
            raise ValueError(f"model '2st-fcn' needs dataset 'addition' (two input channels), got '{self.dataset}'")
        for name in ("steps", "batch_size", "eval_batch_size", "log_every", "checkpoint_every",
                     "keep_checkpoints", "decay_steps"):
            _positive_int(name, getattr(self, name))
        for name in ("eval_every", "warmup_steps", "validation_size", "seed", "st_pool", "fcn_width", "loc_downsample"):
            value = getattr(self, name)
            if name == "validation_size" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("momentum", "loc_lr_mult", "clip_norm", "weight_decay", "identity_penalty", "decay_factor"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be < 1, got {self.momentum!r}")
        if device_count is not None:
            check_divisible("batch_size", self.batch_size, device_count)
        return self


def check_divisible(name: str, batch_size: int, device_count: int) -> None:
    """Raise ValueError unless `batch_size` splits evenly over `device_count` devices."""
    if batch_size % device_count:
        lower = batch_size - batch_size % device_count
        raise ValueError(
            f"{name}={batch_size} does not divide evenly over {device_count} devices; "
            f"use a multiple of {device_count} (e.g. {max(lower, device_count)} or {lower + device_count})")


def load_config_file(path: str | pathlib.Path) -> dict[str, Any]:
    """Options from a ``.json`` or ``.toml`` file as a dict (``-`` in keys becomes ``_``)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    if path.suffix == ".json":
        values = json.loads(path.read_text())
    elif path.suffix == ".toml":
        values = tomllib.loads(path.read_text())
        values = values.get("train", values)
    else:
        raise ValueError(f"config file must end in .json or .toml, got {str(path)!r}")
    if not isinstance(values, dict):
        raise ValueError(f"config file {str(path)!r} must hold a table/object of options")
    return {k.replace("-", "_"): v for k, v in values.items()}


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
