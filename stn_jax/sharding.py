"""The device mesh and shardings shared by training, data batching and canonicalisation.

Every data-parallel part of the library uses one 1-D mesh whose single axis is named
:data:`DATA_AXIS`. A batch is split along its leading axis over that mesh axis
(:func:`batch_sharding`); parameters and other state are replicated on every device
(:func:`replicated`). Under ``jax.jit`` with these shardings XLA inserts the collectives
(e.g. the gradient all-reduce), so a data-parallel computation equals the single-device one
on the global batch up to float summation order.

>>> import jax
>>> from stn_jax import sharding
>>> mesh = sharding.make_mesh(devices=jax.local_devices()[:1])
>>> mesh.axis_names
('data',)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
"""Name of the mesh axis that batches are split over."""

__all__ = ["DATA_AXIS", "batch_sharding", "constrain_batch", "make_mesh", "put_global_batch",
           "replicate", "replicated"]


def make_mesh(*, devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh with axis :data:`DATA_AXIS` over `devices`.

    Args:
      devices: the devices, kept in the given order; default: every device of every host,
        ordered by ``jax.make_mesh`` (which may follow the physical topology).

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(len(devices),)`` whose axis type is ``Auto``
      (XLA chooses the layout of intermediate values).
    """
    axis_types = (jax.sharding.AxisType.Auto,)
    if devices is None:
        return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=axis_types)
    return Mesh(np.asarray(list(devices)), (DATA_AXIS,), axis_types=axis_types)


def replicated(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P())``: a full copy of the array on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, *, axis: str = DATA_AXIS) -> NamedSharding:
    """``NamedSharding(mesh, P(axis))``: the leading (batch) axis split over mesh axis `axis`.

    Raises:
      ValueError: `mesh` has no axis named `axis`.
    """
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh has axes {mesh.axis_names}; no batch axis {axis!r}")
    return NamedSharding(mesh, PartitionSpec(axis))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every array of the pytree `tree` on all devices of `mesh` (identical copies)."""
    return jax.device_put(tree, replicated(mesh))


def put_global_batch(arrays: Any, mesh: Mesh) -> Any:
    """Place host arrays (this process's rows) on `mesh`, split along axis 0.

    Single process: `arrays` is the whole global batch. Multi-process: each process passes
    its own contiguous slice of rows and the result is the concatenated global array.
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(arrays, sharding)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), arrays)


def constrain_batch(tree: Any, mesh: Mesh) -> Any:
    """Inside ``jit``: ask XLA to split `tree`'s arrays along their leading axis over `mesh`."""
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh))
