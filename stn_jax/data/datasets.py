"""The paper's distorted-MNIST datasets: an on-device training stream and fixed eval sets.

:func:`make_dataset` splits the MNIST training digits into a training and a validation part
(a fixed permutation from :data:`SPLIT_SEED`, the same for every run) and returns a
:class:`DistortedDataset`:

- ``train_batch(key, batch_size)`` is a pure, jittable function of ``key``: it draws the digit
  indices from the training part (held on the device as uint8) and the distortion parameters
  from the key, then warps on the device. Calling it with ``fold_in(base_key, step)`` makes the
  data order a function of (seed, step): fresh distortions at every step (on-the-fly
  augmentation), and a resumed run sees exactly the same batches. With ``fixed_train=True`` one
  distorted copy of every training digit is generated once from ``seed`` (stored as uint8) and
  ``train_batch`` draws from that fixed set instead.
- ``test_set()`` distorts every MNIST test digit once, with keys from :data:`TEST_SEED`
  (independent of the training seed: every model is scored on the same images); cached.
- ``validation_set()`` likewise for the held-out training digits, with :data:`VALIDATION_SEED`.

Example ``i`` of an evaluation set uses digit ``i`` of its split and the key
``split(PRNGKey(seed), n)[i]``, so it does not depend on the chunking used to generate it.
Extra digits an example needs (TC clutter, the second addend) are drawn from the same split,
never equal to the example's own digit.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stn_jax.data import distortions as D
from stn_jax.data.sources import MNIST

DATASETS = ("r", "rts", "p", "e", "tc", "addition")
"""Dataset names accepted by :func:`make_dataset`."""

SPLIT_SEED = 1506_02025
"""Seed of the fixed permutation that carves the validation digits out of the training digits."""
TEST_SEED = 2015_0605
"""Seed of the test-set distortions (independent of any training seed)."""
VALIDATION_SEED = 2015_0606
"""Seed of the validation-set distortions."""
DEFAULT_VALIDATION_SIZE = 5000
"""Held-out training digits for full MNIST; smaller sources hold out 10% instead."""
_CHUNK = 1024


def _example(distortion: D.Distortion, key: jax.Array, index: jax.Array, images: jax.Array,
             labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One example: digit ``index`` of ``images`` (uint8 (n, 28, 28)) plus ``m - 1`` other
    digits drawn from ``key``, distorted with ``key`` -> (image (H, W, C), label int32)."""
    k_pick, k_dist = jax.random.split(key)
    n = images.shape[0]
    m = distortion.num_digits
    index = jnp.asarray(index, jnp.int32)
    if m > 1:
        others = (index + 1 + jax.random.randint(k_pick, (m - 1,), 0, n - 1)) % n
        index = jnp.concatenate([index[None], others])
    else:
        index = index[None]
    digits = images[index].astype(jnp.float32)[..., None] / 255.0
    return distortion(k_dist, digits), distortion.label(labels[index]).astype(jnp.int32)


