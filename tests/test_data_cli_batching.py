"""`stn-jax data` (preview + export on tiny IDX data) and the sharding/prefetch helpers."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from stn_jax import data
from stn_jax.cli import main as cli_main
from stn_jax.data import idx


def _tiny_dir(tmp_path, n_train=20, n_test=6):
    rng = np.random.default_rng(0)
    d = tmp_path / "mnist"
    d.mkdir()
    for role, base in idx.MNIST_FILES.items():
        n = n_train if role.startswith("train") else n_test
        arr = (rng.integers(0, 256, (n, 28, 28)) if role.endswith("images") else np.arange(n) % 10)
        idx.write_idx(d / base, arr.astype(np.uint8))
    return d


def test_cli_preview_and_export(tmp_path):
    d = _tiny_dir(tmp_path)
    out_png, out_npz = tmp_path / "p.png", tmp_path / "x.npz"
    rc = cli_main(["data", "--dataset", "addition", "--data-dir", str(d), "--no-md5", "--preview", str(out_png),
                   "--export", str(out_npz), "--num", "4", "--option", "max_angle=10"])
    assert rc == 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    z = np.load(out_npz)
    assert z["images"].shape == (6, 42, 42, 2) and z["images"].dtype == np.float32
    assert z["labels"].dtype == np.int32 and z["labels"].max() <= 18
    meta = json.loads(str(z["metadata"]))
    assert meta["dataset"] == "addition" and meta["distortion"]["max_angle"] == 10
    assert meta["seed"] == data.TEST_SEED and meta["is_sample"] is False


def test_cli_rejects_bad_option(capsys):
    with pytest.raises(SystemExit):
        cli_main(["data", "--dataset", "rts", "--option", "novalue"])
    assert "NAME=VALUE" in capsys.readouterr().err


def test_shard_and_prefetch_over_mesh():
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    sharding = data.batch_sharding(mesh)
    assert sharding.spec == PartitionSpec("data")
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    batches = [(x + i, np.arange(8) + i) for i in range(5)]
    got = list(data.prefetch_to_device(iter(batches), sharding, size=2))
    assert len(got) == 5
    for i, (a, b) in enumerate(got):
        assert len(a.sharding.device_set) == 4 and a.sharding.spec == PartitionSpec("data")
        np.testing.assert_array_equal(np.asarray(a), x + i)
        np.testing.assert_array_equal(np.asarray(b), np.arange(8) + i)
    with pytest.raises(ValueError, match="does not divide over 4 devices"):
        data.shard_batch(np.zeros((6, 2)), sharding)
    with pytest.raises(ValueError, match="no batch axis"):
        data.batch_sharding(mesh, axis="batch")


def test_iterate_batches_pads_and_masks():
    a, b = np.arange(10), np.arange(10) * 2
    out = list(data.iterate_batches((a, b), 4, pad_to_multiple=4))
    assert [o[0].tolist() for o in out] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]
    assert out[-1][2].tolist() == [True, True, False, False]
    assert len(list(data.iterate_batches((a, b), 4, drop_remainder=True))) == 2
