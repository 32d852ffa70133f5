"""Streaming image readers for bulk canonicalisation: a folder, an ``.npz`` array or Parquet.

Every reader presents its input as an ordered sequence of rows with a stable 0-based *row index*
(the order is a pure function of the input, so a resumed run sees the same order) and yields
:class:`RawBatch` objects of at most ``batch_size`` rows, starting at any row. Nothing is loaded
whole: a folder is listed (paths only) and files are read per batch; an ``.npz`` member is read
from the zip stream a batch of rows at a time; Parquet is read record batch by record batch, and
files / row groups before the start row are skipped from the metadata.

Decoding and resizing (:func:`decode_image`) happen after reading, so that a corrupt row becomes a
*reject* with a reason rather than an exception that stops the run.

Resize rule (documented in the README): the image is converted to the model's channel count
(1 channel: ITU-R 601 luma ``L = 0.299 R + 0.587 G + 0.114 B`` as computed by Pillow; 3
channels: RGB, a greyscale image is replicated); an alpha channel is composited onto black. If its
size differs from the model's (H, W), it is scaled with Pillow's bilinear filter (antialiased when
shrinking) so that it fits inside (H, W) with its aspect ratio preserved, and centred on a black
(zero) canvas ("letterbox"). An image that already has the model's size is used as is. Pixel
values: integer images are divided by 255 (uint16 by 65535); floating images must lie in [0, 1].
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""File name endings (case-insensitive) that :class:`FolderReader` picks up."""


class RejectError(ValueError):
    """A row that cannot be canonicalised; ``str(error)`` is the reason written to the rejects."""


@dataclasses.dataclass(frozen=True)
class RawBatch:
    """Undecoded rows ``start .. start + len(ids) - 1`` of an input.

    Attributes:
      start: row index of the first row.
      ids: source id of each row (folder: path relative to the folder; npz: ``"<key>[<i>]"``;
        Parquet: the id column's value, or ``"<file>#<row in file>"``).
      payloads: one per row: encoded image bytes (folder, Parquet), a numpy array (npz), ``None``
        for a missing value, or a :class:`RejectError` raised while reading that row.
    """
    start: int
    ids: list[str]
    payloads: list[Any]


class Reader:
    """Base class: an ordered, restartable stream of image rows."""

    kind: str = "reader"

    def __len__(self) -> int:  # number of rows
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """A JSON-able fingerprint of the input; a resume checks that it has not changed."""
        raise NotImplementedError

    def iter_batches(self, batch_size: int, *, start: int = 0) -> Iterator[RawBatch]:
        """Yield consecutive :class:`RawBatch` es of ``batch_size`` rows (the last may be shorter)
        beginning at row ``start``."""
        raise NotImplementedError

    def file_starts(self) -> list[int]:
        """Row index at which each multi-row input file begins, ascending, starting with 0
        (Parquet: one per file; a folder or an ``.npz``: ``[0]``). Distributed canonicalisation
        cuts its shards at these rows, so a shard never spans two Parquet files."""
        return [0]


def _check_batch(batch_size: int, start: int) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"start must be a non-negative integer; got {start!r}")


class RowsReader(Reader):
    """Rows already in memory (e.g. one Ray Data batch), indexed 0 .. n-1.

    Args:
      ids: source id per row.
      payloads: one per row, as in :class:`RawBatch` (encoded bytes, a numpy array, ``None`` or
        a :class:`RejectError`).
    """

    kind = "rows"

    def __init__(self, ids: Sequence[str], payloads: Sequence[Any]):
        if len(ids) != len(payloads):
            raise ValueError(f"ids ({len(ids)}) and payloads ({len(payloads)}) differ in length")
        self.ids, self.payloads = list(ids), list(payloads)

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": len(self)}

    def iter_batches(self, batch_size: int, *, start: int = 0) -> Iterator[RawBatch]:
        _check_batch(batch_size, start)
        for lo in range(start, len(self.ids), batch_size):
            yield RawBatch(lo, self.ids[lo:lo + batch_size], self.payloads[lo:lo + batch_size])


