"""MNIST sources and the paper's distorted datasets (R, RTS, P, E, TC, addition), generated on device.

>>> import jax
>>> from stn_jax import data
>>> mnist = data.load_mnist("sample")          # or "idx" / "tfds" / "download" / "auto"
>>> ds = data.make_dataset("rts", mnist)
>>> images, labels = ds.train_batch(jax.random.PRNGKey(0), 64)   # (64, 42, 42, 1), (64,)
"""

from stn_jax.data import batching
from stn_jax.data.batching import batch_sharding
from stn_jax.data.batching import iterate_batches
from stn_jax.data.batching import prefetch_to_device
from stn_jax.data.batching import shard_batch
from stn_jax.data.datasets import DATASETS
from stn_jax.data.datasets import TEST_SEED
from stn_jax.data.datasets import VALIDATION_SEED
from stn_jax.data.datasets import DistortedDataset
from stn_jax.data.datasets import generate_set
from stn_jax.data.datasets import make_dataset
from stn_jax.data.distortions import get_distortion, parse_overrides as parse_distortion_overrides
from stn_jax.data.download import DownloadError
from stn_jax.data.download import download_mnist
from stn_jax.data.idx import IDXError
from stn_jax.data.idx import read_idx
from stn_jax.data.idx import write_idx
from stn_jax.data.sources import MNIST
from stn_jax.data.sources import MNISTNotFoundError
from stn_jax.data.sources import load_mnist
from stn_jax.data.sources import prepare_tfds

__all__ = [
    "batching",
    "batch_sharding",
    "iterate_batches",
    "prefetch_to_device",
    "shard_batch",
    "DATASETS",
    "TEST_SEED",
    "VALIDATION_SEED",
    "DistortedDataset",
    "generate_set",
    "make_dataset",
    "get_distortion",
    "parse_distortion_overrides",
    "DownloadError",
    "download_mnist",
    "IDXError",
    "read_idx",
    "write_idx",
    "MNIST",
    "MNISTNotFoundError",
    "load_mnist",
    "prepare_tfds",
]
