"""Readers and decoding for bulk canonicalisation: folder / npz / Parquet streaming, resize rule,
rejects with reasons."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _canonicalize_helpers import png_bytes, random_digits
from hypothesis import given, settings
from hypothesis import strategies as st

from stn_jax.canonicalize import FolderReader, NpzReader, ParquetReader, RejectError, decode_image, open_reader


def _digits(n, h=8, w=8, seed=0):
    return random_digits(n, h, w, seed=seed)


def _collect(reader, batch_size, start=0):
    ids, payloads, starts = [], [], []
    for b in reader.iter_batches(batch_size, start=start):
        assert len(b.ids) == len(b.payloads) <= batch_size
        starts.append(b.start)
        ids += b.ids
        payloads += b.payloads
    return ids, payloads, starts


# --- decode_image -------------------------------------------------------------------------

def test_decode_png_same_size_is_exact():
    arr = _digits(1)[0]
    out = decode_image(png_bytes(arr), (8, 8, 1))
    assert out.dtype == np.float32 and out.shape == (8, 8, 1)
    np.testing.assert_array_equal(out[:, :, 0], arr.astype(np.float32) / 255.0)


def test_decode_rgb_to_grey_uses_itu601_luma():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    out = decode_image(png_bytes(rgb), (4, 4, 1))
    np.testing.assert_allclose(out, (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255.0, atol=1e-6)


def test_decode_grey_to_rgb_replicates():
    g = _digits(1, 5, 5)[0]
    out = decode_image(png_bytes(g), (5, 5, 3))
    for k in range(3):
        np.testing.assert_array_equal(out[:, :, k], g / np.float32(255.0))


def test_decode_rgba_composites_on_black():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = 0
    rgba[0, 0, 3] = 255
    out = decode_image(png_bytes(rgba), (2, 2, 3))
    np.testing.assert_allclose(out[0, 0], 1.0)
    np.testing.assert_allclose(out[1, 1], 0.0)


def test_letterbox_keeps_aspect_and_centres_on_black():
    tall = np.full((16, 8), 255, np.uint8)            # 2:1 -> fits as 8 x 4 inside 8 x 8
    out = decode_image(png_bytes(tall), (8, 8, 1))[:, :, 0]
    assert out.shape == (8, 8)
    np.testing.assert_allclose(out[:, 2:6], 1.0, atol=1e-6)
    np.testing.assert_array_equal(out[:, :2], 0.0)
    np.testing.assert_array_equal(out[:, 6:], 0.0)


def test_upscale_fills_canvas():
    out = decode_image(png_bytes(np.full((3, 3), 128, np.uint8)), (9, 9, 1))
    np.testing.assert_allclose(out, 128 / 255.0, atol=1e-5)


def test_decode_array_inputs():
    f = np.random.default_rng(1).random((6, 6), dtype=np.float32)
    np.testing.assert_array_equal(decode_image(f, (6, 6, 1))[:, :, 0], f)
    u16 = np.full((6, 6, 1), 65535, np.uint16)
    np.testing.assert_allclose(decode_image(u16, (6, 6, 1)), 1.0)
    two = np.random.default_rng(2).random((6, 6, 2), dtype=np.float32)
    np.testing.assert_array_equal(decode_image(two, (6, 6, 2)), two)


@pytest.mark.parametrize("payload, reason", [
    (None, "missing"),
    (b"", "empty"),
    (b"definitely not an image", "undecodable"),
    (png_bytes(np.zeros((8, 8), np.uint8))[:30], "undecodable"),          # truncated PNG
    (np.full((4, 4), np.nan, np.float32), "NaN"),
    (np.full((4, 4), 2.0, np.float32), "[0, 1]"),
    (np.zeros((0, 4), np.uint8), "empty"),
    (np.zeros((4, 4, 5), np.uint8), "channel"),
    (np.zeros((2, 4, 4, 1), np.uint8), "shape"),
    (RejectError("unreadable file: gone"), "unreadable"),
])
def test_decode_rejects_with_reason(payload, reason):
    with pytest.raises(RejectError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode_image(payload, (4, 4, 1))


def test_rgb_image_cannot_feed_two_channel_model():
    with pytest.raises(RejectError, match="channel"):
        decode_image(png_bytes(np.zeros((4, 4, 3), np.uint8)), (4, 4, 2))


# --- readers ------------------------------------------------------------------------------

def test_folder_reader_sorted_recursive_and_lazy(tmp_path):
    digits = _digits(5)
    names = ["b.png", "a.png", "sub/c.PNG", "sub/z/d.png", "e.jpg"]
    for name, d in zip(names, digits, strict=False):
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        (tmp_path / name).write_bytes(png_bytes(d))
    (tmp_path / "notes.txt").write_text("ignored")
    r = FolderReader(tmp_path)
    assert len(r) == 5
    ids, payloads, starts = _collect(r, 2)
    assert ids == sorted(names) and starts == [0, 2, 4]
    ids2, _, starts2 = _collect(r, 2, start=3)
    assert ids2 == sorted(names)[3:] and starts2 == [3]
    assert all(isinstance(p, bytes) for p in payloads)


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("shape, dtype", [((11, 5, 4), np.uint8), ((11, 5, 4, 2), np.float32)])
def test_npz_reader_streams_rows(tmp_path, compressed, shape, dtype):
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    data = (data * 255).astype(np.uint8) if dtype == np.uint8 else data
    path = tmp_path / "x.npz"
    (np.savez_compressed if compressed else np.savez)(path, images=data, labels=np.arange(11))
    r = NpzReader(path)
    assert len(r) == 11
    for bs, start in [(4, 0), (3, 5), (20, 10), (1, 11)]:
        ids, payloads, starts = _collect(r, bs, start=start)
        assert ids == [f"images[{i}]" for i in range(start, 11)]
        assert starts == list(range(start, 11, bs))
        if payloads:
            np.testing.assert_array_equal(np.stack(payloads), data[start:])


def test_npz_reader_errors(tmp_path):
    np.savez(tmp_path / "a.npz", pixels=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="no array 'images'.*pixels"):
        NpzReader(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", images=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        NpzReader(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .npz"):
        NpzReader(tmp_path / "c.npz")


def _write_parquet_dir(root, sizes, *, row_group_size=3, struct=False):
    """Files part-0.parquet.. with `sizes` rows each; returns all (id, bytes) in reader order."""
    os.makedirs(root, exist_ok=True)
    rows, k = [], 0
    for f, n in enumerate(sizes):
        pngs = [png_bytes(d) for d in _digits(n, 4, 4, seed=f)]
        keys = [f"key{k + i}" for i in range(n)]
        k += n
        col = (pa.array([{"bytes": b, "path": None} for b in pngs],
                        pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
               if struct else pa.array(pngs, pa.binary()))
        pq.write_table(pa.table({"key": keys, "img": col}), os.path.join(root, f"part-{f}.parquet"),
                       row_group_size=row_group_size)
        rows += list(zip(keys, pngs, [f"part-{f}.parquet#{i}" for i in range(n)], strict=False))
    return rows


@settings(max_examples=25, deadline=None)
@given(batch_size=st.integers(1, 9), start=st.integers(0, 14))
def test_parquet_reader_any_batch_and_start(tmp_path_factory, batch_size, start):
    root = tmp_path_factory.mktemp("pq")
    rows = _write_parquet_dir(root, [5, 0, 7, 2], row_group_size=3)
    r = ParquetReader(root, image_column="img")
    assert len(r) == 14
    ids, payloads, starts = _collect(r, batch_size, start=start)
    assert ids == [row[2] for row in rows][start:]
    assert payloads == [row[1] for row in rows][start:]
    assert starts == list(range(start, 14, batch_size))


def test_parquet_reader_id_column_and_struct_images(tmp_path):
    rows = _write_parquet_dir(tmp_path / "d", [4], struct=True)
    r = ParquetReader(tmp_path / "d" / "part-0.parquet", image_column="img", id_column="key")
    ids, payloads, _ = _collect(r, 3)
    assert ids == [row[0] for row in rows] and payloads == [row[1] for row in rows]


def test_parquet_reader_missing_column(tmp_path):
    _write_parquet_dir(tmp_path, [2])
    with pytest.raises(ValueError, match="no column 'image'"):
        ParquetReader(tmp_path)


def test_open_reader_detects_formats(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png_bytes(_digits(1)[0]))
    np.savez(tmp_path / "x.npz", images=_digits(2))
    _write_parquet_dir(tmp_path / "pq", [2])
    assert isinstance(open_reader(tmp_path / "imgs"), FolderReader)
    assert isinstance(open_reader(tmp_path / "x.npz"), NpzReader)
    assert isinstance(open_reader(tmp_path / "pq", image_column="img"), ParquetReader)
    with pytest.raises(ValueError, match="format"):
        open_reader(tmp_path / "x.unknown")
    with pytest.raises(ValueError, match="format must be"):
        open_reader(tmp_path / "x.npz", format="csv")
    with pytest.raises(ValueError, match="batch_size"):
        next(open_reader(tmp_path / "x.npz").iter_batches(0))
