"""The paper's model zoo (Flax Linen) and helpers for inspection and regularisation.

>>> from stn_jax import models
>>> model = models.create_model("st-cnn", dataset="rts", transform="affine")
>>> print(models.summary("st-cnn", "rts", "affine"))      # doctest: +SKIP
"""

from stn_jax.models.conv import CONV_IMPLS
from stn_jax.models.helpers import apply_and_inspect
from stn_jax.models.helpers import count_params
from stn_jax.models.helpers import inspect_transformers
from stn_jax.models.helpers import is_localization_path
from stn_jax.models.helpers import summary
from stn_jax.models.helpers import transform_penalty
from stn_jax.models.specs import DATASET_SPECS
from stn_jax.models.specs import DatasetSpec
from stn_jax.models.zoo import ARCHITECTURES
from stn_jax.models.zoo import CNN
from stn_jax.models.zoo import FCN
from stn_jax.models.zoo import MODEL_NAMES
from stn_jax.models.zoo import STClassifier
from stn_jax.models.zoo import budget
from stn_jax.models.zoo import create_model
from stn_jax.models.zoo import default_widths

__all__ = [
    "ARCHITECTURES",
    "CNN",
    "CONV_IMPLS",
    "DATASET_SPECS",
    "DatasetSpec",
    "FCN",
    "MODEL_NAMES",
    "STClassifier",
    "apply_and_inspect",
    "budget",
    "count_params",
    "create_model",
    "default_widths",
    "inspect_transformers",
    "is_localization_path",
    "summary",
    "transform_penalty",
]