class FolderReader(Reader):
    """Every image file under ``root`` (recursively), sorted by relative path.

    Args:
      root: a directory.
      extensions: file endings to include (case-insensitive).
    """

    kind = "folder"

    def __init__(self, root: str | os.PathLike, *, extensions: Sequence[str] = IMAGE_EXTENSIONS):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"input folder {self.root!r} does not exist or is not a directory")
        exts = tuple(e.lower() for e in extensions)
        paths = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in filenames:
                if name.lower().endswith(exts):
                    paths.append(os.path.relpath(os.path.join(dirpath, name), self.root))
        self.paths = sorted(p.replace(os.sep, "/") for p in paths)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": os.path.abspath(self.root), "rows": len(self)}

    def iter_batches(self, batch_size: int, *, start: int = 0) -> Iterator[RawBatch]:
        _check_batch(batch_size, start)
        for lo in range(start, len(self.paths), batch_size):
            ids = self.paths[lo:lo + batch_size]
            payloads: list[Any] = []
            for rel in ids:
                try:
                    with open(os.path.join(self.root, rel), "rb") as f:
                        payloads.append(f.read())
                except OSError as e:
                    payloads.append(RejectError(f"unreadable file: {e.strerror or e}"))
            yield RawBatch(lo, list(ids), payloads)


class NpzReader(Reader):
    """Rows of one array (default ``images``) of an ``.npz`` file, streamed from the zip member.

    The array must have shape (N, H, W) or (N, H, W, C); any integer or floating dtype. Rows are
    read ``batch_size`` at a time from the (possibly compressed) member, never the whole array.
    """

    kind = "npz"

    def __init__(self, path: str | os.PathLike, *, key: str = "images"):
        self.path = os.fspath(path)
        self.key = key
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = zf.namelist()
                member = f"{key}.npy"
                if member not in names:
                    found = sorted(n[:-4] for n in names if n.endswith(".npy"))
                    raise ValueError(f"{self.path!r} has no array {key!r}; arrays: {found}")
                with zf.open(member) as f:
                    self.shape, self.fortran_order, self.dtype, _ = self._header(f)
        except (zipfile.BadZipFile, FileNotFoundError, IsADirectoryError) as e:
            raise ValueError(f"{self.path!r} is not a readable .npz file: {e}") from e
        if len(self.shape) not in (3, 4):
            raise ValueError(f"array {key!r} must have shape (N, H, W) or (N, H, W, C); got {self.shape}")
        if self.fortran_order:
            raise ValueError(f"array {key!r} is Fortran-ordered; save it C-ordered to stream it")
        if self.dtype.hasobject:
            raise ValueError(f"array {key!r} holds Python objects; expected a numeric image array")

    @staticmethod
    def _header(f):
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        return shape, fortran, dtype, version

    def __len__(self) -> int:
        return int(self.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": os.path.abspath(self.path), "key": self.key,
                "shape": list(self.shape), "dtype": str(self.dtype)}

    def iter_batches(self, batch_size: int, *, start: int = 0) -> Iterator[RawBatch]:
        _check_batch(batch_size, start)
        row_shape = tuple(self.shape[1:])
        row_bytes = int(np.prod(row_shape)) * self.dtype.itemsize
        with zipfile.ZipFile(self.path) as zf, zf.open(f"{self.key}.npy") as f:
            self._header(f)
            if start:
                f.seek(f.tell() + start * row_bytes)  # zip streams decompress forward; no full load
            for lo in range(start, len(self), batch_size):
                n = min(batch_size, len(self) - lo)
                buf = f.read(n * row_bytes)
                if len(buf) != n * row_bytes:
                    got = len(buf) // max(row_bytes, 1)
                    arr = np.frombuffer(buf[:got * row_bytes], self.dtype).reshape((got,) + row_shape)
                    payloads = list(arr) + [RejectError("truncated array data")] * (n - got)
                else:
                    payloads = list(np.frombuffer(buf, self.dtype).reshape((n,) + row_shape))
                yield RawBatch(lo, [f"{self.key}[{i}]" for i in range(lo, lo + n)], payloads)


