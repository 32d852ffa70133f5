"""tensorflow-datasets' ``mnist``: seeded from local digits and read back, without TensorFlow.

tensorflow-datasets (tfds) stores a prepared dataset as ``DATA_DIR/mnist/3.0.1/``: a
``dataset_info.json``, a ``features.json`` and one record file per split and shard. Its own
MNIST builder downloads the four IDX files and reads them with TensorFlow. This module needs
neither the network nor TensorFlow:

- :func:`prepare_tfds` writes the ``mnist`` dataset from digits already on the machine (for
  example an IDX directory), through tfds's own writer and its registered MNIST builder's
  ``DatasetInfo`` and features, in the ``array_record`` file format. Only the example source
  differs: PNG bytes of each digit (encoded losslessly with Pillow) instead of TensorFlow's
  PNG encoder. Any later ``tfds.builder("mnist", data_dir=...)`` reads the result as its own.
- :func:`read_tfds` reads a prepared ``mnist`` (through ``tfds.data_source``, or through
  ``tfds.load`` and TensorFlow for the ``tfrecord`` format) and returns the digits **in the
  order of the IDX files**. tfds writes a split's examples sorted by a salted md5 of each
  example's key (tfds's ``Hasher`` with the split name as salt; its MNIST builder keys the
  examples by their IDX index), a documented, version-stable order; :func:`read_tfds` inverts
  it, so ``load_mnist("tfds")`` and ``load_mnist("idx")`` return the same arrays.

tfds is imported lazily, inside the functions; ``pip install 'stn_jax[data]'`` installs it.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "test")
"""The splits of tfds's ``mnist``; the keys of :func:`read_tfds`'s result are ``<split>_images``
and ``<split>_labels``."""


class TFDSNotPreparedError(FileNotFoundError):
    """tfds has no prepared ``mnist`` in the data directory (and was told not to download it)."""


def import_tfds() -> Any:
    """``tensorflow_datasets``; raises ``ImportError`` naming the extra that installs it."""
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 (optional dependency, imported lazily)
    except ImportError as err:
        raise ImportError(f"tensorflow-datasets is not installed ({err}); "
                          "pip install 'stn_jax[data]'") from None
    return tfds


def _builder(data_dir: str | os.PathLike | None) -> Any:
    tfds = import_tfds()
    return tfds.builder("mnist", data_dir=None if data_dir is None else os.fspath(data_dir))


def is_prepared(data_dir: str | os.PathLike | None = None) -> bool:
    """Whether tfds's ``mnist`` is prepared in ``data_dir`` (default: tfds's own data directory,
    ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) and readable here. No network access.

    A dataset in the ``tfrecord`` format is readable only with TensorFlow installed.
    """
    builder = _builder(data_dir)
    if not _prepared(builder):
        return False
    return _is_array_record(builder) or _tensorflow_importable()


def _prepared(builder: Any) -> bool:
    # Looking for dataset_info.json first spares tfds's warning about a missing variant folder.
    return (Path(builder.data_dir) / "dataset_info.json").is_file() and builder.is_prepared()


def _is_array_record(builder: Any) -> bool:
    return str(getattr(builder.info.file_format, "value", builder.info.file_format)) == "array_record"


def _tensorflow_importable() -> bool:
    import importlib.util  # noqa: PLC0415
    return importlib.util.find_spec("tensorflow") is not None


def _png(image: np.ndarray) -> bytes:
    """Lossless 8-bit grayscale PNG of a uint8 (28, 28) digit."""
    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(buffer, format="png")  # 2-D uint8: mode "L"
    return buffer.getvalue()


def _unpng(png: bytes) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image)


def _local_builder_class(tfds: Any) -> type:
    """A subclass of tfds's registered MNIST builder whose examples come from arrays in memory."""
    official = tfds.builder_cls("mnist")

    class MnistFromArrays(official, skip_registration=True):  # type: ignore[misc, valid-type]
        """tfds's ``mnist`` (same name, version, features and info) built from local digits."""

        name = "mnist"

        def __init__(self, *, arrays: Mapping[str, np.ndarray], **kwargs: Any) -> None:
            self._arrays = arrays
            super().__init__(**kwargs)

        def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict]]]:
            del dl_manager  # nothing to download
            return {split: self._generate_examples(self._arrays[f"{split}_images"],
                                                   self._arrays[f"{split}_labels"])
                    for split in SPLITS}

        def _generate_examples(self, images: np.ndarray, labels: np.ndarray  # type: ignore[override]
                               ) -> Iterator[tuple[int, dict]]:
            # Keyed by the IDX index, like tfds's own builder: the stored order is then the same.
            for index, (image, label) in enumerate(zip(images, labels, strict=True)):
                yield index, {"image": _png(image), "label": int(label)}

    return MnistFromArrays


