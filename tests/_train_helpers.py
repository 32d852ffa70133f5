"""Tiny model and dataset for the training-engine tests (no zoo, no MNIST)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.linen import SpatialTransformer

SHAPE = (8, 8, 1)
CLASSES = 3


class TinyLocalization(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.tanh(nn.Dense(4)(x.reshape((x.shape[0], -1))))


class TinySTN(nn.Module):
    """ST (attention) -> dense 16 -> dropout -> dense CLASSES."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = SpatialTransformer(transform="attention", localization=TinyLocalization(parent=None),
                               name="st")(x)
        x = nn.relu(nn.Dense(16)(x.reshape((x.shape[0], -1))))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(CLASSES)(x)


def is_loc(path: tuple[str, ...]) -> bool:
    return "localization" in path or "regression" in path


def _images_for(labels: jax.Array, key: jax.Array) -> jax.Array:
    """Class c lights up a 3x3 blob whose position depends on c, plus noise."""
    n = labels.shape[0]
    yy, xx = jnp.meshgrid(jnp.arange(8), jnp.arange(8), indexing="ij")
    cx = 1.5 + 2.5 * labels.astype(jnp.float32)
    blob = jnp.exp(-((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - 3.5) ** 2) / 2.0)
    noise = 0.1 * jax.random.uniform(key, (n, 8, 8))
    return jnp.clip(blob + noise, 0, 1)[..., None]


class TinyDataset:
    """Pure, jittable train_batch of the key; fixed test/validation sets."""

    name = "tiny"
    input_shape = SHAPE
    num_classes = CLASSES

    def train_batch(self, key, batch_size):
        k1, k2 = jax.random.split(key)
        labels = jax.random.randint(k1, (batch_size,), 0, CLASSES).astype(jnp.int32)
        return _images_for(labels, k2), labels

    def _fixed(self, seed, n):
        labels = jnp.arange(n, dtype=jnp.int32) % CLASSES
        return np.asarray(_images_for(labels, jax.random.PRNGKey(seed)), np.float32), np.asarray(labels)

    def test_set(self):
        return self._fixed(123, 21)

    def validation_set(self):
        return self._fixed(321, 13)
