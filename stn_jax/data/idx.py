"""Reading and writing the IDX format of the original MNIST files, with verification.

An IDX file is a big-endian header ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` uint32
dimension sizes, then the data in C order. MNIST uses dtype code ``0x08`` (unsigned byte):
images have magic number ``0x00000803`` (3-D: n, 28, 28) and labels ``0x00000801`` (1-D: n).
Files may be gzip-compressed (detected from the content, not the name).

Every problem raises :class:`IDXError` (a ``ValueError``) whose message names the file and
what is wrong: missing, not gzip though named ``.gz``, truncated, bad magic number, wrong
shape, label out of range, or an md5 that does not match the known MNIST content.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""Standard base names (without ``.gz``) of the four MNIST files, by role."""

MNIST_CONTENT_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
"""md5 of the *uncompressed* content of each standard MNIST file (gzip bytes vary by compressor)."""

MNIST_COUNTS: dict[str, int] = {
    "train-images-idx3-ubyte": 60000, "train-labels-idx1-ubyte": 60000,
    "t10k-images-idx3-ubyte": 10000, "t10k-labels-idx1-ubyte": 10000,
}

_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}


class IDXError(ValueError):
    """A missing, corrupt, truncated or unexpected IDX file (the message names the file)."""


def standard_name(path: str | os.PathLike) -> str | None:
    """The standard MNIST base name of ``path`` (``.gz`` stripped) or None if it is not one."""
    name = Path(path).name
    name = name[:-3] if name.endswith(".gz") else name
    return name if name in MNIST_CONTENT_MD5 else None


def read_bytes(path: str | os.PathLike) -> bytes:
    """The uncompressed bytes of ``path`` (gzip detected by its magic bytes ``1f 8b``)."""
    path = Path(path)
    if not path.is_file():
        raise IDXError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise IDXError(f"{path}: corrupt or truncated gzip stream ({err})") from None
    if path.name.endswith(".gz"):
        raise IDXError(f"{path}: named .gz but is not gzip data (first bytes {raw[:4].hex()})")
    return raw


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a numpy array (native byte order). ``name`` is used in errors."""
    if len(data) < 4:
        raise IDXError(f"{name}: truncated: {len(data)} bytes, shorter than the 4-byte IDX magic number")
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES or data[3] == 0:
        raise IDXError(f"{name}: bad magic number 0x{data[:4].hex()} (expected 0x000008NN for "
                       "unsigned-byte IDX data, e.g. 0x00000803 for images, 0x00000801 for labels)")
    dtype, ndim = _DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{name}: truncated header: {len(data)} bytes, need {header} for {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected:
        raise IDXError(f"{name}: truncated: {len(data)} bytes, the header declares shape {shape} "
                       f"which needs {expected}")
    if len(data) > expected:
        raise IDXError(f"{name}: {len(data) - expected} trailing bytes after the data of shape {shape}")
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, *, kind: str | None = None, verify_md5: bool = True) -> np.ndarray:
    """Read and verify one IDX file (gzipped or not).

    Args:
      path: the file.
      kind: ``"images"`` (expects uint8 (n, 28, 28)), ``"labels"`` (uint8 (n,), values 0-9)
        or None (no MNIST-specific checks).
      verify_md5: when the file has a standard MNIST name, compare the md5 of its uncompressed
        content with the known one (and the item count with 60,000 / 10,000).

    Returns:
      uint8 array (n, 28, 28) for images, int32 (n,) for labels, else the parsed array.

    Raises:
      IDXError: with the file name and the problem.
    """
    data = read_bytes(path)
    arr = parse_idx(data, name=str(path))
    if kind == "images":
        if data[2] != 0x08 or arr.ndim != 3 or arr.shape[1:] != (28, 28):
            raise IDXError(f"{path}: expected uint8 images of shape (n, 28, 28) (magic 0x00000803); "
                           f"got magic 0x{data[:4].hex()} and shape {arr.shape}")
    elif kind == "labels":
        if data[2] != 0x08 or arr.ndim != 1:
            raise IDXError(f"{path}: expected uint8 labels of shape (n,) (magic 0x00000801); "
                           f"got magic 0x{data[:4].hex()} and shape {arr.shape}")
        if arr.size and arr.max() > 9:
            raise IDXError(f"{path}: label out of range: found {int(arr.max())}, MNIST labels are 0-9")
        arr = arr.astype(np.int32)
    elif kind is not None:
        raise ValueError(f"kind must be 'images', 'labels' or None; got {kind!r}")
    std = standard_name(path)
    if verify_md5 and std is not None:
        if arr.shape[0] != MNIST_COUNTS[std]:
            raise IDXError(f"{path}: holds {arr.shape[0]} items, the standard {std} holds {MNIST_COUNTS[std]}")
        md5 = hashlib.md5(data).hexdigest()
        if md5 != MNIST_CONTENT_MD5[std]:
            raise IDXError(f"{path}: md5 of the uncompressed content is {md5}, expected "
                           f"{MNIST_CONTENT_MD5[std]} for {std} (corrupt or not the original file)")
    return arr


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed when ``compress`` (default: name ends in .gz).

    Integer arrays with values in 0-255 are written as unsigned bytes (MNIST's format).
    """
    path = Path(path)
    arr = np.asarray(array)
    if np.issubdtype(arr.dtype, np.integer) and (arr.size == 0 or (arr.min() >= 0 and arr.max() <= 255)):
        arr = arr.astype(np.uint8)
    native = arr.dtype.newbyteorder("=")
    if native not in _CODES:
        raise TypeError(f"cannot write dtype {arr.dtype} to IDX (supported: {sorted(map(str, _CODES))})")
    if not 1 <= arr.ndim <= 255:
        raise ValueError(f"IDX arrays need 1 to 255 dimensions; got {arr.ndim}")
    code = _CODES[native]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    data = header + arr.astype(_DTYPES[code]).tobytes()
    compress = path.name.endswith(".gz") if compress is None else compress
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def find_file(directory: str | os.PathLike, base: str) -> Path:
    """The file for ``base`` in ``directory``: ``base`` or ``base.gz`` (also the layout of
    torchvision's ``MNIST/raw``); raises :class:`IDXError` naming both if neither exists."""
    directory = Path(directory)
    candidates = [base, base + ".gz"]
    for c in candidates:
        if (directory / c).is_file():
            return directory / c
    raise IDXError(f"{directory / (base + '.gz')}: file not found (looked for {', '.join(candidates)} "
                   f"in {directory})")


def read_mnist_dir(directory: str | os.PathLike, *, verify_md5: bool = True) -> dict[str, np.ndarray]:
    """Read the four MNIST IDX files of ``directory`` -> dict with keys of :data:`MNIST_FILES`.

    Checks each file, then that image and label counts agree within each split.
    """
    out = {}
    for role, base in MNIST_FILES.items():
        out[role] = read_idx(find_file(directory, base), kind=role.split("_")[1], verify_md5=verify_md5)
    for split in ("train", "test"):
        n_img, n_lab = out[f"{split}_images"].shape[0], out[f"{split}_labels"].shape[0]
        if n_img != n_lab:
            raise IDXError(f"{directory}: {split} split has {n_img} images but {n_lab} labels")
    return out