def prepare_tfds(arrays: Mapping[str, np.ndarray], *, data_dir: str | os.PathLike | None = None) -> Path:
    """Write tfds's ``mnist`` into ``data_dir`` from the given digits; return the version directory.

    Args:
      arrays: ``train_images``, ``test_images`` (uint8 (n, 28, 28)) and ``train_labels``,
        ``test_labels`` (integers 0-9, shape (n,)), e.g. the fields of a :class:`~stn_jax.data.MNIST`
        or :func:`stn_jax.data.idx.read_mnist_dir`'s result.
      data_dir: the tfds data directory (default: tfds's own, ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``).

    Returns:
      ``data_dir/mnist/<version>`` (version of the installed tfds's MNIST builder, e.g. 3.0.1).

    Raises:
      ValueError: the arrays are not MNIST-shaped digits.
      FileExistsError: ``mnist`` is already prepared there (delete that directory to rebuild it).
      ImportError: tensorflow-datasets is not installed.
    """
    arrays = {k: np.asarray(arrays[k]) for k in ("train_images", "train_labels", "test_images", "test_labels")}
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"{split}_images must be uint8 (n, 28, 28); got {images.dtype} {images.shape}")
        if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer) or (
                labels.size and (labels.min() < 0 or labels.max() > 9)):
            raise ValueError(f"{split}_labels must be integers 0-9 of shape ({images.shape[0]},); "
                             f"got {labels.dtype} {labels.shape}")
    tfds = import_tfds()
    data_dir = None if data_dir is None else os.fspath(data_dir)
    if _prepared(existing := _builder(data_dir)):
        raise FileExistsError(f"tfds's mnist is already prepared in {existing.data_dir}")
    builder = _local_builder_class(tfds)(arrays=arrays, data_dir=data_dir, file_format="array_record")
    with tempfile.TemporaryDirectory(prefix="stn_jax_tfds_") as downloads:
        builder.download_and_prepare(download_dir=downloads,
                                     download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return Path(builder.data_dir)


def _idx_order(split: str, n: int) -> np.ndarray:
    """``order[p]`` = IDX index of the example that tfds stored at position ``p`` of ``split``."""
    from tensorflow_datasets.core import hashing  # noqa: PLC0415 (tfds's own key hash)

    hasher = hashing.Hasher(split)
    return np.asarray(sorted(range(n), key=hasher.hash_key), dtype=np.int64)


def read_tfds(data_dir: str | os.PathLike | None = None, *, download: bool = False) -> dict[str, np.ndarray]:
    """tfds's prepared ``mnist``, in IDX order.

    Args:
      data_dir: the tfds data directory (default: tfds's own).
      download: if ``mnist`` is not prepared, let tfds download and prepare it (tfds's MNIST
        builder needs TensorFlow and network access for that).

    Returns:
      dict with ``train_images``/``test_images`` uint8 (n, 28, 28) and ``train_labels``/
      ``test_labels`` int32 (n,), the examples in the order of the original IDX files.

    Raises:
      TFDSNotPreparedError: not prepared and ``download`` is False, or prepared in the
        ``tfrecord`` format and TensorFlow is not installed.
      ImportError: tensorflow-datasets is not installed.
    """
    tfds = import_tfds()
    builder = _builder(data_dir)
    if not _prepared(builder):
        seed = "seed it from IDX files with `stn-jax data --prepare-tfds --data-dir DIR`"
        if not download:
            raise TFDSNotPreparedError(f"tfds's mnist is not prepared in {builder.data_dir_root}; {seed}")
        if not _tensorflow_importable():
            raise TFDSNotPreparedError(f"tfds's mnist is not prepared in {builder.data_dir_root}, and tfds's "
                                       f"MNIST builder needs TensorFlow to download it (pip install "
                                       f"tensorflow-cpu); or {seed}")
        builder.download_and_prepare(file_format="array_record")
    array_record = _is_array_record(builder)
    if not array_record and not _tensorflow_importable():
        raise TFDSNotPreparedError(f"{builder.data_dir} holds tfds's mnist in the tfrecord format, which "
                                   "needs TensorFlow to read (pip install tensorflow-cpu)")
    out = {}
    for split in SPLITS:
        if array_record:
            # The PNG bytes as stored, decoded here with Pillow (faster than tfds's per-record decoder).
            source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
            records = source.__getitems__(range(len(source)))
            images = np.stack([_unpng(r["image"]) for r in records]) if records else np.zeros((0, 28, 28))
            labels = np.asarray([r["label"] for r in records])
        else:
            ds = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
            images, labels = np.asarray(ds["image"]), np.asarray(ds["label"])
        images = images.reshape(-1, 28, 28).astype(np.uint8)
        labels = labels.astype(np.int32)
        if not builder.info.disable_shuffling:
            order = _idx_order(split, len(labels))
            images[order], labels[order] = images.copy(), labels.copy()
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out