class ParquetReader(Reader):
    """Rows of a Parquet file, or of every ``*.parquet`` file under a directory (sorted by path).

    Args:
      path: a ``.parquet`` file or a directory.
      image_column: column with the encoded image: ``binary`` / ``large_binary`` bytes, or a
        struct with a ``bytes`` field (the Hugging Face ``datasets`` Image layout).
      id_column: optional column used as the source id (cast to string); default
        ``"<file relative to path>#<row in file>"``.
    """

    kind = "parquet"

    def __init__(self, path: str | os.PathLike, *, image_column: str = "image",
                 id_column: str | None = None):
        import pyarrow.parquet as pq

        self.path = os.fspath(path)
        self.image_column, self.id_column = image_column, id_column
        if os.path.isdir(self.path):
            files = []
            for dirpath, dirnames, filenames in os.walk(self.path):
                dirnames.sort()
                files += [os.path.join(dirpath, n) for n in filenames
                          if n.endswith(".parquet") and not n.startswith((".", "_"))]
            self.files = sorted(files)
            if not self.files:
                raise ValueError(f"no .parquet files under {self.path!r}")
        elif os.path.isfile(self.path):
            self.files = [self.path]
        else:
            raise ValueError(f"Parquet input {self.path!r} does not exist")
        self._rows: list[int] = []
        self._row_groups: list[list[int]] = []
        for file in self.files:
            meta = pq.ParquetFile(file)
            names = meta.schema_arrow.names
            for col in (image_column, id_column):
                if col is not None and col not in names:
                    raise ValueError(f"{file!r} has no column {col!r}; columns: {names}")
            self._rows.append(meta.metadata.num_rows)
            self._row_groups.append([meta.metadata.row_group(i).num_rows
                                     for i in range(meta.metadata.num_row_groups)])

    def __len__(self) -> int:
        return int(sum(self._rows))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": os.path.abspath(self.path), "image_column": self.image_column,
                "id_column": self.id_column, "files": [os.path.relpath(f, os.path.dirname(
                    os.path.abspath(self.path)) if len(self.files) == 1 else self.path)
                    for f in self.files], "rows": len(self)}

    def file_starts(self) -> list[int]:
        return [int(v) for v in np.cumsum([0] + self._rows[:-1])]

    def _file_id(self, file: str) -> str:
        return os.path.basename(file) if len(self.files) == 1 and file == self.path else \
            os.path.relpath(file, self.path).replace(os.sep, "/")

    def _iter_rows(self, batch_size: int, start: int) -> Iterator[tuple[list[str], list[Any]]]:
        import pyarrow.parquet as pq

        offset = 0
        for file, nrows, groups in zip(self.files, self._rows, self._row_groups, strict=False):
            if offset + nrows <= start:          # whole file already done
                offset += nrows
                continue
            skip = max(start - offset, 0)
            first_group, group_start = 0, 0
            while first_group < len(groups) and group_start + groups[first_group] <= skip:
                group_start += groups[first_group]
                first_group += 1
            row = group_start
            pf = pq.ParquetFile(file)
            cols = [self.image_column] + ([self.id_column] if self.id_column else [])
            fid = self._file_id(file)
            for rb in pf.iter_batches(batch_size=batch_size, columns=cols,
                                      row_groups=list(range(first_group, len(groups)))):
                images = rb.column(self.image_column)
                ids = (rb.column(self.id_column).cast("string").to_pylist() if self.id_column
                       else [f"{fid}#{i}" for i in range(row, row + rb.num_rows)])
                payloads = _binary_values(images)
                lo = max(skip - row, 0)
                row += rb.num_rows
                if lo < rb.num_rows:
                    yield ids[lo:], payloads[lo:]
            offset += nrows

    def iter_batches(self, batch_size: int, *, start: int = 0) -> Iterator[RawBatch]:
        _check_batch(batch_size, start)
        ids: list[str] = []
        payloads: list[Any] = []
        lo = start
        for more_ids, more_payloads in self._iter_rows(batch_size, start):
            ids += more_ids
            payloads += more_payloads
            while len(ids) >= batch_size:
                yield RawBatch(lo, ids[:batch_size], payloads[:batch_size])
                ids, payloads, lo = ids[batch_size:], payloads[batch_size:], lo + batch_size
        if ids:
            yield RawBatch(lo, ids, payloads)


