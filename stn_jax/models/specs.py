"""Dataset specifications the model zoo is sized for."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Input shape, class count and post-transformer pooling of one of the paper's datasets.

    Attributes:
      input_shape: ``(H, W, C)`` of the images (float32 in [0, 1], channels last).
      num_classes: number of classes.
      st_pool: average-pooling factor applied to the transformer's output before the
        classifier in ST models (2 for RTS, TC and addition, as in the paper; 1 = none).
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    st_pool: int = 1


DATASET_SPECS: dict[str, DatasetSpec] = {
    "r": DatasetSpec((28, 28, 1), 10),
    "p": DatasetSpec((28, 28, 1), 10),
    "e": DatasetSpec((28, 28, 1), 10),
    "rts": DatasetSpec((42, 42, 1), 10, st_pool=2),
    "tc": DatasetSpec((60, 60, 1), 10, st_pool=2),
    "addition": DatasetSpec((42, 42, 2), 19, st_pool=2),
}
"""Dataset name -> :class:`DatasetSpec` (the names of :data:`stn_jax.data.DATASETS`)."""


def get_spec(dataset: str) -> DatasetSpec:
    """Look up a dataset; ``ValueError`` naming the valid choices otherwise."""
    try:
        return DATASET_SPECS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of "
                         f"{tuple(DATASET_SPECS)}") from None
