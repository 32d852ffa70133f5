"""``stn-jax canonicalize`` on a real (1-step) training run of a zoo model, and the zoo path of
:class:`Canonicalizer` (identity-initialised transformers reproduce their input)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest
from _canonicalize_helpers import png_bytes, train_tiny_run

from stn_jax.canonicalize import OUTPUT_SCHEMA, Canonicalizer, canonicalize_batches, read_output
from stn_jax.cli import main
from stn_jax.models import create_model
from stn_jax.train import load_run

SHAPE = (28, 28, 1)


class _Blobs:
    """Tiny stand-in for the 'r' dataset (28x28x1, 10 classes): class c is a blob at column c."""

    input_shape = SHAPE
    num_classes = 10

    @staticmethod
    def _images(labels, key):
        yy, xx = jnp.meshgrid(jnp.arange(28), jnp.arange(28), indexing="ij")
        cx = 4.0 + 2.0 * labels.astype(jnp.float32)
        blob = jnp.exp(-((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - 14.0) ** 2) / 8.0)
        return jnp.clip(blob + 0.1 * jax.random.uniform(key, blob.shape), 0, 1)[..., None]

    def train_batch(self, key, batch_size):
        k1, k2 = jax.random.split(key)
        labels = jax.random.randint(k1, (batch_size,), 0, 10).astype(jnp.int32)
        return self._images(labels, k2), labels

    def test_set(self):
        labels = jnp.arange(16, dtype=jnp.int32) % 10
        return np.asarray(self._images(labels, jax.random.key(1)), np.float32), np.asarray(labels)

    validation_set = test_set


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run"), _Blobs(), steps=1, batch_size=16, source="test blobs")


def test_cli_on_trained_run_matches_python_api(workdir, tmp_path, capsys):
    imgs = (np.asarray(_Blobs().test_set()[0][..., 0]) * 255).round().astype(np.uint8)
    src = tmp_path / "src"
    src.mkdir()
    for i, im in enumerate(imgs[:10]):
        (src / f"{i}.png").write_bytes(png_bytes(im))
    (src / "bad.png").write_bytes(b"nope")
    out = tmp_path / "out"
    argv = ["canonicalize", "--workdir", str(workdir), "--input", str(src), "--output", str(out),
            "--batch-size", "4", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows_in"], summary["rows_written"], summary["rows_rejected"]) == (11, 10, 1)
    table = pq.read_table(out)
    assert table.schema.equals(OUTPUT_SCHEMA) and table.num_rows == 10
    rejects = read_output(out, rejects=True).to_pydict()
    assert rejects["source_id"] == ["bad.png"] and "undecodable" in rejects["reason"][0]

    run = load_run(workdir)
    canon = Canonicalizer.from_model(run.model, run.variables, input_shape=run.input_shape)
    batches = list(canonicalize_batches(canon, src, batch_size=4))
    d = read_output(out).to_pydict()
    np.testing.assert_allclose(np.concatenate([b.params for b in batches]), np.asarray(d["params"]),
                               rtol=1e-6, atol=1e-6)
    assert np.concatenate([b.predictions for b in batches]).tolist() == d["prediction"]
    assert np.concatenate([b.rows for b in batches]).tolist() == d["row"]

    # bad input / bad workdir: a clear error and exit code 2, nothing written
    bad = ["canonicalize", "--workdir", str(workdir), "--input", str(tmp_path / "missing.npz"),
           "--output", str(tmp_path / "o2"), "--no-progress"]
    assert main(bad) == 2 and "missing.npz" in capsys.readouterr().err
    bad[2] = str(tmp_path)
    assert main(bad) == 2 and "config.json" in capsys.readouterr().err

    # the output exists: refused without --resume, a no-op with it
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["resumed_from"] == 11 and again["rows_written"] == 10


@pytest.mark.parametrize("name, dataset, transform", [
    ("st-fcn", "r", "tps"), ("2st-fcn", "addition", "affine")])
def test_identity_initialised_zoo_model_reproduces_input(name, dataset, transform):
    from stn_jax.models import DATASET_SPECS

    model = create_model(name, dataset=dataset, transform=transform)
    shape = DATASET_SPECS[dataset].input_shape
    x = np.random.default_rng(0).random((3,) + tuple(shape), dtype=np.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    canon = Canonicalizer.from_model(model, variables, input_shape=shape, transformer_index=-1)
    assert canon.transform == transform
    out = canon.apply(x)
    assert out["probs"].shape == (3, DATASET_SPECS[dataset].num_classes)
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0, rtol=1e-5)
    if name != "2st-fcn":                     # one transformer on the whole input: identity
        np.testing.assert_allclose(out["warped"], x, atol=1e-5)
    with pytest.raises(ValueError, match="transformer_index 5"):
        Canonicalizer.from_model(model, variables, input_shape=shape, transformer_index=5)


def test_model_without_transformer_is_refused():
    model = create_model("fcn", dataset="r")
    x = np.zeros((1, 28, 28, 1), np.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))  # shapes suffice
    with pytest.raises(ValueError, match="0 spatial transformer"):
        Canonicalizer.from_model(model, variables, input_shape=(28, 28, 1))