def _binary_values(column) -> list[Any]:
    """Python bytes (or None) per row of a binary column or a struct column with ``bytes``."""
    import pyarrow as pa

    if pa.types.is_struct(column.type):
        if column.type.get_field_index("bytes") < 0:
            raise ValueError(f"image column is a struct without a 'bytes' field: {column.type}")
        column = column.field("bytes") if hasattr(column, "field") else column.flatten()[
            column.type.get_field_index("bytes")]
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
            or pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ValueError(f"image column must hold encoded image bytes (binary); got {column.type}")
    return [v if not isinstance(v, str) else v.encode("latin-1") for v in column.to_pylist()]


def open_reader(path: str | os.PathLike, *, format: str = "auto", image_column: str = "image",
                id_column: str | None = None, npz_key: str = "images") -> Reader:
    """Open ``path`` with the right reader.

    Args:
      path: a folder of images, an ``.npz`` file, a ``.parquet`` file, or a folder of Parquet files.
      format: ``"auto"`` (by extension; a folder holding ``.parquet`` files and no images is
        Parquet), ``"folder"``, ``"npz"`` or ``"parquet"``.
      image_column, id_column: Parquet columns (see :class:`ParquetReader`).
      npz_key: the array to read from an ``.npz``.
    """
    path = os.fspath(path)
    if format == "auto":
        if os.path.isdir(path):
            has_parquet = has_images = False
            for _, _, filenames in os.walk(path):
                for n in filenames:
                    has_parquet |= n.endswith(".parquet")
                    has_images |= n.lower().endswith(IMAGE_EXTENSIONS)
            format = "parquet" if has_parquet and not has_images else "folder"
        elif path.endswith(".npz"):
            format = "npz"
        elif path.endswith((".parquet", ".pq")):
            format = "parquet"
        else:
            raise ValueError(f"cannot tell the input format of {path!r}; pass format= "
                             f"'folder', 'npz' or 'parquet'")
    if format == "folder":
        return FolderReader(path)
    if format == "npz":
        return NpzReader(path, key=npz_key)
    if format == "parquet":
        return ParquetReader(path, image_column=image_column, id_column=id_column)
    raise ValueError(f"format must be 'auto', 'folder', 'npz' or 'parquet'; got {format!r}")


