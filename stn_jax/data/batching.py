"""Host batches -> device batches sharded along the mesh's batch axis, with prefetching.

The on-device stream (:meth:`stn_jax.data.DistortedDataset.train_batch`) needs none of this:
it generates batches inside the training step. These helpers serve host-side data (the fixed
evaluation sets, exported arrays, user data): :func:`shard_batch` places one batch and
:func:`prefetch_to_device` keeps ``size`` batches in flight so the accelerator never waits on
Python (``jax.device_put`` is asynchronous; the next transfers start while a step runs).
:func:`batch_sharding` (from :mod:`stn_jax.sharding`) gives the sharding they expect.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from stn_jax.sharding import batch_sharding

__all__ = ["batch_sharding", "iterate_batches", "prefetch_to_device", "shard_batch"]


def shard_batch(batch: Any, sharding: jax.sharding.Sharding) -> Any:
    """Put every array of the pytree ``batch`` on the devices of ``sharding``.

    Raises:
      ValueError: a leaf's batch size does not divide over the devices of the batch axis.
    """
    if isinstance(sharding, NamedSharding) and sharding.spec and sharding.spec[0] is not None:
        axes = sharding.spec[0] if isinstance(sharding.spec[0], tuple) else (sharding.spec[0],)
        shards = int(np.prod([sharding.mesh.shape[a] for a in axes]))
        for leaf in jax.tree_util.tree_leaves(batch):
            if np.ndim(leaf) == 0 or np.shape(leaf)[0] % shards:
                raise ValueError(f"batch size {np.shape(leaf)[:1]} does not divide over {shards} "
                                 f"devices of mesh axis {sharding.spec[0]!r}")
    return jax.device_put(batch, sharding)


def prefetch_to_device(batches: Iterable[Any], sharding: jax.sharding.Sharding, *,
                       size: int = 2) -> Iterator[Any]:
    """Iterate over ``batches`` (host pytrees) placed with :func:`shard_batch`, ``size`` ahead."""
    if size < 1:
        raise ValueError(f"size must be >= 1; got {size}")
    queue: collections.deque = collections.deque()
    it = iter(batches)
    for batch in itertools.islice(it, size):
        queue.append(shard_batch(batch, sharding))
    while queue:
        yield queue.popleft()
        for batch in itertools.islice(it, 1):
            queue.append(shard_batch(batch, sharding))


def iterate_batches(arrays: tuple[np.ndarray, ...], batch_size: int, *, drop_remainder: bool = False,
                    pad_to_multiple: int = 1) -> Iterator[tuple[np.ndarray, ...]]:
    """Consecutive host batches of equal-length ``arrays`` (in order, for evaluation).

    The last batch is dropped (``drop_remainder``) or padded by repeating its last row up to a
    multiple of ``pad_to_multiple`` (so it divides over devices); each yielded tuple ends with
    a bool mask (B,) marking the real rows.
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays must share their length; got {[len(a) for a in arrays]}")
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if drop_remainder and stop - start < batch_size:
            return
        count = stop - start
        target = -(-count // pad_to_multiple) * pad_to_multiple
        idx = np.minimum(np.arange(start, start + target), stop - 1)
        yield (*(a[idx] for a in arrays), np.arange(target) < count)