def generate(distortion: D.Distortion, keys: jax.Array, indices: jax.Array, images: jax.Array,
             labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Vectorised :func:`_example`: keys (B,), indices (B,) -> images (B, H, W, C), labels (B,)."""
    return jax.vmap(functools.partial(_example, distortion), in_axes=(0, 0, None, None))(
        keys, indices, images, labels)


_generate_jit = jax.jit(generate, static_argnums=0)


def generate_set(distortion: D.Distortion, seed: int, images: np.ndarray, labels: np.ndarray, *,
                 chunk: int = _CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Distort every digit of a split once (example ``i``: digit ``i``, key ``split(PRNGKey(seed), n)[i]``).

    Returns host arrays: images float32 (n, H, W, C) in [0, 1], labels int32 (n,).
    Runs on the default device under jit, ``chunk`` examples at a time (padded, one compile).
    """
    n = images.shape[0]
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    dev_images, dev_labels = jnp.asarray(images), jnp.asarray(labels)
    out_images = np.empty((n, *distortion.output_shape), np.float32)
    out_labels = np.empty((n,), np.int32)
    chunk = max(1, min(chunk, n))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        idx = np.arange(start, start + chunk) % n
        imgs, labs = _generate_jit(distortion, keys[idx], jnp.asarray(idx, jnp.int32), dev_images, dev_labels)
        out_images[start:stop] = np.asarray(imgs)[: stop - start]
        out_labels[start:stop] = np.asarray(labs)[: stop - start]
    return out_images, out_labels


def _sample_fixed(key: jax.Array, batch_size: int, images: jax.Array, labels: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
    index = jax.random.randint(key, (batch_size,), 0, images.shape[0])
    return images[index].astype(jnp.float32) / 255.0, labels[index]


class DistortedDataset:
    """One of the paper's datasets over a given MNIST; build it with :func:`make_dataset`.

    Attributes:
      name: dataset name (one of :data:`DATASETS`).
      distortion: the distortion (a frozen dataclass holding its parameters).
      input_shape: ``(H, W, C)`` of the images.
      num_classes: 10, or 19 for addition.
      is_sample: True when built on the 5,000-digit sample.
      fixed_train: whether the training stream draws from one fixed distorted copy.
    """

    def __init__(self, name: str, distortion: D.Distortion, mnist: MNIST, *, seed: int = 0,
                 validation_size: int | None = None, fixed_train: bool = False) -> None:
        self.name = name
        self.distortion = distortion
        self.input_shape: tuple[int, int, int] = tuple(distortion.output_shape)
        self.num_classes: int = int(distortion.num_classes)
        self.is_sample = bool(mnist.is_sample)
        self.source = mnist.source
        self.seed = int(seed)
        self.fixed_train = bool(fixed_train)
        n = mnist.train_images.shape[0]
        if validation_size is None:
            validation_size = DEFAULT_VALIDATION_SIZE if n >= 10 * DEFAULT_VALIDATION_SIZE else n // 10
        if not 0 <= validation_size <= n - 2:
            raise ValueError(f"validation_size must be in [0, {n - 2}] for {n} training digits; "
                             f"got {validation_size}")
        self.validation_size = int(validation_size)
        perm = np.random.default_rng(SPLIT_SEED).permutation(n)
        val_idx, train_idx = np.sort(perm[:validation_size]), np.sort(perm[validation_size:])
        self._splits = {
            "train": (mnist.train_images[train_idx], mnist.train_labels[train_idx]),
            "validation": (mnist.train_images[val_idx], mnist.train_labels[val_idx]),
            "test": (mnist.test_images, mnist.test_labels),
        }
        self._train_images = jnp.asarray(self._splits["train"][0])
        self._train_labels = jnp.asarray(self._splits["train"][1])
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.fixed_train:
            imgs, labs = generate_set(distortion, self.seed, *self._splits["train"])
            self._fixed = (jnp.asarray(np.round(imgs * 255.0).astype(np.uint8)), jnp.asarray(labs))

    @property
    def num_train(self) -> int:
        """Training digits (the stream draws from these)."""
        return int(self._train_images.shape[0])

    def digits(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The undistorted host digits of ``split`` ("train", "validation" or "test"):
        uint8 (n, 28, 28) and int32 (n,)."""
        if split not in self._splits:
            raise ValueError(f"split must be one of {tuple(self._splits)}; got {split!r}")
        return self._splits[split]

    @property
    def train_arrays(self) -> tuple[jax.Array, jax.Array]:
        """Device arrays the stream draws from: uint8 images and int32 labels. With
        ``fixed_train`` these are the pre-distorted (n, H, W, C) images."""
        return self._fixed if self.fixed_train else (self._train_images, self._train_labels)

    def sample_train(self, arrays: tuple[jax.Array, jax.Array], key: jax.Array, batch_size: int
                     ) -> tuple[jax.Array, jax.Array]:
        """Like :meth:`train_batch` but with :attr:`train_arrays` passed explicitly (handy when
        the caller wants them as jit arguments rather than captured constants)."""
        images, labels = arrays
        if self.fixed_train:
            return _sample_fixed(key, batch_size, images, labels)
        k_index, k_dist = jax.random.split(key)
        index = jax.random.randint(k_index, (batch_size,), 0, images.shape[0])
        return generate(self.distortion, jax.random.split(k_dist, batch_size), index, images, labels)

    def train_batch(self, key: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
        """A training batch, a pure function of ``key`` (jittable; ``batch_size`` static).

        Inside a caller's ``jit`` the training digits are a captured constant, which JAX 0.10
        embeds in the compiled program (47 MB for full MNIST; compilation about twice as slow).
        A training step that wants them as an argument instead calls
        ``sample_train(arrays, key, batch_size)`` with ``arrays = dataset.train_arrays`` passed
        through its own jit arguments; the batches are identical.

        Returns:
          images float32 (B, H, W, C) in [0, 1] and labels int32 (B,).
        """
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive Python int; got {batch_size!r}")
        return self.sample_train(self.train_arrays, key, int(batch_size))

    def _eval_set(self, split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        if split not in self._cache:
            images, labels = self._splits[split]
            if images.shape[0] == 0:
                self._cache[split] = (np.zeros((0, *self.input_shape), np.float32), np.zeros((0,), np.int32))
            else:
                self._cache[split] = generate_set(self.distortion, seed, images, labels)
        return self._cache[split]

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The test set: every MNIST test digit distorted once from :data:`TEST_SEED`.

        Returns host arrays images float32 (N, H, W, C) in [0, 1], labels int32 (N,); cached.
        """
        return self._eval_set("test", TEST_SEED)

    def validation_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out training digits distorted once from :data:`VALIDATION_SEED` (cached)."""
        return self._eval_set("validation", VALIDATION_SEED)

    def __repr__(self) -> str:
        return (f"DistortedDataset({self.name!r}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, train={self.num_train}, "
                f"validation={self.validation_size}, source={self.source!r}, is_sample={self.is_sample})")


def make_dataset(name: str, mnist: MNIST, *, seed: int = 0, validation_size: int | None = None,
                 fixed_train: bool = False, **overrides: Any) -> DistortedDataset:
    """Build dataset ``name`` (one of :data:`DATASETS`) over ``mnist``.

    Args:
      name: ``"r"``, ``"rts"``, ``"p"``, ``"e"``, ``"tc"`` or ``"addition"``.
      mnist: the digits (:func:`stn_jax.data.load_mnist`).
      seed: seed of the fixed training set (``fixed_train``); the on-the-fly stream takes its
        randomness from the key given to ``train_batch``.
      validation_size: training digits held out for validation (default 5,000 for full MNIST,
        10% of smaller sources, e.g. 400 of the sample's 4,000).
      fixed_train: draw training batches from one pre-generated distorted copy of the training digits.
      **overrides: distortion parameters (fields of the classes in :mod:`stn_jax.data.distortions`,
        e.g. ``max_angle=30`` or ``canvas=50``).

    Raises:
      ValueError: unknown name or option, or a validation size that does not fit.
    """
    if not isinstance(mnist, MNIST):
        raise TypeError(f"mnist must be a stn_jax.data.MNIST (from load_mnist); got {type(mnist).__name__}")
    distortion = D.get_distortion(name, **overrides)
    return DistortedDataset(name, distortion, mnist, seed=seed, validation_size=validation_size,
                            fixed_train=fixed_train)