def decode_image(payload: Any, input_shape: Sequence[int]) -> np.ndarray:
    """Decode one row into a float32 (H, W, C) image in [0, 1] with the model's input shape.

    Args:
      payload: encoded image bytes, a numpy array (H, W) / (H, W, C), or ``None``.
      input_shape: the model's (H, W, C).

    Returns:
      float32 array of shape ``input_shape`` (see the module docstring for the resize rule).

    Raises:
      RejectError: missing, empty, undecodable, non-finite or out-of-range data, or a channel
        count that cannot be converted to ``C``.
    """
    from PIL import Image, UnidentifiedImageError

    h, w, c = (int(v) for v in input_shape)
    if isinstance(payload, RejectError):
        raise payload
    if payload is None:
        raise RejectError("missing image (null)")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        if len(payload) == 0:
            raise RejectError("empty image (0 bytes)")
        try:
            with Image.open(io.BytesIO(payload)) as im:
                im.load()
                return _from_pil(im, h, w, c)
        except RejectError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                Image.DecompressionBombError) as e:
            # the same reason on every run: no object addresses ("<_io.BytesIO object at 0x..>")
            message = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(e))
            raise RejectError(f"undecodable image: {type(e).__name__}: {message}") from None
    arr = np.asarray(payload)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise RejectError(f"array image must be (H, W) or (H, W, C); got shape {arr.shape}")
    if arr.size == 0:
        raise RejectError(f"empty image (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise RejectError("image holds NaN or infinite values")
        if arr.min() < 0.0 or arr.max() > 1.0:
            raise RejectError(f"float image values must lie in [0, 1]; got "
                              f"[{arr.min():.4g}, {arr.max():.4g}]")
    elif arr.dtype == np.uint8 or arr.dtype == np.bool_:
        arr = arr.astype(np.float32) / (1.0 if arr.dtype == np.bool_ else 255.0)
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise RejectError(f"integer image values must lie in [0, 255]; got [{arr.min()}, {arr.max()}]")
        arr = arr.astype(np.float32) / 255.0
    else:
        raise RejectError(f"unsupported image dtype {arr.dtype}")
    arr = _convert_channels(arr, c)
    if arr.shape[:2] == (h, w):
        return np.ascontiguousarray(arr, dtype=np.float32)
    return _letterbox(arr, h, w)


def _convert_channels(arr: np.ndarray, c: int) -> np.ndarray:
    have = arr.shape[2]
    if have == c:
        return arr
    if have in (2, 4) and c in (1, 3):        # grey+alpha / RGBA: composite on black
        arr = arr[:, :, :-1] * arr[:, :, -1:]
        have -= 1
    if have == c:
        return arr
    if have == 1 and c == 3:
        return np.repeat(arr, 3, axis=2)
    if have == 3 and c == 1:
        return (arr @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
    raise RejectError(f"image has {arr.shape[2]} channel(s); the model needs {c}")


def _letterbox(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear-resize (H0, W0, C) floats to fit in (h, w), aspect preserved, centred on zeros."""
    from PIL import Image

    h0, w0 = arr.shape[:2]
    scale = min(h / h0, w / w0)
    nh, nw = max(1, min(h, round(h0 * scale))), max(1, min(w, round(w0 * scale)))
    chans = [np.asarray(Image.fromarray(arr[:, :, k], mode="F").resize(
        (nw, nh), Image.Resampling.BILINEAR), np.float32) for k in range(arr.shape[2])]
    out = np.zeros((h, w, arr.shape[2]), np.float32)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top:top + nh, left:left + nw] = np.clip(np.stack(chans, axis=-1), 0.0, 1.0)
    return out


def _from_pil(im, h: int, w: int, c: int) -> np.ndarray:
    if im.width == 0 or im.height == 0:
        raise RejectError("empty image (zero size)")
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        arr = (arr / (65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0))[:, :, None]
        arr = np.clip(arr, 0, 1).astype(np.float32)
    elif mode == "F":
        arr = np.asarray(im, np.float32)[:, :, None]
        if not np.all(np.isfinite(arr)):
            raise RejectError("image holds NaN or infinite values")
        arr = np.clip(arr, 0.0, 1.0)
    else:
        if mode in ("L", "RGB", "LA", "RGBA"):
            target = mode
        elif mode == "1":
            target = "L"
        elif mode == "La":
            target = "LA"
        elif mode in ("RGBa", "PA") or (mode == "P" and "transparency" in im.info):
            target = "RGBA"
        else:                                  # P, CMYK, YCbCr, LAB, HSV, ...
            target = "RGB"
        arr = np.asarray(im.convert(target), np.float32) / 255.0
        if arr.ndim == 2:
            arr = arr[:, :, None]
    arr = _convert_channels(arr, c)
    if arr.shape[:2] == (h, w):
        return np.ascontiguousarray(arr, dtype=np.float32)
    return _letterbox(arr, h, w)
