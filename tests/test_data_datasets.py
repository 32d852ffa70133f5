"""Datasets: train_batch shapes/determinism/range, labels, fixed test sets, splits, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stn_jax import data
from stn_jax.data import distortions as D

SHAPES = {"r": (28, 28, 1), "rts": (42, 42, 1), "p": (28, 28, 1), "e": (28, 28, 1),
          "tc": (60, 60, 1), "addition": (42, 42, 2)}


def _tiny_mnist(n_train: int = 40, n_test: int = 12) -> data.MNIST:
    """Random 'digits' whose ink lies in the central 20x20 box, like MNIST's."""
    rng = np.random.default_rng(0)

    def digits(n):
        im = np.zeros((n, 28, 28), np.uint8)
        im[:, 4:24, 4:24] = rng.integers(0, 256, (n, 20, 20))
        return im

    return data.MNIST(digits(n_train), (np.arange(n_train) % 10).astype(np.int32),
                      digits(n_test), (np.arange(n_test) % 10).astype(np.int32), source="idx")


@pytest.fixture(scope="module")
def mnist():
    return _tiny_mnist()


@pytest.mark.parametrize("name", data.DATASETS)
def test_train_batch_shapes_range_determinism(mnist, name):
    ds = data.make_dataset(name, mnist)
    assert ds.input_shape == SHAPES[name]
    assert ds.num_classes == (19 if name == "addition" else 10)
    fn = jax.jit(ds.train_batch, static_argnums=1)
    key = jax.random.fold_in(jax.random.PRNGKey(3), 7)
    x, y = fn(key, 5)
    assert x.shape == (5, *SHAPES[name]) and x.dtype == jnp.float32
    assert y.shape == (5,) and y.dtype == jnp.int32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.1
    x2, y2 = fn(key, 5)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x2))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y2))
    x3, _ = fn(jax.random.fold_in(jax.random.PRNGKey(3), 8), 5)
    assert not np.array_equal(np.asarray(x), np.asarray(x3))


def test_addition_labels_are_sums(mnist):
    # Digits with constant ink = (label + 1) / 10 let us read each channel's label back.
    imgs = np.zeros_like(mnist.train_images)
    imgs[:, 4:24, 4:24] = ((mnist.train_labels + 1) * 25)[:, None, None]
    coded = data.MNIST(imgs, mnist.train_labels, mnist.test_images, mnist.test_labels, source="idx")
    ds = data.make_dataset("addition", coded, validation_size=0)
    x, y = jax.jit(ds.train_batch, static_argnums=1)(jax.random.PRNGKey(0), 16)
    read = np.round(np.asarray(x).max(axis=(1, 2)) * 255 / 25) - 1  # (16, 2) labels per channel
    np.testing.assert_array_equal(read.sum(-1).astype(int), np.asarray(y))
    assert int(y.max()) <= 18


def test_test_set_fixed_and_cached_validation_disjoint(mnist):
    a = data.make_dataset("rts", mnist, seed=0, validation_size=8)
    b = data.make_dataset("rts", mnist, seed=123, validation_size=8)
    xa, ya = a.test_set()
    xb, yb = b.test_set()
    assert xa.shape == (12, 42, 42, 1) and xa.dtype == np.float32 and ya.dtype == np.int32
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, mnist.test_labels)
    assert a.test_set()[0] is xa
    xv, yv = a.validation_set()
    assert xv.shape == (8, 42, 42, 1) and a.num_train == 32
    # Chunking does not change the images.
    x_small, _ = data.generate_set(a.distortion, data.TEST_SEED, mnist.test_images, mnist.test_labels, chunk=5)
    np.testing.assert_allclose(x_small, xa, atol=1e-6)


def test_fixed_train_draws_from_fixed_set(mnist):
    ds = data.make_dataset("r", mnist, fixed_train=True, validation_size=0, seed=1)
    fixed = np.asarray(ds.train_arrays[0])
    assert fixed.shape == (40, 28, 28, 1) and fixed.dtype == np.uint8
    x, _ = jax.jit(ds.train_batch, static_argnums=1)(jax.random.PRNGKey(5), 6)
    pool = fixed.reshape(40, -1).astype(np.float32) / 255
    for img in np.asarray(x).reshape(6, -1):
        assert np.abs(pool - img).max(axis=1).min() < 1e-6


def test_bad_options_raise(mnist):
    with pytest.raises(ValueError, match="unknown dataset"):
        data.make_dataset("svhn", mnist)
    with pytest.raises(ValueError, match="unknown option"):
        data.make_dataset("rts", mnist, angle=3)
    with pytest.raises(ValueError, match="validation_size"):
        data.make_dataset("rts", mnist, validation_size=100)
    with pytest.raises(TypeError, match="MNIST"):
        data.make_dataset("rts", {"train_images": 1})
    ds = data.make_dataset("r", mnist)
    with pytest.raises(ValueError, match="batch_size"):
        ds.train_batch(jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="digits of shape"):
        jax.eval_shape(D.Rotation(), jax.random.PRNGKey(0), jnp.zeros((28, 28, 1)))


def test_train_batch_under_sharded_jit(mnist):
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    ds = data.make_dataset("r", mnist)
    fn = jax.jit(ds.train_batch, static_argnums=1, out_shardings=NamedSharding(mesh, P("data")))
    x, y = fn(jax.random.PRNGKey(0), 8)
    x0, y0 = jax.jit(ds.train_batch, static_argnums=1)(jax.random.PRNGKey(0), 8)
    np.testing.assert_allclose(np.asarray(x), np.asarray(x0), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y0))
    assert len(x.sharding.device_set) == 4


def test_train_config_distortion_reaches_every_split(mnist, monkeypatch):
    """``TrainConfig.distortion`` replaces the paper's parameters for training, validation and test data."""
    from stn_jax.train import TrainConfig, inputs

    monkeypatch.setattr(inputs.data, "load_mnist", lambda *a, **k: mnist)
    config = TrainConfig(dataset="rts", data_source="sample", distortion="max_angle=0,scale_range=1:1,translate=false")
    dataset, _ = inputs.load_dataset(config.validate())
    assert dataset.distortion == D.get_distortion("rts", max_angle=0.0, scale_range=(1.0, 1.0), translate=False)
    with pytest.raises(ValueError, match="unknown distortion option 'sigma' for dataset 'rts'"):
        TrainConfig(dataset="rts", distortion="sigma=3").validate()
    with pytest.raises(TypeError, match="distortion must be a string"):
        TrainConfig(dataset="rts", distortion={"sigma": 3}).validate()
