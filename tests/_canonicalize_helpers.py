"""Building blocks shared by the canonicalize tests: PNG bytes, random uint8 digits, a noise
stand-in for the 'r' dataset and a tiny real training run to canonicalise with."""

from __future__ import annotations

import io
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from stn_jax.train import TrainConfig, train


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    """`arr` (H, W[, C]) uint8 encoded as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def random_digits(n: int, h: int = 28, w: int = 28, *, seed: int = 0) -> np.ndarray:
    """(n, h, w) uniform random uint8 'digits'."""
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


class NoiseDataset:
    """A stand-in for the 'r' dataset (28x28x1, 10 classes): uniform noise, random labels."""

    input_shape = (28, 28, 1)
    num_classes = 10

    def train_batch(self, key, batch_size):
        k1, k2 = jax.random.split(key)
        return (jax.random.uniform(k1, (batch_size, *self.input_shape)),
                jax.random.randint(k2, (batch_size,), 0, 10).astype(jnp.int32))

    def test_set(self):
        images, labels = self.train_batch(jax.random.key(1), 8)
        return np.asarray(images), np.asarray(labels)

    validation_set = test_set


def train_tiny_run(workdir: Path, dataset, *, steps: int, batch_size: int, source: str) -> Path:
    """An `st-fcn` (affine) run on 'r'-shaped `dataset` for `steps` steps, checkpointed at its
    end, written to `workdir` (no progress bar, no figures)."""
    cfg = TrainConfig(dataset="r", model="st-fcn", transform="affine", steps=steps, batch_size=batch_size,
                      eval_batch_size=batch_size, eval_every=steps, log_every=1, checkpoint_every=steps,
                      workdir=str(workdir), progress=False, figures=False)
    train(cfg, dataset=dataset, data_info={"source": source})
    return workdir
