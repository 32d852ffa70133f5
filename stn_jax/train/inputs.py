"""The model and the dataset a :class:`~stn_jax.train.TrainConfig` names.

:func:`load_dataset` is the one place the training engine reads MNIST: :func:`train` and
:func:`evaluate` both build their dataset with it, so a run is always re-scored on the
images it was trained for.
"""

from __future__ import annotations

from typing import Any

from stn_jax import data
from stn_jax.models import create_model
from stn_jax.train.config import TrainConfig


def build_model(config: TrainConfig) -> Any:
    """The zoo model of `config` (:func:`stn_jax.models.create_model`), an unbound Linen module."""
    return create_model(config.model, dataset=config.dataset, **config.model_options())


def load_dataset(config: TrainConfig, *, data_dir: str | None = None) -> tuple[data.DistortedDataset, data.MNIST]:
    """The distorted-MNIST dataset of `config` and the MNIST digits it was built from.

    Args:
      config: reads ``dataset``, ``data_source``, ``data_dir``, ``seed``, ``validation_size``,
        ``fixed_train`` and ``distortion``.
      data_dir: IDX directory to use instead of ``config.data_dir`` (e.g. the same files on
        another machine). Either directory turns the ``"auto"`` source into ``"idx"``.

    Returns:
      ``(dataset, mnist)``: :func:`stn_jax.data.make_dataset` over
      :func:`stn_jax.data.load_mnist`.
    """
    directory = data_dir or config.data_dir
    source = config.data_source
    if source == "auto" and directory:
        source = "idx"
    mnist = data.load_mnist(source, data_dir=directory)
    dataset = data.make_dataset(config.dataset, mnist, seed=config.seed,
                                validation_size=config.validation_size, fixed_train=config.fixed_train,
                                **config.distortion_overrides())
    return dataset, mnist


def resolve_inputs(config: TrainConfig, *, model: Any = None, dataset: Any = None,
                   data_info: dict[str, Any] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """The model, dataset and data provenance of a training run.

    A `model` or `dataset` given by the caller is used as is (`data_info` then describes the
    dataset); otherwise they come from :func:`build_model` and :func:`load_dataset`.

    Returns:
      ``(model, dataset, info)``; `info` (recorded in results.json and checkpoints) holds
      ``source``, ``is_sample``, ``dataset`` and, for a loaded MNIST, ``train_digits`` and
      ``test_digits``.
    """
    if model is None:
        model = build_model(config)
    if dataset is None:
        dataset, mnist = load_dataset(config)
        data_info = {"source": mnist.source, "is_sample": bool(mnist.is_sample),
                     "train_digits": int(len(mnist.train_labels)), "test_digits": int(len(mnist.test_labels))}
    info = {"source": "custom", "is_sample": False}
    info.update(data_info or {})
    info["dataset"] = getattr(dataset, "name", config.dataset)
    return model, dataset, info
